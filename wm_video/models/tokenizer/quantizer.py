"""Quantizers: latent grids ``(b, d, h, w)`` -> discrete indices ``(b, h, w)`` and the codes that stand for them.

``VectorQuantizerEMA`` keeps a learned codebook updated by exponential moving averages (no codebook gradients),
looks codes up by cosine similarity in a low-dimensional projection, seeds the codebook from the first batch
and restarts codes that fall out of use from current encoder outputs, both drawn k-means++ style (by distance
from the codes there are, so duplicates of common content do not crowd the codebook). ``FiniteScalarQuantizer`` (FSQ,
Mentzer et al. 2023) rounds each of a few bounded dimensions to a fixed number of levels: no codebook to learn,
so no collapse, at the price of a fixed, factorised vocabulary. Both pass gradients to the encoder with the
straight-through estimator.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from einops import rearrange
from torch import nn


@dataclass
class QuantizerOutput:
    """``codes`` ``(b, d, h, w)`` (straight-through: gradients reach the encoder), ``indices`` ``(b, h, w)``
    int64, ``loss`` the commitment loss (0 for FSQ), ``counts`` ``(k,)`` code assignments in this batch,
    ``lookup`` ``(b, c, h, w)`` the vectors the codes were chosen for, before quantization (VQ: the unit vectors of
    the cosine lookup; FSQ: the bounded values before rounding), with gradients."""

    codes: torch.Tensor
    indices: torch.Tensor
    loss: torch.Tensor
    counts: torch.Tensor
    lookup: torch.Tensor | None = None

    @property
    def perplexity(self) -> torch.Tensor:
        """exp(entropy) of this batch's code distribution: how many codes are in effect used."""
        p = self.counts / self.counts.sum().clamp(min=1)
        return torch.exp(-(p * torch.log(p.clamp(min=1e-10))).sum())

    @property
    def usage(self) -> torch.Tensor:
        """Fraction of codes used at least once in this batch."""
        return (self.counts > 0).float().mean()


def _all_reduce(t: torch.Tensor) -> torch.Tensor:
    # Codebook statistics must agree across data-parallel ranks; plain torch.distributed, no trainer coupling.
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.all_reduce(t)
    return t


