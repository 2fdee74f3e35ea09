"""Dense views of an image tower: what the heatmap methods read, for each kind of tower zsclip loads.

A ``DenseTower`` runs the model's own image-tower modules (nothing is copied or changed) in two ways:

- ``activations(pixels)``: the last block's input as a grid [B, C, h, w] (gradients flow from here) and
  the pooled image embedding computed from it, exactly as the tower computes it (Grad-CAM reads both);
- ``patches(pixels)``: one embedding per grid cell [B, D, h, w] in the joint space, training-free: the
  pooling layer's (attention pool, MAP head) or the last block's value path per position, then the
  tower's final norm and projection (MaskCLIP for attention-pooled towers, ClearCLIP's "no q-k attention,
  no residual, no MLP" for class-token ViTs), so each cell is compared with a class column as the pooled
  embedding is.

``upscale`` runs the tower on pixels enlarged by that factor, position embeddings interpolated, so that a
coarse grid (the demo model's 2x2, ViT-B/32's 7x7) gives a finer map; ``auto_upscale`` picks the factor.
Towers: open_clip ModifiedResNet and VisionTransformer, transformers CLIP and SigLIP vision models.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import torch
import torch.nn.functional as F

from ..encoders.base import Encoder
from ..errors import InputError

#: The finest grid side ``auto_upscale`` aims for (the map is resized to the image afterwards).
TARGET_GRID = 8
MAX_UPSCALE = 4


class DenseTower(ABC):
    """One image tower seen as a grid of positions (see the module docstring)."""

    #: cells per side of the tower's final grid at its own input size
    grid: int

    @abstractmethod
    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(last block's input [B, C, h, w], pooled image embedding [B, D] computed from it)."""

    @abstractmethod
    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        """Per-position joint-space embeddings [B, D, h, w] (unnormalised)."""


def auto_upscale(tower: DenseTower) -> int:
    """The smallest factor that gives at least ``TARGET_GRID`` cells a side, at most ``MAX_UPSCALE``."""
    return max(1, min(MAX_UPSCALE, math.ceil(TARGET_GRID / max(1, tower.grid))))


def dense_tower(encoder: Encoder) -> DenseTower:
    """The dense view of ``encoder``'s image tower, or an InputError naming what is not supported."""
    model = encoder.model
    if encoder.backend == "open_clip":
        visual = getattr(model, "visual", None)
        kind = type(visual).__name__
        if kind == "ModifiedResNet":
            return _OpenClipResNet(visual)
        if kind == "VisionTransformer":
            if getattr(visual, "attn_pool", None) is not None:
                raise InputError(f"{encoder.name}: heatmaps do not support attention-pooled open_clip ViTs (CoCa); "
                                 "use a CLIP or SigLIP model")
            return _OpenClipViT(visual)
        raise InputError(f"{encoder.name}: heatmaps support open_clip ResNet and ViT image towers, not {kind} "
                         "(timm towers are not supported yet)")
    if encoder.backend == "transformers":
        vision = getattr(model, "vision_model", None)
        if vision is not None and hasattr(vision, "encoder") and hasattr(vision, "embeddings"):
            return _HFViT(model, vision)
    raise InputError(f"{encoder.name}: heatmaps support open_clip (ResNet, ViT) and transformers CLIP / SigLIP image "
                     f"towers, not {type(model).__name__}")


def _resize_positions(grid_positions: torch.Tensor, side: int, new_h: int, new_w: int) -> torch.Tensor:
    """[side*side, C] position embeddings -> [new_h*new_w, C], bicubic (as open_clip and timm resize them)."""
    if side == new_h == new_w:
        return grid_positions
    channels = grid_positions.shape[-1]
    grid = grid_positions.T.reshape(1, channels, side, side)
    grid = F.interpolate(grid.float(), size=(new_h, new_w), mode="bicubic", align_corners=False)
    return grid.reshape(channels, new_h * new_w).T.to(grid_positions.dtype)


