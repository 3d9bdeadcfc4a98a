"""The denoiser network: a diffusers ``UNet2DModel`` whose input is the noisy frame concatenated with the frame's
token conditioning at pixel resolution (and, optionally, the previous frame).

Conditioning by concatenation rather than cross-attention: a token describes one fixed patch of the frame, so
the conditioning is spatially aligned with the pixels it explains. Upsampled to pixel resolution and stacked as
input channels, every convolution sees the right token at the right place for free, at no extra cost per step,
while cross-attention would have to learn that alignment from positions and costs (pixels x tokens) per layer.

Two token paths feed the UNet, both computed once per frame (not per denoising step):

- the token embedding: the tokenizer's code vectors (its codebook, through its quantizer's output projection),
  a 1x1 conv down to ``embed_channels`` and nearest upsampling by the tokenizer's factor;
- the token render: a copy of the tokenizer's decoder stack turns the same codes into an RGB image (the VQ
  reconstruction). The denoiser starts from the VQ decoder's mean estimate and learns to add the detail it
  blurs; frozen by default.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from diffusers import UNet2DModel
from torch import nn

from wm_video.models.decoder.config import DecoderConfig
from wm_video.models.tokenizer.model import build_decoder, build_quantizer


class TokenConditioner(nn.Module):
    """Tokens ``(n, h', w')`` -> conditioning ``(n, c, h, w)`` at pixel resolution (embedding, then render)."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        tok = cfg.tokenizer_config
        self.factor = tok.downsample
        self.quantizer = build_quantizer(tok)
        self.embed = nn.Conv2d(tok.latent_channels, cfg.embed_channels, 1)
        self.render = build_decoder(tok) if cfg.token_render else None
        self.quantizer.requires_grad_(False)  # the codebook is the tokenizer's; only the 1x1 projection learns
        if self.render is not None:
            self.render.requires_grad_(cfg.train_token_render)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        codes = self.quantizer.indices_to_codes(tokens)  # (n, latent, h', w')
        cond = [F.interpolate(self.embed(codes), scale_factor=self.factor, mode="nearest")]
        if self.render is not None:
            cond.insert(0, self.render(codes).clamp(-1, 1))
        return torch.cat(cond, dim=1)


class Denoiser(nn.Module):
    """The raw network ``F(c_in * x; noise level; conditioning)`` of the EDM parametrisation; the noise schedule
    and its preconditioning live in :mod:`.sampler` (diffusers' EDM schedulers), not here."""

    def __init__(self, cfg: DecoderConfig) -> None:
        super().__init__()
        res = cfg.resolution
        if res % 2 ** (len(cfg.block_channels) - 1):
            raise ValueError(f"decoder: resolution {res} is not divisible by 2^{len(cfg.block_channels) - 1} "
                             f"(one halving per UNet level in 'block_channels')")
        self.log_sigma_min, self.log_sigma_max = math.log(cfg.sigma_min), math.log(cfg.sigma_max)
        self.conditioner = TokenConditioner(cfg)
        self.unet = UNet2DModel(
            sample_size=res, in_channels=cfg.in_channels, out_channels=3,
            down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in cfg.attention),
            up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(cfg.attention)),
            block_out_channels=tuple(cfg.block_channels), layers_per_block=cfg.layers_per_block,
            attention_head_dim=cfg.attention_head_dim, norm_num_groups=cfg.norm_groups,
            add_attention=cfg.attention[-1])

    def noise_timestep(self, sigma: torch.Tensor) -> torch.Tensor:
        """Noise level -> the UNet's sinusoidal timestep input: log-sigma mapped linearly onto [0, 1000]."""
        t = (torch.log(sigma) - self.log_sigma_min) / (self.log_sigma_max - self.log_sigma_min)
        return 1000 * t.clamp(0, 1)

    def forward(self, x_in: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """``x_in`` the preconditioned noisy frames ``(n, 3, h, w)``, ``sigma`` ``(n,)``, ``cond`` from
        :class:`TokenConditioner` (plus the previous frame's channels when configured)."""
        return self.unet(torch.cat([x_in, cond], dim=1), self.noise_timestep(sigma)).sample
