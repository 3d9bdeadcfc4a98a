"""The diffusion decoder's one typed config; presets by name live in :mod:`wm_video.training.presets`
(kind ``decoder``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from wm_video.models.tokenizer.config import TokenizerConfig

SAMPLERS = ("euler", "dpmsolver")


@dataclass
class DecoderConfig:
    """A token-conditioned diffusion decoder: tokens ``(b, t, h', w')`` (+ previous frame) -> frames.

    Args:
        tokenizer: the config (as a dict) of the tokenizer whose tokens it renders; filled in by
            ``DiffusionDecoder.from_tokenizer``. Its codebook and decoder stack are copied into the token renderer.
        tokenizer_fingerprint: hash of that tokenizer's codebook and decoder weights (``VQTokenizer.fingerprint``);
            tokens from another tokenizer are refused by ``check_tokenizer``.
        block_channels: UNet widths per resolution level (each level halves the resolution).
        attention: per level, whether the UNet's blocks there have self-attention (the lowest level is cheapest).
        layers_per_block: residual blocks per UNet level.
        attention_head_dim: channels per attention head.
        norm_groups: GroupNorm groups (must divide every width).
        embed_channels: channels of the token embedding (the tokenizer's code vectors, projected by a 1x1 conv and
            upsampled to pixel resolution) concatenated to the UNet input.
        token_render: also concatenate the token renderer's RGB image (the tokenizer decoder's output for these
            tokens): the denoiser then only has to add what the VQ decoder blurs away.
        residual: diffuse the residual ``frame - token render`` instead of the frame (needs ``token_render``): the
            sampler's output is added to the render, so even one step starts from the VQ decoder's mean estimate
            and the denoiser only models the detail it lacks, a signal of far smaller variance (set
            ``sigma_data`` to about its standard deviation).
        train_token_render: fine-tune the copied tokenizer decoder with the denoiser (off: it stays frozen, which
            keeps training cheap and the render equal to the tokenizer's own reconstruction).
        prev_frame: condition on the previous frame (3 more input channels) for temporal consistency.
        prev_noise: training noise (std, in [-1, 1] units, drawn uniformly up to this) added to the previous frame,
            so the decoder tolerates its own imperfect renders at generation time.
        prev_drop: training probability of replacing the previous frame by zeros, which then means "no previous
            frame" (the first frame of a rollout).
        sigma_min: smallest noise level (EDM).
        sigma_max: largest noise level; sampling starts here.
        sigma_data: pixel standard deviation assumed by the EDM preconditioning.
        rho: Karras schedule curvature.
        p_mean: mean of log-sigma drawn in training (EDM's log-normal).
        p_std: std of log-sigma drawn in training.
        sampler: default sampler: ``euler`` (EDM Euler) or ``dpmsolver`` (EDM DPM-Solver++ 2M), both diffusers
            schedulers; one network call per step either way.
        num_inference_steps: default number of sampling steps.
        max_inference_steps: the most steps a sampler is asked for (the schedule's resolution).
    """

    tokenizer: dict[str, Any] = field(default_factory=dict)
    tokenizer_fingerprint: str = ""
    block_channels: list[int] = field(default_factory=lambda: [64, 128, 256])
    attention: list[bool] = field(default_factory=lambda: [False, False, True])
    layers_per_block: int = 1
    attention_head_dim: int = 32
    norm_groups: int = 32
    embed_channels: int = 8
    token_render: bool = True
    residual: bool = False
    train_token_render: bool = False
    prev_frame: bool = False
    prev_noise: float = 0.1
    prev_drop: float = 0.1
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    sigma_data: float = 0.5
    rho: float = 7.0
    p_mean: float = -1.2
    p_std: float = 1.2
    sampler: Literal["euler", "dpmsolver"] = "euler"
    num_inference_steps: int = 4
    max_inference_steps: int = 1000

    def __post_init__(self) -> None:
        for name in ("layers_per_block", "attention_head_dim", "norm_groups", "embed_channels", "num_inference_steps",
                     "max_inference_steps"):
            if getattr(self, name) < 1:
                raise ValueError(f"decoder: field '{name}' must be >= 1, got {getattr(self, name)!r}")
        if not self.block_channels or min(self.block_channels) < 1:
            raise ValueError(f"decoder: field 'block_channels' needs widths >= 1, got {self.block_channels}")
        if len(self.attention) != len(self.block_channels):
            raise ValueError(f"decoder: field 'attention' needs one entry per level of 'block_channels' "
                             f"({len(self.block_channels)}), got {self.attention}")
        for width in self.block_channels:
            if width % self.norm_groups:
                raise ValueError(f"decoder: field 'norm_groups'={self.norm_groups} does not divide width {width}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"decoder: field 'sampler' must be one of {SAMPLERS}, got {self.sampler!r}")
        if self.residual and not self.token_render:
            raise ValueError("decoder: field 'residual' needs 'token_render' (the residual is taken from the render)")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"decoder: needs 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")

    @property
    def tokenizer_config(self) -> TokenizerConfig:
        return TokenizerConfig(**self.tokenizer)

    @property
    def resolution(self) -> int:
        return self.tokenizer_config.resolution

    @property
    def in_channels(self) -> int:
        return 3 + self.embed_channels + 3 * self.token_render + 3 * self.prev_frame