def _value_path(x: torch.Tensor, attention: torch.nn.MultiheadAttention) -> torch.Tensor:
    """``attention``'s output for each position attending only to itself: out_proj(v_proj(x))."""
    width = attention.embed_dim
    if attention.in_proj_weight is not None:
        weight, bias = attention.in_proj_weight[2 * width:], attention.in_proj_bias
        bias = None if bias is None else bias[2 * width:]
    else:
        weight, bias = attention.v_proj_weight, None if attention.in_proj_bias is None \
            else attention.in_proj_bias[2 * width:]
    return attention.out_proj(F.linear(x, weight, bias))


class _OpenClipResNet(DenseTower):
    """open_clip's ModifiedResNet: grid = layer4's feature map; pooled by AttentionPool2d."""

    def __init__(self, visual) -> None:
        self.visual = visual
        self.grid = int(round((visual.attnpool.positional_embedding.shape[0] - 1) ** 0.5))

    def _features(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x = visual.stem(pixels.to(visual.conv1.weight.dtype))
        return visual.layer4(visual.layer3(visual.layer2(visual.layer1(x))))

    def _tokens(self, x: torch.Tensor) -> torch.Tensor:
        """Feature map -> (HW+1, B, C) tokens with (interpolated) positions, as AttentionPool2d makes them."""
        pool = self.visual.attnpool
        _, _, h, w = x.shape
        tokens = x.flatten(2).permute(2, 0, 1)
        tokens = torch.cat([tokens.mean(dim=0, keepdim=True), tokens], dim=0)
        positions = pool.positional_embedding
        positions = torch.cat([positions[:1], _resize_positions(positions[1:], self.grid, h, w)])
        return tokens + positions[:, None, :].to(tokens.dtype)

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        pool = self.visual.attnpool
        x = self._features(pixels)
        tokens = self._tokens(x)
        pooled, _ = F.multi_head_attention_forward(
            query=tokens[:1], key=tokens, value=tokens, embed_dim_to_check=tokens.shape[-1],
            num_heads=pool.num_heads, q_proj_weight=pool.q_proj.weight, k_proj_weight=pool.k_proj.weight,
            v_proj_weight=pool.v_proj.weight, in_proj_weight=None,
            in_proj_bias=torch.cat([pool.q_proj.bias, pool.k_proj.bias, pool.v_proj.bias]), bias_k=None, bias_v=None,
            add_zero_attn=False, dropout_p=0.0, out_proj_weight=pool.c_proj.weight, out_proj_bias=pool.c_proj.bias,
            use_separate_proj_weight=True, training=False, need_weights=False)
        return x, pooled[0]

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        pool = self.visual.attnpool
        x = self._features(pixels)
        b, _, h, w = x.shape
        values = pool.c_proj(pool.v_proj(self._tokens(x)[1:]))  # (HW, B, D)
        return values.permute(1, 2, 0).reshape(b, -1, h, w)


class _OpenClipViT(DenseTower):
    """open_clip's VisionTransformer (class token first, ``ln_post`` then ``proj``)."""

    def __init__(self, visual) -> None:
        self.visual = visual
        self.grid = int(visual.grid_size[0])

    def _before_last(self, pixels: torch.Tensor) -> tuple[torch.Tensor, int, int]:
        """Tokens entering the last block (N, L, C), and the grid's height and width."""
        visual = self.visual
        x = visual.conv1(pixels.to(visual.conv1.weight.dtype))
        _, width, h, w = x.shape
        x = x.reshape(x.shape[0], width, h * w).permute(0, 2, 1)
        cls = visual.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1)
        positions = visual.positional_embedding
        positions = torch.cat([positions[:1], _resize_positions(positions[1:], self.grid, h, w)])
        x = visual.ln_pre(visual.patch_dropout(x + positions.to(x.dtype)))
        for block in visual.transformer.resblocks[:-1]:
            x = self._run(block, x)
        return x, h, w

    def _run(self, block, x: torch.Tensor) -> torch.Tensor:
        if getattr(self.visual.transformer, "batch_first", True):
            return block(x)
        return block(x.transpose(0, 1)).transpose(0, 1)

    def _grid(self, tokens: torch.Tensor, h: int, w: int) -> torch.Tensor:
        return tokens[:, 1:].permute(0, 2, 1).reshape(tokens.shape[0], -1, h, w)

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        visual = self.visual
        x, h, w = self._before_last(pixels)
        grid = self._grid(x, h, w)
        # the grid is a view the gradient reaches: rebuild the tokens from it so d(embedding)/d(grid) is exact
        tokens = torch.cat([x[:, :1], grid.flatten(2).permute(0, 2, 1)], dim=1)
        y = self._run(visual.transformer.resblocks[-1], tokens)
        pooled, _ = visual._pool(y)
        return grid, pooled @ visual.proj if visual.proj is not None else pooled

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        visual = self.visual
        x, h, w = self._before_last(pixels)
        last = visual.transformer.resblocks[-1]
        out = last.ls_1(_value_path(last.ln_1(x), last.attn))
        out = visual.ln_post(out)
        if visual.proj is not None:
            out = out @ visual.proj
        return self._grid(out, h, w)


