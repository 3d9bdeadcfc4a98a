"""One Lightning Trainer set-up, built from :class:`TrainerConfig`, for every model's training.

Model code stays plain PyTorch; each part's LightningModule wraps its ``compute_loss(batch)`` and is handed
to :func:`build_trainer`. Precision ``auto`` means bf16-mixed on GPUs and fp32 on CPUs. On a terminal the
progress bar shows; under SLURM batch jobs (or ``progress: log``) plain log lines are printed instead, since
a redrawn bar turns into noise in a log file.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import torch

from wm_video.utils import interactive

log = logging.getLogger(__name__)


@dataclass
class TrainerConfig:
    """How to train, independent of what is trained.

    Args:
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: devices per node (``auto``, a count, or ``-1`` for all).
        num_nodes: nodes (SLURM sets the rest of the topology).
        strategy: ``auto``, ``ddp`` (the scale-out work adds DeepSpeed variants).
        precision: ``auto`` (bf16-mixed on GPU, 32-true on CPU), or any Lightning precision string.
        max_steps: optimizer steps to train for.
        max_minutes: also stop after this much wall-clock training time (None: no limit).
        val_check_interval: run validation every this many training batches (None: once per epoch).
        limit_val_batches: validation batches per validation run.
        log_every_n_steps: logging interval in steps.
        logger: ``tensorboard`` (default), ``wandb`` (needs the wandb package), ``csv`` or ``none``.
        wandb_project: project name when ``logger`` is ``wandb``.
        run_dir: folder for logs and checkpoints of this run.
        checkpoint_every_n_steps: save a checkpoint this often (also ``last.ckpt``).
        keep_last_k: checkpoints kept besides ``last.ckpt``.
        grad_clip: gradient norm clip (None: off).
        accumulate_grad_batches: batches per optimizer step.
        progress: ``auto`` (bar on terminals, log lines in batch jobs), ``bar`` or ``log``.
        seed: global seed for torch, numpy and Python.
    """

    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    strategy: str = "auto"
    precision: str = "auto"
    max_steps: int = 10_000
    max_minutes: float | None = None
    val_check_interval: int | None = None
    limit_val_batches: int = 16
    log_every_n_steps: int = 50
    logger: str = "tensorboard"
    wandb_project: str = "wm-video"
    run_dir: str = "runs/default"
    checkpoint_every_n_steps: int = 1000
    keep_last_k: int = 3
    grad_clip: float | None = 1.0
    accumulate_grad_batches: int = 1
    progress: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        if self.logger not in ("tensorboard", "wandb", "csv", "none"):
            raise ValueError(f"trainer: field 'logger' must be tensorboard, wandb, csv or none, got {self.logger!r}")
        if self.progress not in ("auto", "bar", "log"):
            raise ValueError(f"trainer: field 'progress' must be auto, bar or log, got {self.progress!r}")


def resolve_precision(cfg: TrainerConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    on_gpu = cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())
    return "bf16-mixed" if on_gpu else "32-true"


def make_logger(cfg: TrainerConfig) -> Any:
    from lightning.pytorch import loggers

    if cfg.logger == "none":
        return False
    if cfg.logger == "csv":
        return loggers.CSVLogger(cfg.run_dir, name="logs", version="")
    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401
        except ImportError as e:
            raise ImportError("trainer.logger=wandb needs the wandb package: pip install wandb") from e
        return loggers.WandbLogger(project=cfg.wandb_project, save_dir=cfg.run_dir)
    return loggers.TensorBoardLogger(cfg.run_dir, name="tb", version="")


def _log_lines_callback() -> Any:
    from lightning.pytorch.callbacks import Callback

    class LogLines(Callback):
        """One line per ``log_every_n_steps``: step, rate and the logged metrics; for batch-job logs."""

        def __init__(self) -> None:
            self.t0, self.step0 = time.perf_counter(), 0

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if not trainer.is_global_zero or step == self.step0 or step % max(trainer.log_every_n_steps, 1):
                return
            now = time.perf_counter()
            rate = (step - self.step0) / max(now - self.t0, 1e-9)
            self.t0, self.step0 = now, step
            metrics = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                               if torch.is_tensor(v) and v.numel() == 1)
            log.warning("step %d/%d  %.2f steps/s  %s", step, trainer.max_steps, rate, metrics)

    return LogLines()


def _stream_lookahead_callback() -> Any:
    from lightning.pytorch.callbacks import Callback

    class StreamLookahead(Callback):
        """Lightning's fit loop fetches one batch ahead; tell stateful loaders, so the stream position saved
        in checkpoints is the one after the last trained batch, not after the one held in hand."""

        def on_train_start(self, trainer, pl_module) -> None:
            loaders = trainer.train_dataloader
            for loader in loaders.values() if isinstance(loaders, dict) else (
                    loaders if isinstance(loaders, list | tuple) else [loaders]):
                if hasattr(loader, "lookahead"):
                    loader.lookahead = 1

    return StreamLookahead()


def _save_last_on_end_callback(run_dir: str) -> Any:
    from lightning.pytorch.callbacks import Callback

    class SaveLastOnEnd(Callback):
        """Refresh ``checkpoints/last.ckpt`` when training ends for any reason (``max_steps`` between two
        checkpoint steps, ``max_minutes``, a stop signal), so rerunning the command resumes from the last
        trained step. Written to a temporary name first, then renamed: a crash mid-write leaves the old one."""

        def on_train_end(self, trainer, pl_module) -> None:
            last = Path(run_dir) / "checkpoints" / "last.ckpt"
            tmp = last.with_name("last.ckpt.tmp")
            trainer.save_checkpoint(str(tmp))
            if trainer.is_global_zero:
                os.replace(tmp, last)
            trainer.strategy.barrier("save_last_on_end")

    return SaveLastOnEnd()


def build_trainer(cfg: TrainerConfig, callbacks: list[Any] | None = None, **overrides: Any) -> Any:
    """A ``lightning.Trainer`` for ``cfg``; ``callbacks`` are added to the standard ones (checkpointing,
    learning-rate monitor, progress display); ``overrides`` go to the Trainer as they are."""
    import lightning as L
    from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint, TQDMProgressBar

    cfg.validate()
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg)
    show_bar = cfg.progress == "bar" or (cfg.progress == "auto" and interactive())
    cbs: list[Any] = [
        ModelCheckpoint(dirpath=str(Path(cfg.run_dir) / "checkpoints"), filename="step-{step:08d}",
                        every_n_train_steps=cfg.checkpoint_every_n_steps, save_top_k=cfg.keep_last_k,
                        monitor="step", mode="max", save_last=True, auto_insert_metric_name=False),
    ]
    if logger:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    cbs.append(TQDMProgressBar() if show_bar else _log_lines_callback())
    cbs.append(_stream_lookahead_callback())
    cbs.append(_save_last_on_end_callback(cfg.run_dir))
    cbs += callbacks or []
    kwargs: dict[str, Any] = dict(
        accelerator=cfg.accelerator, devices=cfg.devices, num_nodes=cfg.num_nodes, strategy=cfg.strategy,
        precision=resolve_precision(cfg), max_steps=cfg.max_steps, val_check_interval=cfg.val_check_interval,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None, check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches, log_every_n_steps=cfg.log_every_n_steps, logger=logger,
        callbacks=cbs, gradient_clip_val=cfg.grad_clip, accumulate_grad_batches=cfg.accumulate_grad_batches,
        enable_progress_bar=show_bar, default_root_dir=cfg.run_dir, enable_model_summary=show_bar,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
