"""One Lightning Trainer set-up, built from :class:`TrainerConfig`, for every model's training.

Model code stays plain PyTorch; each part's LightningModule wraps its ``compute_loss(batch)`` and is handed
to :func:`build_trainer`. Everything about scale is applied here, from the config, in this order (torchtitan's):
activation checkpointing and ``torch.compile`` on the plain model (:mod:`.parallelize`), then the strategy's
wrapping (:mod:`.strategy`: DDP or DeepSpeed ZeRO 1/2/3 with offload variants), precision, gradient accumulation
and clipping; fused AdamW on CUDA comes from :mod:`.optim`. Precision ``auto`` means bf16-mixed on GPUs and fp32
on CPUs. A strategy the hardware cannot run, or a launcher (``srun``, ``torchrun``) whose process count does not
match ``devices`` x ``num_nodes``, is an error before any process group starts.

Checkpoints (:mod:`.checkpointing`): every ``checkpoint_every_n_steps``, on the preemption signal and at the end,
written atomically; the last ``keep_last_k`` are kept besides ``last.ckpt``. On a terminal the progress bar
shows; under SLURM batch jobs (or ``progress: log``) plain INFO log lines of logger ``wm_video.training.trainer``
are printed instead (shown by the CLI's default level), since a redrawn bar turns into noise in a log file.
"""

from __future__ import annotations

import logging
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.pytorch import loggers
from lightning.pytorch.callbacks import Callback, LearningRateMonitor, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.plugins.environments import SLURMEnvironment

from wm_video.training import checkpointing
from wm_video.training.parallelize import parallelize_callback
from wm_video.training.strategy import (
    build_strategy,
    check_launch,
    check_strategy,
    launcher_topology,
    on_gpu,
    resolve_devices,
)
from wm_video.training.trainer_config import DEEPSPEED, TrainerConfig
from wm_video.utils import interactive
from wm_video.utils.logs import adopt_library_loggers

log = logging.getLogger(__name__)


def resolve_precision(cfg: TrainerConfig) -> str:
    if cfg.precision != "auto":
        return cfg.precision
    return "bf16-mixed" if on_gpu(cfg) else "32-true"


def make_logger(cfg: TrainerConfig) -> Any:
    if cfg.logger == "none":
        return False
    if cfg.logger == "csv":
        return loggers.CSVLogger(cfg.run_dir, name="logs", version="")
    if cfg.logger == "wandb":
        try:
            import wandb  # noqa: F401  (optional: the 'wandb' extra)
        except ImportError as e:
            raise ImportError("trainer.logger=wandb needs the wandb package: pip install wandb") from e
        return loggers.WandbLogger(project=cfg.wandb_project, save_dir=cfg.run_dir)
    return loggers.TensorBoardLogger(cfg.run_dir, name="tb", version="")


def _log_lines_callback() -> Any:
    class LogLines(Callback):
        """One line per ``log_every_n_steps``: step, rate and the logged metrics; for batch-job logs."""

        def __init__(self) -> None:
            self.t0, self.step0 = time.perf_counter(), 0

        def on_train_start(self, trainer, pl_module) -> None:
            dist = torch.distributed
            if trainer.is_global_zero and dist.is_available() and dist.is_initialized():
                log.info("distributed: started with %d processes (%d node(s)), backend %s", dist.get_world_size(),
                         trainer.num_nodes, dist.get_backend())

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            step = trainer.global_step
            if not trainer.is_global_zero or step == self.step0 or step % max(trainer.log_every_n_steps, 1):
                return
            now = time.perf_counter()
            rate = (step - self.step0) / max(now - self.t0, 1e-9)
            self.t0, self.step0 = now, step
            metrics = " ".join(f"{k}={float(v):.4g}" for k, v in sorted(trainer.callback_metrics.items())
                               if torch.is_tensor(v) and v.numel() == 1)
            log.info("step %d/%d  %.2f steps/s  %s", step, trainer.max_steps, rate, metrics)

    return LogLines()


def _stream_lookahead_callback() -> Any:
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


def build_trainer(cfg: TrainerConfig, callbacks: list[Any] | None = None, **overrides: Any) -> Any:
    """A ``lightning.Trainer`` for ``cfg``; ``callbacks`` are added to the standard ones (checkpointing, resume
    and preemption, parallelism switches, learning-rate monitor, progress display); ``overrides`` go to the
    Trainer as they are. Raises :class:`~wm_video.training.strategy.LaunchError` for a strategy or launch this
    machine cannot run, before any process group starts."""
    cfg.validate()
    check_strategy(cfg)  # imports deepspeed for its strategies
    check_launch(cfg)
    adopt_library_loggers()  # Lightning (and DeepSpeed) set up their loggers at import: one handler, as the CLI's
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    Path(cfg.run_dir).mkdir(parents=True, exist_ok=True)
    logger = make_logger(cfg)
    show_bar = cfg.progress == "bar" or (cfg.progress == "auto" and interactive())
    cbs: list[Any] = [
        ModelCheckpoint(dirpath=str(Path(cfg.run_dir) / "checkpoints"), filename="step-{step:08d}",
                        every_n_train_steps=cfg.checkpoint_every_n_steps, save_top_k=cfg.keep_last_k,
                        monitor="step", mode="max", save_last=True, auto_insert_metric_name=False,
                        enable_version_counter=False),  # a resumed run overwrites last.ckpt, no last-v1.ckpt
    ]
    if logger:
        cbs.append(LearningRateMonitor(logging_interval="step"))
    cbs.append(TQDMProgressBar() if show_bar else _log_lines_callback())
    cbs.append(_stream_lookahead_callback())
    cbs += checkpointing.callbacks(cfg.run_dir, cfg.seed, cfg.preemption_signal)
    if cfg.activation_checkpointing or cfg.compile:
        cbs.append(parallelize_callback(cfg.activation_checkpointing, cfg.compile, cfg.compile_mode))
    cbs += callbacks or []
    plugins: list[Any] = []
    if cfg.strategy not in DEEPSPEED:  # DeepSpeed writes its own folders (atomically, see strategy.py)
        plugins.append(checkpointing.atomic_checkpoint_io())
    topo = launcher_topology()
    if topo is not None and topo[0] == "srun":
        # Topology from SLURM; no Lightning requeue handler: the Preemption callback checkpoints at a step boundary.
        plugins.append(SLURMEnvironment(auto_requeue=False))
    kwargs: dict[str, Any] = dict(
        accelerator=cfg.accelerator, devices=resolve_devices(cfg), num_nodes=cfg.num_nodes,
        strategy=build_strategy(cfg), plugins=plugins,
        precision=resolve_precision(cfg), max_steps=cfg.max_steps, val_check_interval=cfg.val_check_interval,
        max_time=timedelta(minutes=cfg.max_minutes) if cfg.max_minutes else None, check_val_every_n_epoch=None,
        limit_val_batches=cfg.limit_val_batches, log_every_n_steps=cfg.log_every_n_steps, logger=logger,
        callbacks=cbs, gradient_clip_val=cfg.grad_clip, accumulate_grad_batches=cfg.accumulate_grad_batches,
        enable_progress_bar=show_bar, default_root_dir=cfg.run_dir, enable_model_summary=show_bar,
    )
    kwargs.update(overrides)
    return L.Trainer(**kwargs)
