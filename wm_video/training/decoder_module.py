"""Training the diffusion decoder on frame shards, with the frozen tokenizer computing tokens on the fly.

    wm-video train decoder --config configs/decoder/atari_small.yaml --data data/breakout \
        --tokenizer runs/tok_breakout/export --out runs/dec_breakout

The tokenizer is held outside the module's parameters (it is neither trained nor checkpointed; the decoder
keeps its own copy of the codebook and decoder stack). Sample grids (ground truth, the VQ decoder's render,
1-step and N-step diffusion renders) go to TensorBoard; the run ends with an export in ``OUT/export`` and a summary
whose quality gate sets the held-out PSNR of the 1-step render beside the VQ decoder's (``quality.*``, see
:mod:`wm_video.training.quality`).
Rerunning the command in the same ``--out`` resumes from ``checkpoints/last.ckpt``; resuming with a different
tokenizer is refused.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from wm_video.data.loader import LoaderConfig
from wm_video.data.reader import load_dataset_info
from wm_video.models.decoder import DecoderConfig, DiffusionDecoder
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.training.ema import EMA_DECAY, drop_ema_from_checkpoint, ema_callbacks
from wm_video.training.optim import OptimConfig, build_optimizer
from wm_video.training.quality import QualityConfig, assess_decoder
from wm_video.training.run import fit_and_export
from wm_video.training.tokenizer_module import sample_frames
from wm_video.training.trainer_config import TrainerConfig


@dataclass
class DecoderTrainConfig:
    """A diffusion decoder training run.

    Args:
        model: the decoder (its ``tokenizer`` fields are filled from ``--tokenizer``).
        trainer: Trainer settings (devices, precision, steps, logging, checkpoints).
        loader: streaming settings for the training shards.
        optim: optimizer and schedule.
        frames_per_clip: frames taken from each clip per step (consecutive when the decoder conditions on the
            previous frame, which then serves frames_per_clip - 1 targets).
        val_fraction: None: validate on the held-out episodes ``dataset.json`` records (the last shards of one
            written before splits were recorded); a number: the last that fraction of the episodes instead; 0:
            no validation (:mod:`wm_video.data.split`).
        val_batches: validation batches per validation run.
        grid_steps: sampling steps of the many-step row of the logged sample grid.
        image_every_n_val: log a sample grid every this many validation runs.
        quality: floors of the end-of-training quality gate (1-step render against the VQ decoder).
        ema_decay: keep an exponential moving average of the weights with this decay (warmed up, see
            :mod:`wm_video.training.ema`), validate on it and export it instead of the last step's weights; 0: off.
    """

    model: DecoderConfig = field(default_factory=DecoderConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    frames_per_clip: int = 2
    val_fraction: float | None = None
    val_batches: int = 4
    grid_steps: int = 8
    image_every_n_val: int = 1
    quality: QualityConfig = field(default_factory=QualityConfig)
    ema_decay: float = EMA_DECAY


def consecutive_frames(frames: torch.Tensor, k: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """The same random ``k``-frame window of every clip: ``(b, t, ...)`` -> ``(b, k, ...)``."""
    t = frames.shape[1]
    if k >= t:
        return frames
    start = int(torch.randint(0, t - k + 1, (1,), generator=generator))
    return frames[:, start:start + k]


def sample_grid(rows: list[torch.Tensor], n: int = 8) -> torch.Tensor:
    """Rows of frames ``(m, 3, h, w)`` in [-1, 1], ``n`` wide, stacked: ``(3, rows*h, n*w)`` in [0, 1]."""
    return (torch.cat([torch.cat(list(r[:n].float().clamp(-1, 1)), dim=-1) for r in rows], dim=-2) + 1) / 2


class DecoderModule(L.LightningModule):
    """Thin Lightning wrapper around ``DiffusionDecoder.compute_loss``; tokens come from the frozen tokenizer."""

    def __init__(self, cfg: DecoderTrainConfig, tokenizer: VQTokenizer) -> None:
        super().__init__()
        self.model = DiffusionDecoder.from_tokenizer(tokenizer, cfg.model)
        self.cfg = dataclasses.replace(cfg, model=self.model.config)
        self._tokenizer = [tokenizer.eval().requires_grad_(False)]  # a list: not a submodule, not checkpointed
        self.save_hyperparameters({"config": dataclasses.asdict(self.cfg)})  # plain values: weights_only-safe
        self._val_runs = 0

    @property
    def tokenizer(self) -> VQTokenizer:
        tok = self._tokenizer[0]
        if next(tok.parameters()).device != self.device:
            self._tokenizer[0] = tok = tok.to(self.device)
        return tok

    def with_tokens(self, batch: dict[str, Any]) -> dict[str, Any]:
        if "tokens" not in batch:
            with torch.no_grad():
                batch = {**batch, "tokens": self.tokenizer.tokenize(to_model_frames(batch["frames"]))}
        return batch

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        pick = consecutive_frames if self.cfg.model.prev_frame else sample_frames
        batch = self.with_tokens({"frames": pick(batch["frames"], self.cfg.frames_per_clip)})
        loss, logs = self.model.compute_loss(batch)
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        batch = self.with_tokens({"frames": consecutive_frames(batch["frames"], 4)})
        _, logs = self.model.compute_loss(batch)
        self.log_dict({f"val/{k}": v for k, v in logs.items()})
        if batch_idx == 0 and self._val_runs % self.cfg.image_every_n_val == 0:
            self._log_grid(batch)

    def on_validation_epoch_end(self) -> None:
        self._val_runs += 1

    def _log_grid(self, batch: dict[str, Any]) -> None:
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_image"):
            return
        tokens = batch["tokens"][:, :1]  # first frame of each clip (rendered as a first frame)
        gen = torch.Generator(device=self.device).manual_seed(0)
        rows = [to_model_frames(batch["frames"][:, 0]), self.tokenizer.detokenize(tokens)[:, 0].clamp(-1, 1)]
        rows += [self.model.render(tokens, num_inference_steps=s, generator=gen)[:, 0]
                 for s in (1, self.cfg.grid_steps)]
        experiment.add_image("val/truth_vq_1step_nstep", sample_grid(rows), self.global_step)

    def configure_callbacks(self) -> list[Any]:
        return ema_callbacks(self.cfg.ema_decay, self.cfg.trainer.strategy)  # the EMA of the weights, when on

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.cfg.ema_decay:
            drop_ema_from_checkpoint(checkpoint)
        saved = checkpoint.get("hyper_parameters", {}).get("config", {}).get("model", {})
        mine = self.cfg.model.tokenizer_fingerprint
        if saved.get("tokenizer_fingerprint") not in (None, mine):
            raise ValueError(f"resuming: the checkpoint's decoder was trained on another tokenizer (field "
                             f"model.tokenizer_fingerprint: checkpoint {saved['tokenizer_fingerprint']}, "
                             f"--tokenizer {mine}); use a new --out or the original tokenizer")

    def configure_optimizers(self) -> Any:
        opt, sched = build_optimizer(self, self.cfg.optim, self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def train_decoder(cfg: DecoderTrainConfig, data: str | Path, tokenizer: str | Path, out: str | Path) -> Path:
    """Train on the frame shards in ``data`` with tokens from the tokenizer export ``tokenizer``, into run folder
    ``out``; resumes from ``out/checkpoints/last.ckpt``; returns the export folder."""
    info = load_dataset_info(data)
    L.seed_everything(cfg.trainer.seed, verbose=False)  # weights init from trainer.seed, not torch's random start
    if info.frame_storage == "tokens":
        raise ValueError(f"{data} holds tokens; the decoder trains on frames (pass the dataset the tokens were made "
                         f"from: {info.source.get('tokenized_from', 'see its dataset.json')})")
    tok = VQTokenizer.from_pretrained(tokenizer)
    res = tok.config.resolution
    if info.resolution != [res, res]:
        raise ValueError(f"{data}: frames are {info.resolution[0]}x{info.resolution[1]} but the tokenizer {tokenizer} "
                         f"is built for {res}x{res}")
    if cfg.model.prev_frame and min(cfg.frames_per_clip, info.clip_len) < 2:
        raise ValueError("decoder: model.prev_frame needs frames_per_clip >= 2 and clips of >= 2 frames")
    return fit_and_export(DecoderModule(cfg, tok), cfg.trainer, data, cfg.loader, cfg.val_fraction,
                          cfg.val_batches, out, "decoder",
                          assess=lambda model, heldout: assess_decoder(model, tok, heldout, cfg.quality,
                                                                        seed=cfg.trainer.seed))
