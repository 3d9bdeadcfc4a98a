"""Training the VQ tokenizer: the config of a run, the LightningModule around ``compute_loss``, and the run itself.

    wm-video train tokenizer --config configs/tokenizer/atari_small.yaml --data data/pong --out runs/tok_pong

Held-out validation uses the dataset's held-out episodes (:mod:`wm_video.data.split`; several datasets mixed at
weights each keep theirs); reconstruction grids go to TensorBoard; the run ends with an export (``OUT/export``:
config.json + model.safetensors) and a summary whose quality gates check held-out codebook usage and reconstruction
PSNR against floors (``quality.*``, see :mod:`wm_video.training.quality`). Rerunning the command in the same
``--out`` resumes from ``checkpoints/last.ckpt``. With ``--init-from`` it fine-tunes a tokenizer export, codebook
frozen (:mod:`wm_video.training.tokenizer_finetune`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import lightning as L
import torch

from wm_video.data.loader import check_mixable
from wm_video.data.reader import load_dataset_info
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.losses import PatchDiscriminator, PerceptualLoss, foreground_mask
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.training.ema import drop_ema_from_checkpoint, ema_callbacks
from wm_video.training.optim import build_optimizer
from wm_video.training.quality import assess_tokenizer
from wm_video.training.run import DataMix, data_roots, fit_and_export
from wm_video.training.tokenizer_config import TokenizerTrainConfig
from wm_video.training.tokenizer_finetune import (
    ModelFields,
    assess_finetune,
    finetune_config,
    start_from_export,
)


def sample_frames(frames: torch.Tensor, k: int, *others: torch.Tensor, generator: torch.Generator | None = None
                  ) -> Any:
    """``k`` random frames of each clip: ``(b, t, c, h, w)`` -> ``(b, k, c, h, w)``; with ``others`` (tensors whose
    first two dimensions are ``(b, t)`` too), the same frames of each, returned as a tuple after the frames."""
    b, t = frames.shape[:2]
    if k >= t:
        return (frames, *others) if others else frames
    idx = torch.stack([torch.randperm(t, generator=generator)[:k] for _ in range(b)])  # (b, k)
    picked = [x[torch.arange(b)[:, None], idx] for x in (frames, *others)]
    return tuple(picked) if others else picked[0]


def sample_pairs(frames: torch.Tensor, k: int, *others: torch.Tensor, generator: torch.Generator | None = None
                 ) -> Any:
    """As :func:`sample_frames`, but ``k`` frames made of ``k // 2`` pairs of consecutive frames (at least one pair),
    in time order within each pair, for the temporal stability loss: ``(b, t, ...)`` -> ``(b, 2 * max(1, k // 2),
    ...)``. Pairs start at distinct random frames."""
    b, t = frames.shape[:2]
    n = max(1, k // 2)
    starts = torch.stack([torch.randperm(t - 1, generator=generator)[:n] for _ in range(b)])  # (b, n)
    idx = torch.stack([starts, starts + 1], -1).flatten(1)  # (b, 2n): s0, s0+1, s1, s1+1, ...
    picked = [x[torch.arange(b)[:, None], idx] for x in (frames, *others)]
    return tuple(picked) if others else picked[0]


def recon_grid(frames: torch.Tensor, recon: torch.Tensor, n: int = 8) -> torch.Tensor:
    """Originals above reconstructions, ``n`` frames wide: ``(3, 2h, n*w)`` in [0, 1] for TensorBoard."""
    x = frames.flatten(0, 1)[:n].float()  # (n, c, h, w), [-1, 1]
    y = recon.flatten(0, 1)[:n].float().clamp(-1, 1)
    rows = [torch.cat(list(v), dim=-1) for v in (x, y)]  # (c, h, n*w) each
    return (torch.cat(rows, dim=-2) + 1) / 2


class TokenizerModule(L.LightningModule):
    """Thin Lightning wrapper: the loss is the model's ``compute_loss``; it holds the training-only networks
    (perceptual features, patch discriminator), which the export leaves out."""

    def __init__(self, cfg: TokenizerTrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = VQTokenizer(cfg.model)
        self.perceptual = None
        if cfg.model.perceptual_weight > 0:
            self.perceptual = PerceptualLoss(cfg.model.perceptual_weights)
        self.disc = None
        if cfg.model.disc_weight > 0:
            self.disc = PatchDiscriminator(cfg.model.disc_channels, cfg.model.disc_layers)
        self.save_hyperparameters({"config": dataclasses.asdict(cfg)})  # plain values: weights_only-safe
        self._val_runs = 0

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        frames, k = batch["frames"], self.cfg.frames_per_clip
        # consecutive pairs for the temporal loss and for a decoder that reads the previous frame
        pairs = self.cfg.model.temporal_weight > 0 or self.cfg.model.previous_frame
        sample = sample_pairs if pairs else sample_frames
        if self.cfg.model.foreground_weight > 0:
            # The foreground mask needs the whole clip (its median is the background), so it is taken first.
            fg = foreground_mask(to_model_frames(frames, batch.get("key")), self.cfg.model.foreground_threshold)
            frames, fg = sample(frames, k, fg)
            batch = {**batch, "frames": frames, "foreground": fg}
        else:
            batch = {**batch, "frames": sample(frames, k)}
        disc = self.disc if self.disc is not None and self.global_step >= self.cfg.model.disc_start else None
        loss, logs = self.model.compute_loss(batch, self.perceptual, disc)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, prog_bar=False)
        self.log("train/frames", float(batch["frames"].shape[0] * batch["frames"].shape[1]), reduce_fx="sum")
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        _, logs = self.model.compute_loss(batch)
        self.log_dict({f"val/{k}": v for k, v in logs.items()})
        if batch_idx == 0 and self._val_runs % self.cfg.image_every_n_val == 0:
            self._log_grid(batch)

    def on_validation_epoch_end(self) -> None:
        self._val_runs += 1

    def _log_grid(self, batch: dict[str, Any]) -> None:
        logger = self.logger
        if logger is None or not hasattr(getattr(logger, "experiment", None), "add_image"):
            return
        frames = to_model_frames(batch["frames"])
        with torch.no_grad():
            recon = self.model(frames).recon
        logger.experiment.add_image("val/reconstruction", recon_grid(frames, recon), self.global_step)

    def configure_callbacks(self) -> list[Any]:
        return ema_callbacks(self.cfg.ema_decay, self.cfg.trainer.strategy)  # the EMA of the weights, when on

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        if not self.cfg.ema_decay:
            drop_ema_from_checkpoint(checkpoint)

    def configure_optimizers(self) -> Any:
        # One optimizer over tokenizer and discriminator: compute_loss gives each side only its own gradients,
        # and the discriminator's parameters get none (so AdamW leaves them be) before disc_start.
        opt, sched = build_optimizer(self, self.cfg.optim, self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def train_tokenizer(cfg: TokenizerTrainConfig, data: str | Path | DataMix, out: str | Path,
                    model_fields: ModelFields | None = None) -> Path:
    """Train on the shards in ``data`` (a dataset folder, or a :class:`~wm_video.training.run.DataMix` of several
    sharing one resolution) into run folder ``out``; resumes from ``out/checkpoints/last.ckpt``; returns the export
    folder. With ``cfg.finetune.init_from``, fine-tune that export (:mod:`.tokenizer_finetune`): its model config,
    with the training-time ``model_fields`` the YAML and overrides set (where, fields), replaces ``cfg.model``."""
    if cfg.finetune.init_from:
        cfg = finetune_config(cfg, model_fields)
    elif cfg.finetune.freeze:
        raise ValueError("finetune.freeze keeps parts of a pretrained tokenizer fixed: name it with --init-from DIR")
    roots = data_roots(data)
    infos = [load_dataset_info(root) for root in roots]
    check_mixable(list(zip(roots, infos, strict=True)))
    L.seed_everything(cfg.trainer.seed, verbose=False)  # weights init from trainer.seed, not torch's random start
    res, info = cfg.model.resolution, infos[0]
    if info.resolution != [res, res]:
        raise ValueError(f"{roots[0]}: frames are {info.resolution[0]}x{info.resolution[1]} but the tokenizer is built "
                         f"for {res}x{res} (set model.resolution)")
    module = TokenizerModule(cfg)
    if cfg.finetune.init_from:
        start_from_export(module.model, cfg)  # the export's weights, the codebook (and finetune.freeze) fixed
    return fit_and_export(module, cfg.trainer, data, cfg.loader, cfg.val_fraction, cfg.val_batches, out, "tokenizer",
                          assess=assess_finetune(cfg, cfg.quality) if cfg.finetune.init_from else
                          lambda model, heldout: assess_tokenizer(model, heldout, cfg.quality))
