"""Transformer building blocks of the HRM (docs/reference-semantics.md §5).

Every op here mirrors the official implementation's numerics so that identical
weights give identical outputs:

- weights are kept in float32 and cast to the activation dtype at use
  (``CastedLinear``, ``CastedEmbedding``), so a bfloat16 forward runs with
  float32 master weights;
- RMS norm has no weight and is computed in float32;
- RoPE uses the "rotate half" layout (frequencies repeated, not interleaved),
  with cos/sin tables precomputed in float32; q and k are rotated in float32;
- attention is non-causal and bias-free, with one packed projection holding the
  q heads, then the k heads, then the v heads;
- SwiGLU's hidden width is round(expansion * hidden * 2/3) rounded up to a
  multiple of 256, with gate and up packed in one projection (gate first).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

CosSin = tuple[torch.Tensor, torch.Tensor]


def find_multiple(n: int, k: int) -> int:
    """Smallest multiple of ``k`` that is >= ``n``."""
    return -(-n // k) * k


def swiglu_width(hidden_size: int, expansion: float) -> int:
    return find_multiple(round(expansion * hidden_size * 2 / 3), 256)


@torch.no_grad()
def trunc_normal_init_(
    tensor: torch.Tensor,
    std: float = 1.0,
    lower: float = -2.0,
    upper: float = 2.0,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """Fill ``tensor`` with a normal truncated to [lower, upper] standard deviations.

    Like JAX's (and Flax's) truncated normal: the scale is corrected so that the
    *truncated* distribution has standard deviation ``std`` (torch's own
    ``trunc_normal_`` does not do this). Sampling is by inverse CDF: a uniform
    draw between the CDF values of the bounds, mapped through erfinv.
    ``std == 0`` gives zeros.
    """
    if std == 0:
        return tensor.zero_()
    # Variance of a standard normal truncated to [lower, upper].
    phi_lo = math.exp(-0.5 * lower**2) / math.sqrt(2 * math.pi)
    phi_hi = math.exp(-0.5 * upper**2) / math.sqrt(2 * math.pi)
    erf_lo, erf_hi = math.erf(lower / math.sqrt(2)), math.erf(upper / math.sqrt(2))
    mass = (erf_hi - erf_lo) / 2
    variance = 1 + (lower * phi_lo - upper * phi_hi) / mass - ((phi_lo - phi_hi) / mass) ** 2
    scale = std / math.sqrt(variance)

    tensor.uniform_(erf_lo, erf_hi, generator=generator)
    tensor.erfinv_().mul_(math.sqrt(2) * scale)
    return tensor.clamp_(lower * scale, upper * scale)


def rms_norm(x: torch.Tensor, eps: float) -> torch.Tensor:
    """Weightless RMS norm over the last dim, computed in float32, returned in x's dtype."""
    dtype = x.dtype
    x32 = x.to(torch.float32)
    x32 = x32 * torch.rsqrt(x32.square().mean(-1, keepdim=True) + eps)
    return x32.to(dtype)


class CastedLinear(nn.Module):
    """Linear layer with float32 weights used in the input's dtype.

    Weight init: truncated LeCun normal (std 1/sqrt(in_features)); bias zeros.
    """

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.weight = nn.Parameter(trunc_normal_init_(torch.empty(out_features, in_features), std=in_features**-0.5))
        self.bias = nn.Parameter(torch.zeros(out_features)) if bias else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"


class CastedEmbedding(nn.Module):
    """Embedding table in float32, looked up in ``cast_to``; truncated normal init with ``init_std``."""

    def __init__(self, num_embeddings: int, embedding_dim: int, init_std: float, cast_to: torch.dtype):
        super().__init__()
        self.cast_to = cast_to
        self.embedding_weight = nn.Parameter(trunc_normal_init_(torch.empty(num_embeddings, embedding_dim), std=init_std))

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return F.embedding(ids, self.embedding_weight.to(self.cast_to))