class _HFViT(DenseTower):
    """transformers CLIP (class token, ``post_layernorm`` + ``visual_projection``) and SigLIP (no class
    token, MAP head ``head``) vision models."""

    def __init__(self, model, vision) -> None:
        self.model, self.vision = model, vision
        config = vision.config
        self.grid = int(config.image_size // config.patch_size)
        self.projection = getattr(model, "visual_projection", None)
        self.head = getattr(vision, "head", None) if getattr(vision, "use_head", True) else None
        self.has_class_token = hasattr(vision.embeddings, "class_embedding")

    def _run(self, pixels: torch.Tensor):
        pixels = pixels.to(getattr(self.model, "dtype", pixels.dtype))
        return self.vision(pixel_values=pixels, interpolate_pos_encoding=True, output_hidden_states=True)

    def _grid(self, tokens: torch.Tensor, pixels: torch.Tensor) -> torch.Tensor:
        tokens = tokens[:, 1:] if self.has_class_token else tokens
        patch = self.vision.config.patch_size
        h, w = pixels.shape[-2] // patch, pixels.shape[-1] // patch
        return tokens.permute(0, 2, 1).reshape(tokens.shape[0], -1, h, w)

    def activations(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        vision = self.vision
        entering = self._run(pixels).hidden_states[-2]
        grid = self._grid(entering, pixels)
        tokens = grid.flatten(2).permute(0, 2, 1)
        if self.has_class_token:
            tokens = torch.cat([entering[:, :1], tokens], dim=1)
        last = vision.encoder.layers[-1]
        y = _hf_layer(last, tokens)
        y = vision.post_layernorm(y)
        pooled = self.head(y) if self.head is not None else y[:, 0]
        return grid, self.projection(pooled) if self.projection is not None else pooled

    def patches(self, pixels: torch.Tensor) -> torch.Tensor:
        vision = self.vision
        outputs = self._run(pixels)
        if self.head is not None:  # SigLIP: the MAP head's value path per position, then its MLP
            tokens = outputs.last_hidden_state
            out = _value_path(tokens, self.head.attention)
            out = out + self.head.mlp(self.head.layernorm(out))
        else:  # CLIP: the last layer's value path, then the final norm and projection
            last = vision.encoder.layers[-1]
            entering = outputs.hidden_states[-2]
            attention = last.self_attn
            out = attention.out_proj(attention.v_proj(last.layer_norm1(entering)))
            out = vision.post_layernorm(out)
        if self.projection is not None:
            out = self.projection(out)
        return self._grid(out, pixels)


def _hf_layer(layer, tokens: torch.Tensor) -> torch.Tensor:
    """One transformers encoder layer on ``tokens`` (no mask), whatever tuple form it returns."""
    out = layer(tokens, None) if _takes_mask(layer) else layer(tokens)
    return out[0] if isinstance(out, tuple) else out


def _takes_mask(layer) -> bool:
    import inspect

    return "attention_mask" in inspect.signature(layer.forward).parameters


__all__ = ["DenseTower", "dense_tower", "auto_upscale", "TARGET_GRID"]
