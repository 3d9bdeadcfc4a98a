"""A patch-local encoder: each token cell's latent depends on its own ``f x f`` pixel patch and nothing else.

The convolutional encoder (diffusers' VAE stack) sees most of a 64x64 frame from every cell, and its GroupNorm
normalises over the whole frame, so a sprite moving anywhere nudges every cell's latent and a quarter to a half of
the tokens flicker from one frame to the next while 3% of the pixels change (docs/fidelity.md, E0 and E1). A
dynamics model then spends its capacity predicting that flicker instead of what the actions do.

Here the frame is cut into a quadtree: stride-2 2x2 convolutions merge four cells into one, and between them
residual blocks of 1x1 convolutions (a per-cell MLP) normalised over channels only. Nothing mixes neighbouring
patches, so a patch whose pixels did not change keeps its latent, and its token, exactly. The decoder stays the
wide convolutional stack: it may use its neighbours to draw a patch, which costs the tokens no stability.
"""

from __future__ import annotations

import torch
from torch import nn


class ChannelNorm(nn.Module):
    """LayerNorm over the channels of each position of a ``(b, c, h, w)`` grid (no statistics across positions)."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class CellBlock(nn.Module):
    """Pre-norm residual MLP applied at every cell: ``x + W2 silu(norm(W1 silu(norm(x))))``, widening by 2."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.net = nn.Sequential(ChannelNorm(channels), nn.SiLU(), nn.Conv2d(channels, 2 * channels, 1),
                                 ChannelNorm(2 * channels), nn.SiLU(), nn.Conv2d(2 * channels, channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.net(x)


class PatchEncoder(nn.Module):
    """Frames ``(n, in_channels, h, w)`` -> latents ``(n, out_channels, h/f, w/f)``, ``f = 2 ** (stages - 1)``,
    each latent a function of its ``f x f`` patch only.

    Args:
        in_channels: image channels.
        out_channels: latent channels (the quantizer's input).
        block_channels: width per stage, as the convolutional encoder's (one stage per resolution).
        layers_per_block: cell blocks per stage.
    """

    def __init__(self, in_channels: int, out_channels: int, block_channels: list[int], layers_per_block: int) -> None:
        super().__init__()
        self.conv_in = nn.Conv2d(in_channels, block_channels[0], 1)
        stages: list[nn.Module] = []
        for i, width in enumerate(block_channels):
            stages.extend(CellBlock(width) for _ in range(layers_per_block))
            if i + 1 < len(block_channels):
                stages.append(nn.Conv2d(width, block_channels[i + 1], 2, stride=2))  # merge 2x2 cells into one
        stages.extend(CellBlock(block_channels[-1]) for _ in range(2))  # as the conv encoder's middle block
        self.stages = nn.Sequential(*stages)
        self.conv_out = nn.Sequential(ChannelNorm(block_channels[-1]), nn.SiLU(),
                                      nn.Conv2d(block_channels[-1], out_channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_out(self.stages(self.conv_in(x)))
