"""The VQ tokenizer: frames ``(b, t, 3, h, w)`` in [-1, 1] -> tokens ``(b, t, h/f, w/f)`` int64 -> frames.

Encoder and decoder are diffusers' convolutional VAE stacks (residual blocks, GroupNorm, SiLU, stride-2
downsampling), used here without the VAE's double-z head; the quantizer is ours (:mod:`.quantizer`). Frames
are tokenized one by one (time folded into the batch).

Save/load: huggingface_hub's ``PyTorchModelHubMixin``, because it serialises the typed dataclass config
(``config.json``) and safetensors weights (``model.safetensors``) with no extra code, and the same mixin will
serve the dynamics model and the decoder, so all three parts load the same way. Loading checks the folder
first and says what is missing.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from diffusers.models.autoencoders.vae import Decoder, Encoder
from einops import rearrange
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from wm_video.models.card import part_card
from wm_video.models.checks import check_values, ids_out_of_range
from wm_video.models.export import check_export
from wm_video.models.tokenizer.config import TokenizerConfig
from wm_video.models.tokenizer.patch_encoder import PatchEncoder
from wm_video.models.tokenizer.quantizer import QuantizerOutput, make_quantizer
from wm_video.utils.logs import quiet_hub_loads

REQUIRED_FIELDS = {"resolution", "downsample", "quantizer"}  # config fields every tokenizer export has


def build_encoder(c: TokenizerConfig) -> nn.Module:
    """The tokenizer's encoder (pixels ``(n, 3, h, w)`` -> latents ``(n, latent, h', w')``): the convolutional stack
    or the patch-local one (``c.encoder``)."""
    if c.encoder == "patch":
        return PatchEncoder(3, c.latent_channels, c.block_channels, c.layers_per_block)
    return Encoder(in_channels=3, out_channels=c.latent_channels,
                   down_block_types=("DownEncoderBlock2D",) * c.num_stages, block_out_channels=tuple(c.block_channels),
                   layers_per_block=c.layers_per_block, norm_num_groups=c.norm_groups, act_fn="silu", double_z=False,
                   mid_block_add_attention=c.mid_attention)


def build_quantizer(c: TokenizerConfig) -> nn.Module:
    """The tokenizer's quantizer (VQ codebook or FSQ) for config ``c``."""
    return make_quantizer(c.quantizer, c.latent_channels, codebook_size=c.codebook_size, codebook_dim=c.codebook_dim,
                          fsq_levels=c.fsq_levels, ema_decay=c.ema_decay, dead_code_threshold=c.dead_code_threshold,
                          commitment_weight=c.commitment_weight)


def build_decoder(c: TokenizerConfig) -> nn.Module:
    """The tokenizer's convolutional decoder (codes ``(n, latent, h', w')`` -> pixels ``(n, 3, h, w)``; with
    ``previous_frame`` the previous frame's latents are concatenated to the codes); the diffusion decoder builds the
    same stack for its token renderer."""
    inputs = c.latent_channels * (2 if c.previous_frame else 1)
    return Decoder(in_channels=inputs, out_channels=3, up_block_types=("UpDecoderBlock2D",) * c.num_stages,
                   block_out_channels=tuple(c.block_channels), layers_per_block=c.layers_per_block,
                   norm_num_groups=c.norm_groups, act_fn="silu", mid_block_add_attention=c.mid_attention)


@dataclass
class TokenizerOutput:
    """``recon`` ``(b, t, 3, h, w)`` in about [-1, 1]; ``tokens`` ``(b, t, h', w')``; ``quant`` the quantizer's
    output for the flattened frames."""

    recon: torch.Tensor
    tokens: torch.Tensor
    quant: QuantizerOutput


