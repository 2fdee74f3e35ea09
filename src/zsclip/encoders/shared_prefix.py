"""Shared-prefix text encoding for causal towers: compute a template's common prefix once.

In a causal transformer a position's hidden state depends only on the tokens before it, so
prompts that start with the same tokens ("<sot> a photo of a" for every class) have identical
hidden states there. We run the shared prefix once, keep its per-layer keys and values, and run
each prompt's remaining tokens against them: the same vectors as the full forward, computed
over the class-name tokens only. The plain pre-LN block of open_clip is re-expressed here with
its own weights; ``block_blocker`` checks that a block is exactly that block before we do.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F


def block_blocker(blocks: Sequence[torch.nn.Module]) -> str | None:
    """Why these transformer blocks cannot be run with a key/value prefix, or None if they can."""
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
    """Number of leading positions identical in every row, leaving each row at least one own token."""
    same = (ids == ids[:1]).all(dim=0)
    differing = torch.nonzero(~same)
    first_difference = int(differing[0]) if len(differing) else ids.shape[1]
    return max(0, min(first_difference, int(lengths.min()) - 1))


def run_blocks_with_prefix(blocks: Sequence[torch.nn.Module], prefix: torch.Tensor, rest: torch.Tensor) -> torch.Tensor:
    """Hidden states of ``rest`` [B, S, W] after all blocks, attending to a shared ``prefix`` [1, P, W].

    Equals running the blocks on ``cat(prefix, rest)`` under a causal mask and keeping the last S
    positions.
    """
    p, s = prefix.shape[1], rest.shape[1]
    prefix_mask = torch.full((p, p), float("-inf"), device=prefix.device, dtype=prefix.dtype).triu_(1)
    rest_mask = torch.cat([torch.zeros(s, p, device=rest.device, dtype=rest.dtype),
                           torch.full((s, s), float("-inf"), device=rest.device, dtype=rest.dtype).triu_(1)], dim=1)
    for block in blocks:
        prefix, keys, values = _block(block, prefix, None, None, prefix_mask)
        rest, _, _ = _block(block, rest, keys, values, rest_mask)
    return rest


def _block(block, x, past_keys, past_values, mask):
    """One open_clip ResidualAttentionBlock (pre-LN attention + MLP) with optional past keys/values."""
    attn = block.attn
    heads, width = attn.num_heads, attn.embed_dim
    batch, length = x.shape[0], x.shape[1]
    q, k, v = F.linear(block.ln_1(x), attn.in_proj_weight, attn.in_proj_bias).chunk(3, dim=-1)
    q, k, v = (t.reshape(batch, length, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    own_keys, own_values = k, v
    if past_keys is not None:
        k = torch.cat([past_keys.expand(batch, -1, -1, -1), k], dim=2)
        v = torch.cat([past_values.expand(batch, -1, -1, -1), v], dim=2)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask.to(q.dtype))
    out = F.linear(out.transpose(1, 2).reshape(batch, length, width), attn.out_proj.weight, attn.out_proj.bias)
    x = x + block.ls_1(out)
    x = x + block.ls_2(block.mlp(block.ln_2(x)))
    return x, own_keys, own_values
