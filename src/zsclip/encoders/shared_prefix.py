"""Shared-prefix text encoding for causal towers: each template's common prefix runs once.

In a causal transformer a position's hidden state depends only on the tokens before it, so the
prompts of one template ("<sot> a photo of a" + class name) have identical hidden states over
their shared prefix. ``PrefixCache`` runs every group's prefix once and keeps its keys and values
in every layer; ``encode_suffixes`` then runs only each prompt's own tokens (class name and
template tail) attending to its group's cached prefix. Batches are formed by suffix length, so
prompts of different templates share a batch with no padding. The result is the full forward's
vector. The plain pre-LN block of open_clip is re-expressed here with its own weights;
``block_blocker`` checks that every block is exactly that block before this is used.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F


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
    def build(cls, tower, ids: torch.Tensor, lengths: torch.Tensor, groups: torch.Tensor) -> PrefixCache:
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
        x = _embed(tower, prefix_ids, torch.arange(longest, device=ids.device).expand(len(prefix_ids), -1))
        causal = torch.full((longest, longest), float("-inf"), device=x.device).triu_(1)
        keys, values = [], []
        for block in tower.transformer.resblocks:
            x, k, v = _block(block, x, None, None, causal)
            keys.append(k)
            values.append(v)
        return cls(prefix_lengths.to(ids.device), keys, values)


def encode_suffixes(tower, ids: torch.Tensor, pooled: torch.Tensor, groups: torch.Tensor,
                    cache: PrefixCache) -> torch.Tensor:
    """Pooled, projected text features for rows ``ids`` (full token rows) of groups ``groups``.

    ``pooled`` is each row's end-of-text index. Row r runs positions p_r .. pooled_r, where p_r
    is its group's prefix length, against the cached prefix keys and values.
    """
    starts = cache.lengths[groups]  # [B]
    suffix = int((pooled + 1 - starts).max())
    positions = (starts.unsqueeze(1) + torch.arange(suffix, device=ids.device)).clamp_(max=ids.shape[1] - 1)
    x = _embed(tower, ids.gather(1, positions), positions)
    longest = cache.keys[0].shape[2]
    prefix_visible = torch.arange(longest, device=ids.device).unsqueeze(0) < starts.unsqueeze(1)  # [B, P]
    causal = torch.ones(suffix, suffix, dtype=torch.bool, device=ids.device).tril_()
    mask = torch.cat([prefix_visible[:, None, None, :].expand(-1, 1, suffix, -1),
                      causal.expand(len(ids), 1, -1, -1)], dim=-1)  # [B, 1, S, P + S], True = attend
    blocks = tower.transformer.resblocks
    last = len(blocks) - 1
    pooled_rows = pooled - starts
    for layer, block in enumerate(blocks):
        # the last layer's output is read at one position per row: compute only that query
        rows = pooled_rows if layer == last else None
        x, _, _ = _block(block, x, cache.keys[layer][groups], cache.values[layer][groups], mask, rows)
    x = tower.ln_final(x[:, 0])  # per-token norm: pooling first gives the same vector
    projection = tower.text_projection
    if projection is None:
        return x
    return projection(x) if isinstance(projection, torch.nn.Linear) else x @ projection


def _embed(tower, ids: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
    cast_dtype = tower.transformer.get_cast_dtype()
    return tower.token_embedding(ids).to(cast_dtype) + tower.positional_embedding[positions].to(cast_dtype)


def _block(block, x, past_keys, past_values, mask, rows=None):
    """One open_clip ResidualAttentionBlock (pre-LN attention + MLP), optionally attending to
    ``past_keys``/``past_values`` [B, H, P, hd] before its own positions. Returns its own k, v.

    ``rows`` [B]: compute the output at only that position of each row (keys and values still
    come from every position); the result then has one position per row.
    """
    attn = block.attn
    heads, width = attn.num_heads, attn.embed_dim
    batch, length = x.shape[0], x.shape[1]
    normed = block.ln_1(x)
    if rows is None:
        q, k, v = F.linear(normed, attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    else:
        take = torch.arange(batch, device=x.device)
        x, normed_rows = x[take, rows].unsqueeze(1), normed[take, rows].unsqueeze(1)
        mask = mask[take, :, rows].unsqueeze(2)
        bias = attn.in_proj_bias
        q = F.linear(normed_rows, attn.in_proj_weight[:width], None if bias is None else bias[:width])
        k, v = F.linear(normed, attn.in_proj_weight[width:], None if bias is None else bias[width:]).chunk(2, dim=-1)
    q = q.reshape(batch, -1, heads, width // heads).transpose(1, 2)
    k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (k, v))
    own_keys, own_values = k, v
    if past_keys is not None:
        k = torch.cat([past_keys.to(k.dtype), k], dim=2)
        v = torch.cat([past_values.to(v.dtype), v], dim=2)
    if mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    out = F.linear(out.transpose(1, 2).reshape(batch, -1, width), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, own_keys, own_values