class VectorQuantizerEMA(nn.Module):
    """VQ with an EMA-updated, l2-normalised codebook of ``codebook_size`` codes in ``codebook_dim`` dims.

    Args:
        dim: channels of the latent grid.
        codebook_size: number of codes ``k``.
        codebook_dim: lookup dimension (the latent is projected to it and normalised).
        decay: EMA decay of the assignment counts and code sums.
        dead_code_threshold: codes whose EMA count falls below this fraction of the mean code's count are
            restarted from batch vectors (relative, so it means the same at any batch size).
        commitment_weight: weight of ``||x - sg(code)||^2``.
    """

    def __init__(self, dim: int, codebook_size: int, codebook_dim: int, decay: float = 0.99,
                 dead_code_threshold: float = 0.03, commitment_weight: float = 0.25) -> None:
        super().__init__()
        self.codebook_size, self.decay = codebook_size, decay
        self.dead_code_threshold, self.commitment_weight = dead_code_threshold, commitment_weight
        self.proj_in = nn.Linear(dim, codebook_dim)
        self.proj_out = nn.Linear(codebook_dim, dim)
        embed = F.normalize(torch.randn(codebook_size, codebook_dim), dim=-1)
        self.register_buffer("embed", embed)  # (k, c) unit vectors
        self.register_buffer("embed_sum", embed.clone())  # (k, c) EMA of assigned vectors' sum
        self.register_buffer("cluster_size", torch.ones(codebook_size))  # (k,) EMA of assignment counts
        self.register_buffer("initialized", torch.tensor(False))
        # True: training leaves the codebook as it is (no seeding, EMA update or restart), so every token id keeps
        # the code it stands for; set by a tokenizer fine-tune (finetune.freeze_codebook), not saved
        self.codebook_frozen = False

    def lookup(self, x: torch.Tensor) -> torch.Tensor:
        """Nearest code by cosine similarity for unit vectors ``x`` ``(n, c)`` -> indices ``(n,)``."""
        return (x @ self.embed.t()).argmax(dim=-1)

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(b, h, w)`` indices -> ``(b, d, h, w)`` codes in the decoder's latent space."""
        return rearrange(self.proj_out(self.embed[indices]), "b h w d -> b d h w")

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        b, _, h, w = z.shape
        x = F.normalize(self.proj_in(rearrange(z, "b d h w -> (b h w) d")), dim=-1)  # (n, c)
        update = self.training and not self.codebook_frozen
        if update and not bool(self.initialized):
            self._initialize(x.detach())
        idx = self.lookup(x)  # (n,)
        counts = torch.bincount(idx, minlength=self.codebook_size).float()
        if update:
            self.ema_update(x.detach(), idx, counts.clone())
        q = self.embed[idx]
        loss = self.commitment_weight * F.mse_loss(x, q.detach())
        q = x + (q - x).detach()  # straight-through: forward uses the code, backward the encoder output
        codes = rearrange(self.proj_out(q), "(b h w) d -> b d h w", b=b, h=h, w=w)
        return QuantizerOutput(codes, idx.view(b, h, w), loss, counts,
                               rearrange(x, "(b h w) c -> b c h w", b=b, h=h, w=w))

    @torch.no_grad()
    def _initialize(self, x: torch.Tensor) -> None:
        """Seed the codebook with encoder outputs of the first batch (random init wastes most codes), chosen by
        k-means++: each next seed is drawn with probability proportional to its squared distance from the seeds
        so far, so the commonest content does not take most of the codebook as near-duplicates."""
        seeds = [int(torch.randint(len(x), (1,), device=x.device))]
        dist = (1 - x @ x[seeds[0]]).clamp(min=0) ** 2  # (n,)
        for _ in range(self.codebook_size - 1):
            i = int(torch.multinomial(dist, 1)) if float(dist.sum()) > 0 else int(torch.randint(len(x), (1,)))
            seeds.append(i)
            dist = torch.minimum(dist, (1 - x @ x[i]).clamp(min=0) ** 2)
        pick = torch.tensor(seeds, device=x.device)
        self.embed.copy_(F.normalize(x[pick] + 1e-3 * torch.randn_like(x[pick]), dim=-1))
        self.embed_sum.copy_(self.embed)
        self.cluster_size.fill_(1.0)
        self.initialized.fill_(True)

    @torch.no_grad()
    def ema_update(self, x: torch.Tensor, idx: torch.Tensor, counts: torch.Tensor) -> None:
        """Move counts and code sums towards this batch's assignments; renormalise; restart dead codes."""
        batch_sum = torch.zeros_like(self.embed_sum).index_add_(0, idx, x)  # (k, c)
        counts, batch_sum = _all_reduce(counts), _all_reduce(batch_sum)
        self.cluster_size.mul_(self.decay).add_(counts, alpha=1 - self.decay)
        self.embed_sum.mul_(self.decay).add_(batch_sum, alpha=1 - self.decay)
        # Directions only matter for cosine lookup, so no Laplace smoothing of the counts is needed.
        self.embed.copy_(F.normalize(self.embed_sum, dim=-1))
        self.restart_dead_codes(x)

    @torch.no_grad()
    def restart_dead_codes(self, x: torch.Tensor) -> torch.Tensor:
        """Replace codes whose EMA count is below ``dead_code_threshold`` times the mean count by vectors of
        ``x`` drawn with probability proportional to their squared distance from their nearest code (k-means++
        style); returns their mask.

        Uniform draws mostly pick the commonest content (an Atari game's black background), so restarted codes
        pile up as near-duplicates of already well-served codes; the tokens of such regions then flip between
        the duplicates from frame to frame although their pixels stay put. Drawing by distance sends restarts to
        the content the codebook serves worst (small moving objects), and never onto a vector a code already
        matches exactly."""
        floor = self.dead_code_threshold * self.cluster_size.mean()
        dead = self.cluster_size < floor
        n = int(dead.sum())
        if n:
            err = (1 - (x @ self.embed[~dead].t()).amax(-1)).clamp(min=0) ** 2 if bool((~dead).any()) else None
            if err is None or float(err.sum()) <= 0:
                pick = torch.randint(len(x), (n,), device=x.device)
            else:
                pick = torch.multinomial(err, n, replacement=n > int((err > 0).sum()))
            self.embed[dead] = x[pick]
            self.cluster_size[dead] = 2 * floor  # a grace period before it can be declared dead again
            self.embed_sum[dead] = x[pick] * self.cluster_size[dead, None]
        return dead