class VQTokenizer(nn.Module, PyTorchModelHubMixin):
    """Frames to discrete tokens and back. Args: config: a :class:`TokenizerConfig` (or its dict, as
    ``from_pretrained`` passes it)."""

    def __init__(self, config: TokenizerConfig | dict) -> None:
        super().__init__()
        config = TokenizerConfig(**config) if isinstance(config, dict) else config
        self.config = config
        c = config
        self.encoder = build_encoder(c)
        self.quantizer = build_quantizer(c)
        self.decoder = build_decoder(c)
        # the previous frame's unquantised latents, read by the decoder (config.previous_frame)
        self.previous_encoder = build_encoder(c) if c.previous_frame else None

    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    def fingerprint(self) -> str:
        """A short hash of what turns tokens into pixels (quantizer and decoder weights): parts trained on this
        tokenizer's tokens (the diffusion decoder) record it, so tokens of another tokenizer are refused."""
        previous = [] if self.previous_encoder is None else [self.previous_encoder]
        return weights_fingerprint(self.quantizer, self.decoder, *previous)

    @property
    def patch_local(self) -> bool:
        """Whether each token is a function of its own pixel patch alone (``encoder="patch"``), so an unchanged
        token means an unchanged patch and rendering may keep the previous frame's pixels there."""
        return self.config.encoder == "patch"

    @property
    def reads_previous_frame(self) -> bool:
        """Whether each frame is decoded with the frame before it (``config.previous_frame``)."""
        return self.previous_encoder is not None

    def token_fingerprint(self) -> str:
        """A short hash of what each token id stands for, the quantizer's weights (VQ: codebook and projections; FSQ:
        its projections): ``data tokenize`` records it, and token datasets with the same one may share a mixture. A
        fine-tune with ``finetune.freeze_codebook`` keeps it, while :meth:`fingerprint`, which covers the decoder too,
        changes."""
        return weights_fingerprint(self.quantizer)

    def check_frames(self, frames: torch.Tensor, where: str = "frames") -> None:
        """``(b, t, 3, h, w)`` whose ``h`` and ``w`` the downsampling factor divides; clear errors otherwise."""
        if frames.ndim != 5 or frames.shape[2] != 3:
            raise ValueError(f"{where}: expected (b, t, 3, h, w), got {tuple(frames.shape)}")
        h, w = frames.shape[-2:]
        f = self.config.downsample
        if h % f or w % f:
            raise ValueError(f"{where}: frame size {h}x{w} is not divisible by the downsampling factor {f}")

    def quantize(self, frames: torch.Tensor) -> tuple[QuantizerOutput, int]:
        self.check_frames(frames)
        b = frames.shape[0]
        z = self.encoder(rearrange(frames, "b t c h w -> (b t) c h w"))  # ((b t), d, h', w')
        return self.quantizer(z), b

    @torch.no_grad()
    def tokenize(self, frames: torch.Tensor) -> torch.Tensor:
        """Frames ``(b, t, 3, h, w)`` float in [-1, 1] -> tokens ``(b, t, h/f, w/f)`` int64."""
        quant, b = self.quantize(frames)
        return rearrange(quant.indices, "(b t) h w -> b t h w", b=b)

    def detokenize(self, tokens: torch.Tensor, prev_frame: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(b, t, h', w')`` -> frames ``(b, t, 3, h, w)`` (about [-1, 1]).

        A tokenizer that reads the previous frame (:attr:`reads_previous_frame`) decodes the frames in order, each
        from the one drawn before it (clamped to [-1, 1]), the first from ``prev_frame`` ``(b, 3, h, w)`` in
        [-1, 1] (None: from none); any other ignores ``prev_frame``."""
        if tokens.ndim != 4:
            raise ValueError(f"tokens: expected (b, t, h, w), got {tuple(tokens.shape)}")
        bad = ids_out_of_range(tokens, self.vocab_size)  # a host read: skipped inside checks.validated()
        if bad:
            raise ValueError(f"tokens: values must be in [0, {self.vocab_size}), got [{bad[0]}, {bad[1]}]")
        b = tokens.shape[0]
        codes = self.quantizer.indices_to_codes(rearrange(tokens, "b t h w -> (b t) h w"))
        if not self.reads_previous_frame:
            return rearrange(self.decoder(codes), "(b t) c h w -> b t c h w", b=b)
        codes, out = rearrange(codes, "(b t) c h w -> b t c h w", b=b), []
        for i in range(tokens.shape[1]):
            context = None if prev_frame is None else self.previous_encoder(prev_frame)
            prev_frame = self._decode(codes[:, i], context).clamp(-1, 1)
            out.append(prev_frame)
        return torch.stack(out, 1)

    def _decode(self, codes: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """Codes ``(n, latent, h', w')`` -> pixels; a decoder that reads the previous frame also reads ``context``,
        its latents ``(n, latent, h', w')`` (None: zeros, no previous frame)."""
        if not self.reads_previous_frame:
            return self.decoder(codes)
        return self.decoder(torch.cat([codes, torch.zeros_like(codes) if context is None else context], 1))

    def forward(self, frames: torch.Tensor) -> TokenizerOutput:
        """Reconstructions of ``frames`` ``(b, t, 3, h, w)``; a decoder that reads the previous frame reads the true
        one, and the first frame of each clip reads none (zeros), as a first frame decoded alone does."""
        quant, b = self.quantize(frames)
        context = None
        if self.reads_previous_frame and frames.shape[1] > 1:  # frames 1..t-1 read the latents of frames 0..t-2
            prev = rearrange(self.previous_encoder(frames[:, :-1].flatten(0, 1)), "(b t) c h w -> b t c h w", b=b)
            context = torch.cat([torch.zeros_like(prev[:, :1]), prev], 1).flatten(0, 1)
        recon = rearrange(self._decode(quant.codes, context), "(b t) c h w -> b t c h w", b=b)
        return TokenizerOutput(recon, rearrange(quant.indices, "(b t) h w -> b t h w", b=b), quant)

    def compute_loss(self, batch: dict[str, Any], perceptual: nn.Module | None = None, disc: nn.Module | None = None
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Reconstruction (L1/L2) plus commitment loss on ``batch["frames"]`` uint8 ``(b, t, 3, h, w)``, plus
        ``temporal_weight`` times the temporal stability loss when on (frames must then be consecutive), with
        foreground pixels weighted up when ``foreground_weight > 0`` (the mask is ``batch["foreground"]`` when
        given, else computed from the clip: see :func:`~wm_video.models.tokenizer.losses.foreground_mask`); plus
        ``perceptual_weight`` times ``perceptual(recon, frames)`` when a perceptual network is given; plus, when a
        patch discriminator ``disc`` is given, the adversarial terms (training holds both networks, so their
        weights never enter the export).

        With ``disc``, the returned loss is the sum of the generator's loss and the discriminator's hinge loss, set
        up so that one backward pass gives each side only its own gradients: the generator term reads the
        discriminator with its parameters frozen, and the discriminator term sees detached reconstructions. So one
        optimizer (and Lightning's automatic optimization, gradient clipping and exact resume) serves both."""
        frames = to_model_frames(batch["frames"], batch.get("key"))
        out = self(frames)
        err = out.recon - frames
        l1, mse = err.abs().mean(), err.pow(2).mean()
        extra = {}
        fg = batch.get("foreground")
        if fg is None and self.config.foreground_weight > 0:
            from wm_video.models.tokenizer.losses import foreground_mask

            fg = foreground_mask(frames, self.config.foreground_threshold)
        if fg is not None and self.config.foreground_weight > 0:
            # Weights 1 + w on foreground pixels, scaled to mean 1 so the loss stays on the unweighted scale.
            weight = 1 + self.config.foreground_weight * fg.float()
            weight = weight / weight.mean()
            w_l1, w_mse = (weight * err.abs()).mean(), (weight * err.pow(2)).mean()
            n_fg = fg.sum() * 3
            fg_mse = (err.pow(2) * fg).sum().detach() / n_fg.clamp(min=1)
            extra["fg_fraction"] = fg.float().mean()
            if n_fg > 0:
                extra["fg_psnr"] = 10 * torch.log10(4.0 / fg_mse.clamp(min=1e-10))
        else:
            w_l1, w_mse = l1, mse
        rec = {"l1": w_l1, "l2": w_mse, "l1+l2": w_l1 + w_mse}[self.config.recon_loss]
        if perceptual is not None and self.config.perceptual_weight > 0:
            p = perceptual(out.recon.flatten(0, 1), frames.flatten(0, 1))
            rec = rec + self.config.perceptual_weight * p
            extra["perceptual"] = p.detach()
        loss = rec + out.quant.loss
        if self.config.temporal_weight > 0 and frames.shape[1] >= 2 and out.quant.lookup is not None:
            from wm_video.models.tokenizer.losses import temporal_stability_loss

            lookup = rearrange(out.quant.lookup, "(b t) c h w -> b t c h w", b=frames.shape[0])
            stab = temporal_stability_loss(lookup, frames)
            loss = loss + self.config.temporal_weight * stab
            extra["temporal"] = stab.detach()
        if disc is not None:
            adv, adv_logs = self._adversarial(disc, rec, frames.flatten(0, 1), out.recon.flatten(0, 1))
            loss = loss + adv
            extra.update(adv_logs)
        psnr = 10 * torch.log10(4.0 / mse.detach().clamp(min=1e-10))  # peak-to-peak 2 in [-1, 1]
        logs = {"loss": loss.detach(), "rec_l1": l1.detach(), "rec_mse": mse.detach(), "psnr": psnr,
                "commit": out.quant.loss.detach(), "perplexity": out.quant.perplexity, "usage": out.quant.usage,
                **extra}
        return loss, logs

    def _adversarial(self, disc: nn.Module, rec: torch.Tensor, real: torch.Tensor, fake: torch.Tensor
                     ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """Generator term (adaptively weighted against ``rec`` at the decoder's last layer) plus the
        discriminator's hinge loss; see :meth:`compute_loss`."""
        from wm_video.models.tokenizer.losses import adaptive_weight, generator_loss, hinge_d_loss

        disc.requires_grad_(False)
        try:
            g = generator_loss(disc(fake))
        finally:
            disc.requires_grad_(True)
        weight = self.config.disc_weight * adaptive_weight(rec, g, self.decoder.conv_out.weight)
        logits_real, logits_fake = disc(real), disc(fake.detach())
        d = hinge_d_loss(logits_real, logits_fake)
        logs = {"gan_g": g.detach(), "gan_d": d.detach(), "gan_weight": weight,
                "logits_real": logits_real.detach().mean(), "logits_fake": logits_fake.detach().mean()}
        return weight * g + d, logs

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The ``README.md`` that ``save_pretrained`` writes (``model_card_kwargs`` come here): what this part is and
        how to load it (:func:`wm_video.models.card.part_card`), not the mixin's placeholder text."""
        return part_card(self, "tokenizer", **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> VQTokenizer:
        """Load an export made by :meth:`save_pretrained` from a local folder (no hub downloads here)."""
        check_export(Path(pretrained_model_name_or_path), TokenizerConfig, "tokenizer", REQUIRED_FIELDS)
        with quiet_hub_loads():  # huggingface_hub prints a line per local load
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)


def weights_fingerprint(*modules: nn.Module) -> str:
    """sha256 (first 16 hex digits) over the modules' state dicts, in key order."""
    h = hashlib.sha256()
    for m in modules:
        for k, v in sorted(m.state_dict().items()):
            h.update(k.encode())
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def to_model_frames(frames: torch.Tensor, keys: list[str] | None = None) -> torch.Tensor:
    """uint8 frames (0-255) -> float in [-1, 1]; float input must already be finite and in [-1, 1] (checked, with
    a host read, outside :func:`~wm_video.models.checks.validated`)."""
    if frames.dtype == torch.uint8:
        return frames.float() / 127.5 - 1
    if not check_values():
        return frames.float()
    bad = ~torch.isfinite(frames).flatten(1).all(1) | (frames.abs().flatten(1).amax(1) > 1 + 1e-3)
    if bad.any():
        i = int(bad.nonzero()[0])
        name = keys[i] if keys else f"batch item {i}"
        raise ValueError(f"clip {name}: pixels are NaN/inf or outside [-1, 1]")
    return frames.float()
