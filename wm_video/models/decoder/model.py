"""The diffusion decoder: tokens ``(b, t, h', w')`` of one tokenizer -> frames ``(b, t, 3, h, w)`` in [-1, 1].

EDM training (Karras et al. 2022: log-normal noise levels, preconditioned network, loss weighted to unit
variance) through diffusers' EDM scheduler maths; few-step sampling through diffusers' EDM Euler and DPM-Solver++
schedulers (:mod:`.sampler`). With ``prev_frame`` on, frames are rendered one after another, each conditioned
on the render before it.

Save/load: huggingface_hub's ``PyTorchModelHubMixin`` (config.json + model.safetensors), as for the tokenizer.
The export holds its own copy of the tokenizer's codebook and decoder stack, so it renders tokens with no
tokenizer at hand, and the tokenizer's fingerprint, so it refuses another tokenizer's tokens.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import torch
from diffusers import EDMEulerScheduler
from einops import rearrange
from huggingface_hub import ModelCard, PyTorchModelHubMixin
from torch import nn

from wm_video.models.card import part_card
from wm_video.models.checks import ids_out_of_range
from wm_video.models.decoder.config import DecoderConfig
from wm_video.models.decoder.network import Denoiser
from wm_video.models.decoder.sampler import check_steps, make_scheduler, sample
from wm_video.models.export import check_export
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils.logs import quiet_hub_loads

REQUIRED_FIELDS = {"tokenizer", "block_channels", "sigma_max"}  # config fields every decoder export has


class DiffusionDecoder(nn.Module, PyTorchModelHubMixin):
    """Renders a tokenizer's tokens into frames by denoising. Build it from a tokenizer with
    :meth:`from_tokenizer`; ``DiffusionDecoder(config)`` is what ``from_pretrained`` calls."""

    def __init__(self, config: DecoderConfig | dict) -> None:
        super().__init__()
        config = DecoderConfig(**config) if isinstance(config, dict) else config
        if not config.tokenizer:
            raise ValueError("decoder: field 'tokenizer' is empty; build the decoder with "
                             "DiffusionDecoder.from_tokenizer(tokenizer, config)")
        self.config = config
        self.network = Denoiser(config)
        self.edm = make_scheduler(config)  # the EDM preconditioning shared by training and sampling
        self._schedulers: dict[str, EDMEulerScheduler] = {}  # sampling schedulers by sampler name: scheduler()

    @classmethod
    def from_tokenizer(cls, tokenizer: nn.Module, config: DecoderConfig | None = None) -> DiffusionDecoder:
        """A new decoder for ``tokenizer``'s tokens: its codebook and decoder stack are copied in. A tokenizer whose
        decoder reads the previous frame (``previous_frame``) is refused: its renderer cannot be copied."""
        if getattr(tokenizer.config, "previous_frame", False):
            raise ValueError("decoder: the tokenizer's decoder reads the previous frame (tokenizer field "
                             "'previous_frame' is true), which the diffusion decoder's token renderer cannot copy; "
                             "use the VQ decoder of that tokenizer, or a tokenizer trained without previous_frame")
        cfg = dataclasses.replace(config or DecoderConfig(), tokenizer=dataclasses.asdict(tokenizer.config),
                                  tokenizer_fingerprint=tokenizer.fingerprint())
        model = cls(cfg)
        cond = model.network.conditioner
        cond.quantizer.load_state_dict(tokenizer.quantizer.state_dict())
        if cond.render is not None:
            cond.render.load_state_dict(tokenizer.decoder.state_dict())
        return model

    @property
    def token_grid(self) -> tuple[int, int]:
        g = self.config.tokenizer_config.token_grid
        return g, g

    @property
    def vocab_size(self) -> int:
        return self.config.tokenizer_config.vocab_size

    def check_tokens(self, tokens: torch.Tensor, where: str = "tokens") -> None:
        """``(b, t, h', w')`` on this decoder's token grid with values in its vocabulary; clear errors otherwise."""
        if tokens.ndim != 4:
            raise ValueError(f"{where}: expected (b, t, h, w), got {tuple(tokens.shape)}")
        if tuple(tokens.shape[-2:]) != self.token_grid:
            raise ValueError(f"{where}: token grid {tokens.shape[-2]}x{tokens.shape[-1]}, but this decoder renders "
                             f"the {self.token_grid[0]}x{self.token_grid[1]} grid of the tokenizer it was trained "
                             f"with (tokens from another tokenizer?)")
        bad = ids_out_of_range(tokens, self.vocab_size)  # a host read: skipped inside checks.validated()
        if bad:
            lo, hi = bad
            raise ValueError(f"{where}: token values must be in [0, {self.vocab_size}) (the vocabulary of the "
                             f"tokenizer this decoder was trained with), got [{lo}, {hi}]")

    def check_tokenizer(self, tokenizer: nn.Module, where: str = "tokenizer") -> None:
        """Refuse a tokenizer other than the one this decoder was trained with, naming the fields that differ."""
        mine, theirs = self.config.tokenizer_config, tokenizer.config
        fields = [f for f in ("resolution", "downsample", "quantizer", "vocab_size")
                  if getattr(mine, f) != getattr(theirs, f)]
        if fields:
            diff = ", ".join(f"{f}: {getattr(theirs, f)} (decoder expects {getattr(mine, f)})" for f in fields)
            raise ValueError(f"{where}: not the tokenizer this decoder was trained with: {diff}")
        fp = tokenizer.fingerprint()
        if self.config.tokenizer_fingerprint and fp != self.config.tokenizer_fingerprint:
            raise ValueError(f"{where}: same shape but different weights than the tokenizer this decoder was trained "
                             f"with (fingerprint {fp}, decoder expects {self.config.tokenizer_fingerprint})")

    def conditioning(self, tokens: torch.Tensor, prev: torch.Tensor | None = None) -> torch.Tensor:
        """Tokens ``(n, h', w')`` (+ previous frames ``(n, 3, h, w)``, zeros for none) -> ``(n, c, h, w)``."""
        cond = self.network.conditioner(tokens)
        if self.config.prev_frame:
            prev = torch.zeros_like(cond[:, :3]) if prev is None else prev.to(cond.dtype)
            cond = torch.cat([cond, prev], dim=1)
        return cond

    def denoise(self, noisy: torch.Tensor, sigma: torch.Tensor, cond: torch.Tensor) -> torch.Tensor:
        """EDM denoiser ``D(x; sigma) = c_skip x + c_out F(c_in x; sigma)``, ``sigma`` ``(n,)``."""
        s = sigma.view(-1, 1, 1, 1)
        out = self.network(self.edm.precondition_inputs(noisy, s), sigma, cond)
        return self.edm.precondition_outputs(noisy, out, s)

    def compute_loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """EDM loss on ``batch["frames"]`` uint8 ``(b, t, 3, h, w)`` given ``batch["tokens"]`` ``(b, t, h', w')``
        (the frozen tokenizer's tokens of those frames). With ``prev_frame`` on, frames 1.. are the targets and
        their predecessors (noised, sometimes dropped) the extra condition."""
        frames = to_model_frames(batch["frames"], batch.get("key"))
        tokens = batch["tokens"]
        self.check_tokens(tokens, "batch['tokens']")
        if tokens.shape[:2] != frames.shape[:2]:
            raise ValueError(f"batch: {tuple(tokens.shape[:2])} (b, t) of tokens for {tuple(frames.shape[:2])} of "
                             "frames")
        prev = None
        if self.config.prev_frame:
            if frames.shape[1] < 2:
                raise ValueError("batch: prev_frame training needs clips of at least 2 frames")
            prev = frames[:, :-1].flatten(0, 1)
            frames, tokens = frames[:, 1:], tokens[:, 1:]
            n = prev.shape[0]
            prev = prev + torch.rand(n, 1, 1, 1, device=prev.device) * self.config.prev_noise * torch.randn_like(prev)
            prev = prev * (torch.rand(n, 1, 1, 1, device=prev.device) >= self.config.prev_drop)
        x = frames.flatten(0, 1)
        cond = self.conditioning(tokens.flatten(0, 1), prev)
        if self.config.residual:
            x = x - cond[:, :3]  # the detail the token render lacks
        c = self.config
        sigma = torch.exp(c.p_mean + c.p_std * torch.randn(x.shape[0], device=x.device))
        denoised = self.denoise(x + sigma.view(-1, 1, 1, 1) * torch.randn_like(x), sigma, cond)
        weight = (sigma**2 + c.sigma_data**2) / (sigma * c.sigma_data) ** 2
        se = ((denoised - x) ** 2).flatten(1).mean(1)
        loss = (weight * se).mean()
        return loss, {"loss": loss.detach(), "denoise_mse": se.detach().mean(), "sigma_median": sigma.median()}

    def scheduler(self, sampler: str | None = None) -> EDMEulerScheduler:
        """The sampling scheduler of ``sampler`` (default: the config's), built on first use and reused by every
        render after: :func:`~.sampler.sample` resets its state each time, so the frames equal a fresh scheduler's,
        without building a diffusers scheduler per frame of a rollout. (One sampling run at a time holds its state:
        two threads rendering with one decoder at once would need a decoder each.)"""
        name = sampler or self.config.sampler
        if name not in self._schedulers:
            self._schedulers[name] = make_scheduler(self.config, name)
        return self._schedulers[name]

    @torch.no_grad()
    def render(self, tokens: torch.Tensor, prev_frame: torch.Tensor | None = None,
               num_inference_steps: int | None = None, sampler: str | None = None,
               generator: torch.Generator | None = None) -> torch.Tensor:
        """Tokens ``(b, t, h', w')`` -> frames ``(b, t, 3, h, w)`` in [-1, 1].

        Args:
            tokens: the frames' tokens, from the tokenizer this decoder was trained with.
            prev_frame: ``(b, 3, h, w)`` in [-1, 1] (or uint8), the frame before the first one (used when the
                decoder conditions on the previous frame; None: rendered as a first frame).
            num_inference_steps: denoising steps, one network call each (default: the config's).
            sampler: ``euler`` or ``dpmsolver`` (default: the config's).
            generator: seeds the initial noise; the same seed gives the same frames.
        """
        self.check_tokens(tokens)
        steps = check_steps(self.config.num_inference_steps if num_inference_steps is None else num_inference_steps,
                            self.config)
        b, t = tokens.shape[:2]
        res = self.config.resolution
        device = tokens.device
        scheduler = self.scheduler(sampler)

        def run(tok: torch.Tensor, prev: torch.Tensor | None) -> torch.Tensor:
            cond = self.conditioning(tok, prev)
            x = sample(lambda x_in, s: self.network(x_in, s, cond), (tok.shape[0], 3, res, res), self.config, steps,
                       sampler, generator, device, scheduler)
            if self.config.residual:
                x = x + cond[:, :3]
            return x.clamp(-1, 1)

        if not self.config.prev_frame:
            return rearrange(run(tokens.flatten(0, 1), None), "(b t) c h w -> b t c h w", b=b)
        prev = None if prev_frame is None else to_model_frames(prev_frame).to(device)
        out = []
        for i in range(t):
            prev = run(tokens[:, i], prev)
            out.append(prev)
        return torch.stack(out, dim=1)

    def generate_model_card(self, *args: Any, **kwargs: Any) -> ModelCard:
        """The ``README.md`` that ``save_pretrained`` writes (``model_card_kwargs`` come here): what this part is and
        how to load it (:func:`wm_video.models.card.part_card`), not the mixin's placeholder text."""
        return part_card(self, "decoder", **kwargs)

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path: str | Path, **kwargs: Any) -> DiffusionDecoder:
        """Load an export made by :meth:`save_pretrained` from a local folder (no hub downloads here)."""
        check_export(Path(pretrained_model_name_or_path), DecoderConfig, "decoder", REQUIRED_FIELDS)
        with quiet_hub_loads():  # huggingface_hub prints a line per local load
            return super().from_pretrained(pretrained_model_name_or_path, **kwargs)
