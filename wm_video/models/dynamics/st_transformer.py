"""The spatiotemporal transformer: blocks of spatial attention (within a frame), temporal attention (at each token
position across frames, causal) and an MLP, each modulated per frame by a conditioning vector (adaLN-Zero).

Frames ride along the time axis with two flags: their position (frame index, for temporal RoPE and the causal
rule) and whether they are *clean* (real context, attendable by later frames and cacheable) or a *masked copy*
(a MaskGIT target, visible to nobody but itself). One rule covers training, the masked passes of sampling and
the cached clean pass: a query frame at position ``p`` attends every clean frame at ``p - W < p' < p`` and itself
(``W = context_frames``). With a :class:`KVCache` the earlier clean frames' temporal keys and values come from the
cache instead of being recomputed; keys are stored rotated at their absolute positions, which RoPE makes
relative, so dropping the oldest frame needs no re-indexing.

Shapes: ``x`` ``(b, t, n, d)``; spatial attention sees ``(b t) n d``, temporal attention ``(b n) t d``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn
from torch.utils.checkpoint import checkpoint

from wm_video.models.dynamics.config import DynamicsConfig

Rope = tuple[torch.Tensor, torch.Tensor]  # cos, sin: (L, e/2) each


def rope_angles(positions: torch.Tensor, dim: int, base: float) -> torch.Tensor:
    """Rotary angles ``(m, dim/2)`` for ``m`` positions, in float64 so frame indices far past the training
    window keep their precision."""
    inv_freq = base ** (-torch.arange(dim // 2, dtype=torch.float64, device=positions.device) / (dim // 2))
    return positions.to(torch.float64)[:, None] * inv_freq


def rope_2d_angles(h: int, w: int, dim: int, base: float) -> torch.Tensor:
    """2-D rotary angles ``(h*w, dim/2)``: the first half of the rotated pairs turn with the row, the second
    half with the column."""
    rows, cols = torch.meshgrid(torch.arange(h), torch.arange(w), indexing="ij")
    return torch.cat([rope_angles(rows.flatten(), dim // 2, base), rope_angles(cols.flatten(), dim // 2, base)], -1)


def apply_rope(x: torch.Tensor, rope: Rope) -> torch.Tensor:
    """Rotate pairs ``(x[..., j], x[..., j + e/2])`` of ``x`` ``(..., L, e)`` by the angles behind ``rope``."""
    cos, sin = (r.to(x.dtype) for r in rope)
    x1, x2 = x.chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x1 * sin + x2 * cos], dim=-1)


def temporal_mask(q_pos: torch.Tensor, k_pos: torch.Tensor, k_clean: torch.Tensor, num_cached: int,
                  window: int) -> torch.Tensor | None:
    """Which keys each query frame sees: ``(tq, num_cached + tq)`` bool, True = attend; None when all are seen.

    Keys are the cached frames followed by the query frames themselves. A query at position ``p`` sees clean
    keys at ``p - window < p' < p`` and itself; masked copies are seen by nothing else.
    """
    qp, kp = q_pos[:, None], k_pos[None, :]
    allowed = k_clean[None, :] & (kp < qp) & (kp > qp - window)
    allowed[:, num_cached:] |= torch.eye(len(q_pos), dtype=torch.bool)
    return None if bool(allowed.all()) else allowed


class KVCache:
    """Temporal keys and values of the last clean frames, per layer: ``((b n), heads, f, e)`` each, ``f`` at most
    ``max_frames`` (``context_frames - 1``: with the frame being predicted, one full window). Appending past that
    drops the oldest frames, so a step's cost stops growing with the length of the rollout."""

    def __init__(self, max_frames: int) -> None:
        self.max_frames = max_frames
        self.keys: list[torch.Tensor] = []
        self.values: list[torch.Tensor] = []
        self.positions = torch.empty(0, dtype=torch.long)  # (f,) absolute frame index of each cached frame

    def __len__(self) -> int:
        return len(self.positions)

    def layer(self, i: int) -> tuple[torch.Tensor, torch.Tensor] | None:
        return (self.keys[i], self.values[i]) if len(self) else None

    def append(self, kv: list[tuple[torch.Tensor, torch.Tensor]], positions: torch.Tensor) -> None:
        """Add the keys and values of clean frames at ``positions`` (one ``(k, v)`` per layer), then drop the
        oldest frames beyond ``max_frames``."""
        drop = max(0, len(self) + len(positions) - self.max_frames)
        if len(self):
            self.keys = [torch.cat([old, k], dim=2)[:, :, drop:] for old, (k, _) in zip(self.keys, kv, strict=True)]
            self.values = [torch.cat([old, v], dim=2)[:, :, drop:] for old, (_, v) in zip(self.values, kv, strict=True)]
        else:
            self.keys = [k[:, :, drop:] for k, _ in kv]
            self.values = [v[:, :, drop:] for _, v in kv]
        self.positions = torch.cat([self.positions, positions.cpu()])[drop:]