class RotaryEmbedding(nn.Module):
    """cos/sin tables [max_positions, dim] for rotary position embeddings (float32, not saved)."""

    def __init__(self, dim: int, max_position_embeddings: int, base: float):
        super().__init__()
        inv_freq = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
        angles = torch.outer(torch.arange(max_position_embeddings, dtype=torch.float32), inv_freq)
        # "rotate half" layout: the same frequencies for the first and second half of the head dim.
        angles = torch.cat((angles, angles), dim=-1)
        self.register_buffer("cos_cached", angles.cos(), persistent=False)
        self.register_buffer("sin_cached", angles.sin(), persistent=False)

    def forward(self) -> CosSin:
        return self.cos_cached, self.sin_cached


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the two halves of the last dim."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary_pos_emb(q: torch.Tensor, k: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotate q, k [batch, seq, heads, head_dim] by cos, sin [seq, head_dim], in the tables' dtype."""
    dtype = q.dtype
    cos, sin = cos.unsqueeze(-2), sin.unsqueeze(-2)
    q, k = q.to(cos.dtype), k.to(cos.dtype)
    q_rot = q * cos + rotate_half(q) * sin
    k_rot = k * cos + rotate_half(k) * sin
    return q_rot.to(dtype), k_rot.to(dtype)


class Attention(nn.Module):
    """Bias-free multi-head self-attention with a packed qkv projection (q heads, k heads, v heads)."""

    def __init__(self, hidden_size: int, head_dim: int, num_heads: int, num_key_value_heads: int | None = None, causal: bool = False):
        super().__init__()
        self.hidden_size = hidden_size
        self.head_dim = head_dim
        self.num_heads = num_heads
        self.num_key_value_heads = num_key_value_heads or num_heads
        self.causal = causal
        self.output_size = head_dim * num_heads
        self.qkv_proj = CastedLinear(hidden_size, (self.num_heads + 2 * self.num_key_value_heads) * head_dim, bias=False)
        self.o_proj = CastedLinear(self.output_size, hidden_size, bias=False)

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        batch, seq, _ = hidden_states.shape
        qkv = self.qkv_proj(hidden_states).view(batch, seq, self.num_heads + 2 * self.num_key_value_heads, self.head_dim)
        q, k, v = qkv.split([self.num_heads, self.num_key_value_heads, self.num_key_value_heads], dim=2)
        if cos_sin is not None:
            q, k = apply_rotary_pos_emb(q, k, *cos_sin)
        # SDPA wants [batch, heads, seq, head_dim]; default scale 1/sqrt(head_dim).
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.transpose(1, 2),
            is_causal=self.causal,
            enable_gqa=self.num_key_value_heads != self.num_heads,
        )
        return self.o_proj(out.transpose(1, 2).reshape(batch, seq, self.output_size))


class SwiGLU(nn.Module):
    """down(silu(gate(x)) * up(x)), with gate and up packed in ``gate_up_proj`` (gate first)."""

    def __init__(self, hidden_size: int, expansion: float):
        super().__init__()
        inter = swiglu_width(hidden_size, expansion)
        self.gate_up_proj = CastedLinear(hidden_size, 2 * inter, bias=False)
        self.down_proj = CastedLinear(inter, hidden_size, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate, up = self.gate_up_proj(x).chunk(2, dim=-1)
        return self.down_proj(F.silu(gate) * up)


class PostNormBlock(nn.Module):
    """x = rms_norm(x + attn(x)); x = rms_norm(x + mlp(x)). Module names ``self_attn`` and ``mlp``."""

    def __init__(self, hidden_size: int, num_heads: int, expansion: float, rms_norm_eps: float):
        super().__init__()
        self.self_attn = Attention(hidden_size, hidden_size // num_heads, num_heads, num_heads, causal=False)
        self.mlp = SwiGLU(hidden_size, expansion)
        self.norm_eps = rms_norm_eps

    def forward(self, cos_sin: CosSin | None, hidden_states: torch.Tensor) -> torch.Tensor:
        hidden_states = rms_norm(hidden_states + self.self_attn(cos_sin, hidden_states), self.norm_eps)
        return rms_norm(hidden_states + self.mlp(hidden_states), self.norm_eps)