class FiniteScalarQuantizer(nn.Module):
    """FSQ over ``len(levels)`` dims, each bounded with tanh and rounded to ``levels[i]`` values.

    Args:
        dim: channels of the latent grid.
        levels: values per dimension; the vocabulary is their product.
    """

    def __init__(self, dim: int, levels: list[int]) -> None:
        super().__init__()
        if any(level < 2 for level in levels):
            raise ValueError(f"FSQ levels must each be >= 2, got {levels}")
        self.levels = list(levels)
        self.codebook_size = math.prod(levels)
        self.proj_in = nn.Linear(dim, len(levels))
        self.proj_out = nn.Linear(len(levels), dim)
        lv = torch.tensor(levels, dtype=torch.float32)
        self.register_buffer("_levels", lv, persistent=False)
        self.register_buffer("_basis", torch.cumprod(torch.tensor([1, *levels[:-1]]), 0), persistent=False)

    def _bound(self, z: torch.Tensor) -> torch.Tensor:
        # Map to the interval that rounds to exactly `levels` integers: (-(L-1)/2, (L-1)/2), shifted by 1/2 for
        # even L so the integers are symmetric around the shift.
        half = (self._levels - 1) * (1 + 1e-3) / 2
        offset = torch.where(self._levels % 2 == 0, 0.5, 0.0)
        shift = torch.atanh(offset / half)
        return torch.tanh(z + shift) * half - offset

    def _digits_to_codes(self, digits: torch.Tensor) -> torch.Tensor:
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        return (digits - half_width) / half_width  # in [-1, 1]

    def indices_to_codes(self, indices: torch.Tensor) -> torch.Tensor:
        """``(b, h, w)`` indices -> ``(b, d, h, w)`` codes in the decoder's latent space."""
        digits = torch.remainder(torch.div(indices[..., None], self._basis, rounding_mode="floor"), self._levels)
        return rearrange(self.proj_out(self._digits_to_codes(digits.float())), "b h w d -> b d h w")

    def codes_to_indices(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalised FSQ codes ``(..., len(levels))`` in [-1, 1] -> indices ``(...)``."""
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        digits = (normalized * half_width + half_width).round().long()
        return (digits * self._basis).sum(-1)

    def forward(self, z: torch.Tensor) -> QuantizerOutput:
        x = self._bound(self.proj_in(rearrange(z, "b d h w -> b h w d")))
        rounded = x + (x.round() - x).detach()  # straight-through rounding
        half_width = torch.div(self._levels, 2, rounding_mode="floor")
        normalized = rounded / half_width
        idx = self.codes_to_indices(normalized.detach())
        counts = torch.bincount(idx.flatten(), minlength=self.codebook_size).float()
        codes = rearrange(self.proj_out(normalized), "b h w d -> b d h w")
        return QuantizerOutput(codes, idx, z.new_zeros(()), counts, rearrange(x / half_width, "b h w d -> b d h w"))


def make_quantizer(kind: str, dim: int, *, codebook_size: int, codebook_dim: int, fsq_levels: list[int],
                   ema_decay: float, dead_code_threshold: float, commitment_weight: float) -> nn.Module:
    if kind == "vq":
        return VectorQuantizerEMA(dim, codebook_size, codebook_dim, ema_decay, dead_code_threshold, commitment_weight)
    if kind == "fsq":
        return FiniteScalarQuantizer(dim, fsq_levels)
    raise ValueError(f"unknown quantizer {kind!r}; choose vq or fsq")