class Attention(nn.Module):
    """Multi-head self-attention over ``(B, L, d)`` with optional RoPE, mask and past keys/values."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor, rope: Rope | None = None, mask: torch.Tensor | None = None,
                past: tuple[torch.Tensor, torch.Tensor] | None = None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """Returns the output ``(B, L, d)`` and this call's keys and values ``(B, heads, L, e)`` (rotated)."""
        q, k, v = rearrange(self.qkv(x), "B L (three h e) -> three B h L e", three=3, h=self.heads)
        if rope is not None:
            q, k = apply_rope(q, rope), apply_rope(k, rope)
        new = (k, v)
        if past is not None:
            k, v = torch.cat([past[0], k], dim=2), torch.cat([past[1], v], dim=2)  # (B, h, f + L, e)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B, h, L, e)
        return self.proj(rearrange(out, "B h L e -> B L (h e)")), new


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


class STBlock(nn.Module):
    """Pre-norm spatial attention -> temporal attention -> MLP; each sub-layer's norm is shifted and scaled,
    and its residual branch gated, by the frame's conditioning vector (``9 * width`` numbers per frame, from a
    zero-initialised linear map: the block starts as the identity, as in DiT)."""

    def __init__(self, c: DynamicsConfig) -> None:
        super().__init__()
        d = c.width
        self.norms = nn.ModuleList(nn.LayerNorm(d, elementwise_affine=False, eps=1e-6) for _ in range(3))
        self.spatial = Attention(d, c.heads)
        self.temporal = Attention(d, c.heads)
        self.mlp = nn.Sequential(nn.Linear(d, c.mlp_width), nn.GELU(approximate="tanh"), nn.Linear(c.mlp_width, d))
        self.modulation = nn.Linear(c.cond_dim, 9 * d)
        self.drop = nn.Dropout(c.dropout)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, spatial_rope: Rope | None, temporal_rope: Rope,
                mask: torch.Tensor | None, past: tuple[torch.Tensor, torch.Tensor] | None
                ) -> tuple[torch.Tensor, tuple[torch.Tensor, torch.Tensor]]:
        """``x`` ``(b, t, n, d)``, ``cond`` ``(b, t, c)`` already through SiLU -> ``x`` and the temporal (k, v)."""
        b = x.shape[0]
        mods = self.modulation(cond)[:, :, None].chunk(9, dim=-1)  # 9 x (b, t, 1, d)
        h = modulate(self.norms[0](x), mods[0], mods[1])
        h, _ = self.spatial(rearrange(h, "b t n d -> (b t) n d"), spatial_rope)
        x = x + mods[2] * self.drop(rearrange(h, "(b t) n d -> b t n d", b=b))
        h = modulate(self.norms[1](x), mods[3], mods[4])
        h, kv = self.temporal(rearrange(h, "b t n d -> (b n) t d"), temporal_rope, mask, past)
        x = x + mods[5] * self.drop(rearrange(h, "(b n) t d -> b t n d", b=b))
        h = modulate(self.norms[2](x), mods[6], mods[7])
        return x + mods[8] * self.drop(self.mlp(h)), kv


