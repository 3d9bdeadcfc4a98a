"""The tokenizer's one typed config; presets by name live in :mod:`wm_video.training.presets`
(kind ``tokenizer``)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Literal


@dataclass
class TokenizerConfig:
    """A convolutional VQ tokenizer: frames ``(b, t, 3, h, w)`` -> tokens ``(b, t, h/f, w/f)`` -> frames.

    Args:
        resolution: frame height and width in pixels the model is built for.
        downsample: spatial downsampling factor ``f`` (4, 8 or 16): 64x64 frames give 16x16, 8x8 or 4x4 tokens.
        base_channels: width of the first encoder stage.
        channel_mult: width multiplier per stage; the first ``log2(f) + 1`` are used (empty: 1, 2, 2, 4, 4), so
            a list of 5 serves every downsampling factor.
        layers_per_block: residual blocks per stage.
        norm_groups: GroupNorm groups (must divide every stage's width).
        mid_attention: self-attention in the bottleneck (costly on CPU; helps at 256x256).
        encoder: ``conv`` (the convolutional VAE stack: every cell sees most of the frame) or ``patch`` (each cell's
            latent is a function of its own ``f x f`` pixel patch only, so a patch whose pixels did not change keeps
            its token exactly: :mod:`~wm_video.models.tokenizer.patch_encoder`). The decoder is the same for both.
        previous_frame: the decoder also reads the frame before, as in Delta-IRIS: a second, unquantised encoder of
            the same kind turns the previous frame into latents that are concatenated with the codes, so what 256
            codes per patch cannot hold (a sprite at any offset within its patch) can be copied from where it was.
            Frames are then decoded in order, each from the one drawn before it
            (:meth:`~wm_video.models.tokenizer.model.VQTokenizer.detokenize`); a frame with no previous frame reads
            zeros (trained on the first frame of every training pair). The tokens themselves stay per frame.
        latent_channels: encoder output channels before the quantizer.
        quantizer: ``vq`` (EMA codebook, cosine lookup, dead-code restart) or ``fsq`` (finite scalar
            quantization, no codebook to learn).
        codebook_size: VQ codes (``fsq`` derives its size from ``fsq_levels``).
        codebook_dim: VQ lookup dimension; the latent is projected down to it and l2-normalised (low-dimensional
            cosine lookup keeps codes in use, as in ViT-VQGAN).
        fsq_levels: FSQ levels per dimension; the codebook size is their product (8*5*5*5 = 1000).
        ema_decay: VQ codebook EMA decay.
        dead_code_threshold: a VQ code whose EMA assignment count falls below this fraction of the mean code's
            count is restarted from a random encoder output of the current batch.
        commitment_weight: weight of the commitment loss (encoder pulled towards its code).
        recon_loss: ``l1``, ``l2`` or ``l1+l2`` reconstruction loss.
        perceptual_weight: weight of the VGG16 feature distance (0: off).
        perceptual_weights: local VGG16 ``features`` weights file, required when ``perceptual_weight > 0``
            (nothing can be downloaded); the network is used in training only and is not part of the export.
        disc_weight: weight of the patch adversarial loss (0: off); the generator term is scaled by the adaptive
            weight (VQGAN) on top of this. Training-only, like the perceptual network.
        disc_start: training step from which the adversarial loss (generator and discriminator) is on; before it
            the discriminator gets no gradients and the tokenizer trains on reconstruction alone.
        disc_channels: width of the discriminator's first layer.
        disc_layers: strided layers of the discriminator (3: one logit per 8x8-pixel-strided patch).
        foreground_weight: extra reconstruction weight on foreground pixels, those that differ from their clip's
            per-pixel median over time (0: off). Small moving sprites (an Atari player, a ball) are a tiny share
            of the pixels, and an unweighted loss learns to drop them; 20-50 makes them count. Training only.
        foreground_threshold: how far (in [-1, 1] units, any channel) a pixel must be from the clip's median to
            count as foreground.
        temporal_weight: weight of the temporal stability loss (0: off): on pairs of consecutive frames, the
            quantizer inputs of token cells whose pixels did not change are pulled together, so their tokens stop
            flickering (:func:`~wm_video.models.tokenizer.losses.temporal_stability_loss`). Training samples
            consecutive frame pairs when it is on. Training only.
        finetuned_from: set by ``wm-video train tokenizer --init-from`` (never by hand): the tokenizer export this
            one was fine-tuned from, ``{"tokenizer": folder, "fingerprint": its fingerprint, "token_fingerprint":
            its quantizer's, "codebook": "frozen" or "trained"}``; empty for a tokenizer trained from scratch.
    """

    resolution: int = 64
    downsample: int = 8
    base_channels: int = 64
    channel_mult: list[int] = field(default_factory=list)
    layers_per_block: int = 1
    norm_groups: int = 32
    mid_attention: bool = False
    encoder: Literal["conv", "patch"] = "conv"
    previous_frame: bool = False
    latent_channels: int = 64
    quantizer: Literal["vq", "fsq"] = "vq"
    codebook_size: int = 1024
    codebook_dim: int = 32
    fsq_levels: list[int] = field(default_factory=lambda: [8, 5, 5, 5])
    ema_decay: float = 0.99
    dead_code_threshold: float = 0.03
    commitment_weight: float = 0.25
    recon_loss: Literal["l1", "l2", "l1+l2"] = "l1+l2"
    perceptual_weight: float = 0.0
    perceptual_weights: str | None = None
    disc_weight: float = 0.0
    disc_start: int = 2000
    disc_channels: int = 64
    disc_layers: int = 3
    foreground_weight: float = 0.0
    foreground_threshold: float = 0.1
    temporal_weight: float = 0.0
    finetuned_from: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for name in ("resolution", "base_channels", "layers_per_block", "norm_groups", "latent_channels",
                     "codebook_size", "codebook_dim", "disc_channels", "disc_layers"):
            if getattr(self, name) < 1:
                raise ValueError(f"tokenizer: field '{name}' must be >= 1, got {getattr(self, name)!r}")
        if self.foreground_weight < 0:
            raise ValueError(f"tokenizer: field 'foreground_weight' must be >= 0, got {self.foreground_weight}")
        if self.temporal_weight < 0:
            raise ValueError(f"tokenizer: field 'temporal_weight' must be >= 0, got {self.temporal_weight}")
        if self.encoder not in ("conv", "patch"):
            raise ValueError(f"tokenizer: field 'encoder' must be 'conv' or 'patch', got {self.encoder!r}")
        if self.downsample not in (4, 8, 16):
            raise ValueError(f"tokenizer: field 'downsample' must be 4, 8 or 16, got {self.downsample}")
        if self.channel_mult and len(self.channel_mult) < self.num_stages:
            raise ValueError(f"tokenizer: field 'channel_mult' needs {self.num_stages} entries for downsample "
                             f"{self.downsample}, got {self.channel_mult}")
        for width in self.block_channels:
            if width % self.norm_groups:
                raise ValueError(f"tokenizer: field 'norm_groups'={self.norm_groups} does not divide width {width}")
        if self.resolution % self.downsample:
            raise ValueError(f"tokenizer: resolution {self.resolution} is not divisible by downsample "
                             f"{self.downsample}")

    @property
    def num_stages(self) -> int:
        return int(math.log2(self.downsample)) + 1

    @property
    def block_channels(self) -> list[int]:
        # Empty channel_mult derives from downsample, so overriding downsample alone stays valid.
        mult = (self.channel_mult or [1, 2, 2, 4, 4])[: self.num_stages]
        return [self.base_channels * m for m in mult]

    @property
    def vocab_size(self) -> int:
        return math.prod(self.fsq_levels) if self.quantizer == "fsq" else self.codebook_size

    @property
    def token_grid(self) -> int:
        return self.resolution // self.downsample
