"""What every part's training run shares: held-out shard split, train/validation loaders, resumable fit, export.

A run folder holds ``checkpoints/`` (``last.ckpt`` plus every ``checkpoint_every_n_steps``), ``tb/`` (or the
chosen logger's files) and, at the end, ``export/`` (``config.json`` + ``model.safetensors``). Rerunning the
same command in the same folder resumes from ``checkpoints/last.ckpt``, data stream position included.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.training.trainer import TrainerConfig, build_trainer

log = logging.getLogger(__name__)


def split_shards(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Train and held-out shard indices: the last ``ceil(n * val_fraction)`` shards (>= 1 when n >= 2)."""
    if n < 2 or val_fraction <= 0:
        return list(range(n)), []
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return list(range(n - n_val)), list(range(n - n_val, n))


def make_loaders(data: str | Path, cfg: LoaderConfig, num_shards: int, val_fraction: float
                 ) -> tuple[ClipLoader, ClipLoader | None, list[int], list[int]]:
    """Training loader over the first shards and a plain, ordered validation loader over the held-out ones."""
    train_idx, val_idx = split_shards(num_shards, val_fraction)
    train = ClipLoader(data, cfg, shards=train_idx)
    val = None
    if val_idx:
        val_cfg = dataclasses.replace(cfg, resampled=False, shuffle_buffer=0, drop_last=False,
                                      num_workers=min(cfg.num_workers, len(val_idx)))
        val = ClipLoader(data, val_cfg, shards=val_idx)
    return train, val, train_idx, val_idx


def heldout_loader(data: str | Path, val_fraction: float = 0.1, batch_size: int = 8) -> tuple[ClipLoader, int]:
    """An ordered loader over the shards training held out (the same split), for evaluation scripts; and how
    many shards that is."""
    from wm_video.data.reader import load_dataset_info

    _, val_idx = split_shards(len(load_dataset_info(data).shards), val_fraction)
    if not val_idx:
        raise ValueError(f"{data}: needs at least 2 shards to hold some out")
    cfg = LoaderConfig(batch_size=batch_size, num_workers=1, shuffle_buffer=0, drop_last=False)
    return ClipLoader(data, cfg, shards=val_idx), len(val_idx)


def fit_and_export(module: Any, trainer_cfg: TrainerConfig, data: str | Path, loader_cfg: LoaderConfig,
                   num_shards: int, val_fraction: float, val_batches: int, out: str | Path, what: str,
                   callbacks: list[Any] | None = None) -> Path:
    """Fit ``module`` (whose ``.model`` has ``save_pretrained``) on ``data``, resuming from ``out``'s
    ``last.ckpt`` when there is one, and export the model to ``out/export``; returns the export folder."""
    train, val, train_idx, val_idx = make_loaders(data, loader_cfg, num_shards, val_fraction)
    trainer_cfg = dataclasses.replace(trainer_cfg, run_dir=str(out))
    trainer = build_trainer(trainer_cfg, callbacks=callbacks, limit_val_batches=val_batches if val else 0)
    last = Path(out) / "checkpoints" / "last.ckpt"
    log.info("training %s: %d train shards, %d held-out; %s", what, len(train_idx), len(val_idx),
             f"resuming from {last}" if last.exists() else "from scratch")
    trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=str(last) if last.exists() else None,
                weights_only=True)  # checkpoints hold plain values only: never unpickle code
    export = Path(out) / "export"
    if trainer.is_global_zero:
        module.model.save_pretrained(export)
    return export