class STTransformer(nn.Module):
    """The block stack with spatial positions and a modulated final norm: token embeddings ``(b, t, n, d)`` and
    per-frame conditioning ``(b, t, c)`` -> hidden states ``(b, t, n, d)``."""

    def __init__(self, c: DynamicsConfig) -> None:
        super().__init__()
        self.window, self.rope_base, self.head_dim = c.context_frames, c.rope_base, c.head_dim
        self.gradient_checkpointing = c.gradient_checkpointing
        self.blocks = nn.ModuleList(STBlock(c) for _ in range(c.depth))
        self.norm_out = nn.LayerNorm(c.width, elementwise_affine=False, eps=1e-6)
        self.out_modulation = nn.Linear(c.cond_dim, 2 * c.width)
        # A per-frame action token beside the frame's tokens in spatial attention (``action_token``): each token
        # can read the action through attention, where it is (the adaLN modulation is the same everywhere).
        self.action_proj = nn.Linear(c.cond_dim, c.width) if c.action_token else None
        self.row_pos = self.col_pos = None
        if c.spatial_pos == "learned":
            self.row_pos = nn.Parameter(torch.randn(c.token_h, c.width) * 0.02)
            self.col_pos = nn.Parameter(torch.randn(c.token_w, c.width) * 0.02)
        else:
            angles = rope_2d_angles(c.token_h, c.token_w, c.head_dim, c.rope_base)
            if c.action_token:  # the action token is not rotated
                angles = torch.cat([angles, angles.new_zeros(1, angles.shape[1])])
            self.register_buffer("spatial_cos", angles.cos().float(), persistent=False)  # (n, e/2)
            self.register_buffer("spatial_sin", angles.sin().float(), persistent=False)

    def forward(self, x: torch.Tensor, cond: torch.Tensor, positions: torch.Tensor, clean: torch.Tensor,
                cache: KVCache | None = None, collect_kv: bool = False
                ) -> tuple[torch.Tensor, list[tuple[torch.Tensor, torch.Tensor]] | None]:
        """Args:
            x: token embeddings ``(b, t, n, d)``.
            cond: per-frame conditioning ``(b, t, c)``.
            positions: ``(t,)`` int frame index of each frame (CPU).
            clean: ``(t,)`` bool, True for clean frames, False for masked copies (CPU).
            cache: earlier clean frames' temporal keys and values (not modified here).
            collect_kv: also return each layer's temporal ``(k, v)`` of these ``t`` frames, for the cache.
        """
        positions, clean = positions.cpu(), clean.cpu()
        num_cached = len(cache) if cache is not None else 0
        k_pos = torch.cat([cache.positions, positions]) if num_cached else positions
        k_clean = torch.cat([torch.ones(num_cached, dtype=torch.bool), clean])
        mask = temporal_mask(positions, k_pos, k_clean, num_cached, self.window)
        mask = mask.to(x.device) if mask is not None else None
        angles = rope_angles(positions, self.head_dim, self.rope_base)
        temporal_rope = (angles.cos().float().to(x.device), angles.sin().float().to(x.device))
        spatial_rope = None
        if self.row_pos is not None:
            x = x + (self.row_pos[:, None] + self.col_pos[None]).flatten(0, 1)  # (n, d)
        else:
            spatial_rope = (self.spatial_cos, self.spatial_sin)
        if self.action_proj is not None:
            x = torch.cat([x, self.action_proj(cond)[:, :, None]], dim=2)  # (b, t, n + 1, d)
        cond = F.silu(cond)
        kvs = []
        for i, block in enumerate(self.blocks):
            past = cache.layer(i) if num_cached else None
            if self.gradient_checkpointing and self.training and torch.is_grad_enabled():
                x, kv = checkpoint(block, x, cond, spatial_rope, temporal_rope, mask, past, use_reentrant=False)
            else:
                x, kv = block(x, cond, spatial_rope, temporal_rope, mask, past)
            if collect_kv:
                kvs.append(kv)
        if self.action_proj is not None:
            x = x[:, :, :-1]
        shift, scale = self.out_modulation(cond)[:, :, None].chunk(2, dim=-1)
        return modulate(self.norm_out(x), shift, scale), (kvs if collect_kv else None)
