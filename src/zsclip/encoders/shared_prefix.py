"""Shared-prefix text encoding for causal towers: each template's common prefix runs once.

In a causal transformer a position's hidden state depends only on the tokens before it, so the
prompts of one template ("<sot> a photo of a" + class name) have identical hidden states over
their shared prefix. ``PrefixCache`` runs every group's prefix once and keeps its keys and values
in every layer; ``encode_suffixes`` then runs only each prompt's own tokens (class name and
template tail) attending to its group's cached prefix. Batches are formed by suffix length, so
prompts of different templates share a batch with no padding. The result is the full forward's
vector. The plain pre-LN block (open_clip's ResidualAttentionBlock, transformers' CLIPEncoderLayer)
is re-expressed here with the model's own weights, through ``TowerParts``; ``block_blocker`` and
``hf_block_blocker`` check that every block is exactly that block before this is used.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class LayerParts:
    """One pre-LN transformer block as weights and callables: x + attn(ln1(x)), then ``finish``."""

    ln_1: Callable[[torch.Tensor], torch.Tensor]
    qkv_weight: torch.Tensor  # [3W, W]: queries, keys, values
    qkv_bias: torch.Tensor | None
    heads: int
    out_proj: torch.nn.Linear
    scale_attention: Callable[[torch.Tensor], torch.Tensor]  # layer scale on the attention branch
    finish: Callable[[torch.Tensor], torch.Tensor]  # x -> x + mlp branch


@dataclass(frozen=True)
class TowerParts:
    """A causal text tower, backend-neutral: embedding, blocks, final norm and projection."""

    embed: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (ids, positions) -> [B, L, W]
    layers: list[LayerParts]
    final_norm: Callable[[torch.Tensor], torch.Tensor]
    project: Callable[[torch.Tensor], torch.Tensor]


def open_clip_parts(tower) -> TowerParts:
    """The parts of an open_clip text tower (openclip._text_tower's view of a CLIP model or its TextTransformer)."""
    cast_dtype = tower.transformer.get_cast_dtype()

    def embed(ids, positions):
        return tower.token_embedding(ids).to(cast_dtype) + tower.positional_embedding[positions].to(cast_dtype)

    def layer(block) -> LayerParts:
        return LayerParts(block.ln_1, block.attn.in_proj_weight, block.attn.in_proj_bias, block.attn.num_heads,
                          block.attn.out_proj, block.ls_1, lambda x: x + block.ls_2(block.mlp(block.ln_2(x))))

    return TowerParts(embed, [layer(b) for b in tower.transformer.resblocks], tower.ln_final, tower.project)


def hf_clip_parts(model) -> TowerParts:
    """The parts of a transformers CLIPModel's text tower (q/k/v weights joined once, here)."""
    text = model.text_model
    embeddings = text.embeddings

    def embed(ids, positions):
        return embeddings.token_embedding(ids) + embeddings.position_embedding(positions)

    def layer(block) -> LayerParts:
        attn = block.self_attn
        weight = torch.cat([attn.q_proj.weight, attn.k_proj.weight, attn.v_proj.weight]).detach()
        bias = torch.cat([attn.q_proj.bias, attn.k_proj.bias, attn.v_proj.bias]).detach()
        return LayerParts(block.layer_norm1, weight, bias, attn.num_heads, attn.out_proj, _identity,
                          lambda x: x + block.mlp(block.layer_norm2(x)))

    return TowerParts(embed, [layer(b) for b in text.encoder.layers], text.final_layer_norm, model.text_projection)


def _identity(x: torch.Tensor) -> torch.Tensor:
    return x


def block_blocker(blocks: Sequence[torch.nn.Module]) -> str | None:
    """Why these transformer blocks cannot be run against cached keys/values, or None if they can."""
    from open_clip.transformer import ResidualAttentionBlock

    for block in blocks:
        if type(block) is not ResidualAttentionBlock:
            return f"block type {type(block).__name__} is not open_clip's ResidualAttentionBlock"
        attn = block.attn
        if not isinstance(attn, torch.nn.MultiheadAttention) or not attn.batch_first:
            return "attention is not a batch-first nn.MultiheadAttention"
        if not attn._qkv_same_embed_dim or attn.bias_k is not None or attn.add_zero_attn or hasattr(block, "ln_1_kv"):
            return "attention has separate key/value projections, key/value biases or cross-attention"
    return None


def hf_block_blocker(model) -> str | None:
    """Why a transformers model's text tower cannot use shared prefixes, or None if it can."""
    from transformers.models.clip import modeling_clip

    if type(model) is not modeling_clip.CLIPModel:
        return f"{type(model).__name__} is not transformers' CLIPModel"
    for block in model.text_model.encoder.layers:
        plain = type(block) is modeling_clip.CLIPEncoderLayer and type(block.self_attn) is modeling_clip.CLIPAttention
        if not plain:
            return f"text block {type(block).__name__} is not transformers' CLIPEncoderLayer"
        if abs(block.self_attn.scale - block.self_attn.head_dim ** -0.5) > 1e-12:
            return "attention scale is not 1/sqrt(head_dim)"
    return None


def common_prefix_length(ids: torch.Tensor, lengths: torch.Tensor) -> int:
    """Leading positions identical in every row, leaving each row at least its last needed token."""
    same = (ids == ids[:1]).all(dim=0)
    differing = torch.nonzero(~same)
    first_difference = int(differing[0]) if len(differing) else ids.shape[1]
    return max(0, min(first_difference, int(lengths.min()) - 1))


@dataclass
class PrefixCache:
    """Per group: its prefix length and, per layer, the prefix's keys and values [G, H, P, hd]."""

    lengths: torch.Tensor  # [G] long, prefix length of each group
    keys: list[torch.Tensor]
    values: list[torch.Tensor]

    @classmethod
    def build(cls, tower: TowerParts, ids: torch.Tensor, lengths: torch.Tensor, groups: torch.Tensor) -> PrefixCache:
        """Find each group's common prefix in ``ids`` and run all prefixes once, batched."""
        group_ids = torch.unique(groups)
        prefix_lengths = torch.zeros(int(group_ids.max()) + 1, dtype=torch.long)
        representatives = []
        for group in group_ids.tolist():
            rows = torch.nonzero(groups == group).flatten()
            prefix_lengths[group] = common_prefix_length(ids[rows], lengths[rows])
            representatives.append(int(rows[0]))
        longest = max(1, int(prefix_lengths.max()))
        prefix_ids = torch.zeros(len(prefix_lengths), longest, dtype=ids.dtype, device=ids.device)
        prefix_ids[group_ids] = ids[representatives, :longest]
        x = tower.embed(prefix_ids, torch.arange(longest, device=ids.device).expand(len(prefix_ids), -1))
        causal = torch.full((longest, longest), float("-inf"), device=x.device).triu_(1)
        keys, values = [], []
        for layer in tower.layers:
            x, k, v = _block(layer, x, None, None, causal)
            keys.append(k)
            values.append(v)
        return cls(prefix_lengths.to(ids.device), keys, values)


def encode_suffixes(tower: TowerParts, ids: torch.Tensor, pooled: torch.Tensor, groups: torch.Tensor,
                    cache: PrefixCache) -> torch.Tensor:
    """Pooled, projected text features for rows ``ids`` (full token rows) of groups ``groups``.

    ``pooled`` is each row's end-of-text index. Row r runs positions p_r .. pooled_r, where p_r
    is its group's prefix length, against the cached prefix keys and values.
    """
    starts = cache.lengths[groups]  # [B]
    suffix = int((pooled + 1 - starts).max())
    positions = (starts.unsqueeze(1) + torch.arange(suffix, device=ids.device)).clamp_(max=ids.shape[1] - 1)
    x = tower.embed(ids.gather(1, positions), positions)
    longest = cache.keys[0].shape[2]
    prefix_visible = torch.arange(longest, device=ids.device).unsqueeze(0) < starts.unsqueeze(1)  # [B, P]
    causal = torch.ones(suffix, suffix, dtype=torch.bool, device=ids.device).tril_()
    mask = torch.cat([prefix_visible[:, None, None, :].expand(-1, 1, suffix, -1),
                      causal.expand(len(ids), 1, -1, -1)], dim=-1)  # [B, 1, S, P + S], True = attend
    last = len(tower.layers) - 1
    pooled_rows = pooled - starts
    for index, layer in enumerate(tower.layers):
        # the last layer's output is read at one position per row: compute only that query
        rows = pooled_rows if index == last else None
        x, _, _ = _block(layer, x, cache.keys[index][groups], cache.values[index][groups], mask, rows)
    return tower.project(tower.final_norm(x[:, 0]))  # per-token norm: pooling first gives the same vector


def _block(layer: LayerParts, x, past_keys, past_values, mask, rows=None):
    """One pre-LN block (attention + MLP), optionally attending to
    ``past_keys``/``past_values`` [B, H, P, hd] before its own positions. Returns its own k, v.

    ``rows`` [B]: compute the output at only that position of each row (keys and values still
    come from every position); the result then has one position per row.
    """
    heads, width = layer.heads, layer.qkv_weight.shape[1]
    batch, length = x.shape[0], x.shape[1]
    normed = layer.ln_1(x)
    weight, bias = layer.qkv_weight, layer.qkv_bias
    if rows is None:
        q, k, v = F.linear(normed, weight, bias).chunk(3, dim=-1)
    else:
        take = torch.arange(batch, device=x.device)
        x, normed_rows = x[take, rows].unsqueeze(1), normed[take, rows].unsqueeze(1)
        mask = mask[take, :, rows].unsqueeze(2)
        q = F.linear(normed_rows, weight[:width], None if bias is None else bias[:width])
        k, v = F.linear(normed, weight[width:], None if bias is None else bias[width:]).chunk(2, dim=-1)
    q = q.reshape(batch, -1, heads, width // heads).transpose(1, 2)
    k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (k, v))
    own_keys, own_values = k, v
    if past_keys is not None:
        k = torch.cat([past_keys.to(k.dtype), k], dim=2)
        v = torch.cat([past_values.to(v.dtype), v], dim=2)
    if mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = layer.out_proj(out.transpose(1, 2).reshape(batch, -1, width))
    x = x + layer.scale_attention(out)
    return layer.finish(x), own_keys, own_values
