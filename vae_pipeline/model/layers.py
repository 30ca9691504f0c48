"""Transformer building blocks shared by the DINOv2 backbone, the aggregator and the camera trunk.

docs/model.md, section 4.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

# Rotates q or k [..., N, head_dim] by the positions of its N tokens (see rope.py).
Rotation = Callable[[torch.Tensor], torch.Tensor]


class Mlp(nn.Module):
    """Two linear layers with an exact (erf) GELU between them: ``[..., in] -> [..., out]``."""

    def __init__(self, in_features: int, hidden_features: int, out_features: int | None = None) -> None:
        super().__init__()
        self.fc1 = nn.Linear(in_features, hidden_features)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden_features, out_features or in_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel learned scale of a residual branch (``gamma``, ``[dim]``)."""

    def __init__(self, dim: int, init_value: float) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.full((dim,), init_value))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection, optional q/k LayerNorm and optional 2D RoPE.

    The ``qkv`` output is laid out (q|k|v, head, channel). q, k and v reach ``scaled_dot_product_attention`` as
    contiguous ``[B, heads, N, head_dim]`` tensors of one dtype (v's), so fused attention kernels apply under
    autocast, where the q/k LayerNorm would otherwise hand over float32 q/k beside a bf16 v.
    """

    def __init__(self, dim: int, num_heads: int, qk_norm: bool = False, norm_eps: float = 1e-5) -> None:
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"attention width {dim} is not divisible by {num_heads} heads")
        self.num_heads = num_heads
        self.head_dim = dim // num_heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.q_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.k_norm = nn.LayerNorm(self.head_dim, eps=norm_eps) if qk_norm else nn.Identity()
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, rope: Rotation | None = None) -> torch.Tensor:
        """``x`` ``[B, N, dim]``; ``rope`` rotates q and k after their LayerNorm (None: no rotation)."""
        batch, tokens, dim = x.shape
        qkv = self.qkv(x).view(batch, tokens, 3, self.num_heads, self.head_dim).permute(2, 0, 3, 1, 4)
        q, k, v = qkv.unbind(0)  # each [B, heads, N, head_dim]
        q, k = self.q_norm(q), self.k_norm(k)
        if rope is not None:
            q, k = rope(q), rope(k)
        q, k, v = (t.to(v.dtype).contiguous() for t in (q, k, v))
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, dim))


class Block(nn.Module):
    """Pre-norm transformer block with LayerScale on both residual branches: ``[B, N, dim] -> [B, N, dim]``.

    Args:
        dim: token width.
        num_heads: attention heads (``dim / num_heads`` channels each).
        mlp_ratio: MLP hidden width relative to ``dim``.
        qk_norm: LayerNorm over each head's q and k channels (aggregator blocks).
        norm_eps: eps of every LayerNorm of the block (DINOv2 uses 1e-6, VGGT's own blocks 1e-5).
        init_value: initial LayerScale value (the loaded checkpoint overrides it).
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qk_norm: bool = False,
        norm_eps: float = 1e-5,
        init_value: float = 0.01,
    ) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = Attention(dim, num_heads, qk_norm=qk_norm, norm_eps=norm_eps)
        self.ls1 = LayerScale(dim, init_value)
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))
        self.ls2 = LayerScale(dim, init_value)

    def forward(self, x: torch.Tensor, rope: Rotation | None = None) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x), rope))
        return x + self.ls2(self.mlp(self.norm2(x)))
