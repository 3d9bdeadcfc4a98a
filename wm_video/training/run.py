"""What every part's training run shares: held-out shard split, train/validation loaders, resumable fit, export.

A run folder holds ``checkpoints/`` (``last.ckpt`` plus every ``checkpoint_every_n_steps``), ``tb/`` (or the
chosen logger's files) and, at the end, ``export/`` (``config.json`` + ``model.safetensors``). Rerunning the
same command in the same folder resumes from the newest complete checkpoint there, data stream position
included (:mod:`wm_video.training.checkpointing`); a different model or stream config is refused, naming the
fields. A run stopped by the preemption signal exits with status 75 after its checkpoint (and, under SLURM,
after requeueing its job); it exports only when training is over.

One run at a time holds a run folder: a second one with the same ``--out`` is refused, naming the PID that holds
it (:class:`~wm_video.utils.locking.FolderLock`), and a run that starts there first removes the temporaries a
killed one left (``checkpoints/.last.ckpt.tmp-PID`` and the like). The export replaces only its own files in
``export/`` (:func:`wm_video.training.consolidate.save_part`).

Every run ends with a summary (:mod:`wm_video.training.quality`): steps done out of planned, why training stopped
(step budget, time cap, preemption), held-out metrics beside their baselines and the quality gates' verdicts,
printed and written to ``OUT/train_summary.json``; the metrics and verdicts also go to ``OUT/export/quality.json``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.training.checkpointing import (
    Preempted,
    check_resume_compatible,
    find_resume_checkpoint,
    preemption_callback,
    requeue_slurm_job,
    weights_only_loads,
)
from wm_video.training.consolidate import export_part, save_part
from wm_video.training.quality import finish_training, stop_record
from wm_video.training.strategy import DEEPSPEED
from wm_video.training.trainer import TrainerConfig, build_trainer
from wm_video.utils.atomic import clean_stale_temporaries
from wm_video.utils.locking import FolderLock

log = logging.getLogger(__name__)


def split_shards(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """Train and held-out shard indices: the last ``ceil(n * val_fraction)`` shards (>= 1 when n >= 2)."""
    if n < 2 or val_fraction <= 0:
        return list(range(n)), []
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return list(range(n - n_val)), list(range(n - n_val, n))


def make_loaders(data: str | Path, cfg: LoaderConfig, num_shards: int, val_fraction: float, rank: int | None = None,
                 world: int | None = None) -> tuple[ClipLoader, ClipLoader | None, list[int], list[int]]:
    """Training loader over the first shards and a plain, ordered validation loader over the held-out ones;
    ``rank`` / ``world``: this process's data-parallel place (default: from the launcher's environment)."""
    train_idx, val_idx = split_shards(num_shards, val_fraction)
    train = ClipLoader(data, cfg, shards=train_idx, rank=rank, world=world)
    val = None
    if val_idx:
        val_cfg = dataclasses.replace(cfg, resampled=False, shuffle_buffer=0, drop_last=False,
                                      num_workers=min(cfg.num_workers, len(val_idx)))
        val = ClipLoader(data, val_cfg, shards=val_idx, rank=rank, world=world)
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
                   callbacks: list[Any] | None = None, before_export: Callable[[Any], None] | None = None,
                   assess: Callable[[Any, Any], dict[str, Any]] | None = None) -> Path:
    """Fit ``module`` (whose ``.model`` has ``save_pretrained``) on ``data``, resuming from the newest complete
    checkpoint in ``out/checkpoints`` when there is one, and export the model to ``out/export``; returns the
    export folder. ``before_export(module.model)`` runs on every process after training and before the export
    (e.g. folding LoRA adapters into the weights; not with DeepSpeed, which exports from ``last.ckpt``).
    ``assess(model, heldout_batches)`` scores the exported model on the held-out shards for the summary and the
    quality gates (:mod:`wm_video.training.quality`), on the main process. Raises
    :class:`~wm_video.training.checkpointing.Preempted` (exit status 75) when the preemption signal stopped
    training."""
    trainer_cfg = dataclasses.replace(trainer_cfg, run_dir=str(out))
    trainer = build_trainer(trainer_cfg, callbacks=[*(callbacks or []), _validation_from_the_start()],
                            limit_val_batches=val_batches if val_fraction > 0 else 0)
    # Lightning knows each process's place before it starts the process group (launchers set it in the
    # environment; when Lightning spawns the processes itself only its own bookkeeping has it).
    rank, world = trainer.node_rank * trainer.num_devices + trainer.local_rank, trainer.world_size
    train, val, train_idx, val_idx = make_loaders(data, loader_cfg, num_shards, val_fraction, rank, world)
    if not val:
        trainer.limit_val_batches = 0
    # Rank 0 holds the folder for the whole job; the other ranks (Lightning's own children included) are its job.
    with hold_run_folder(out) if rank == 0 else contextlib.nullcontext():
        found = find_resume_checkpoint(out)
        if found:
            path, meta = found
            check_resume_compatible(path, meta, dict(module.hparams).get("config"), world)
        ckpt = str(found[0]) if found else None
        log.info("training %s: %d train shards, %d held-out; %s", what, len(train_idx), len(val_idx),
                 f"resuming from {ckpt} (step {int(found[1]['global_step'])})" if found else "from scratch")
        # Checkpoints hold plain values only: never unpickle code (DeepSpeed's own loads included).
        started = time.perf_counter()
        with weights_only_loads() if trainer_cfg.strategy in DEEPSPEED else contextlib.nullcontext():
            trainer.fit(module, train_dataloaders=train, val_dataloaders=val, ckpt_path=ckpt, weights_only=True)
        preemption = preemption_callback(trainer)
        preempted = preemption is not None and preemption.preempted
        stop = stop_record(trainer, trainer_cfg.max_steps, trainer_cfg.max_minutes, preempted,
                           time.perf_counter() - started) if trainer.is_global_zero else {}
        if preempted:
            if trainer.is_global_zero:
                finish_training(what, out, None, stop)
            if trainer.is_global_zero and trainer_cfg.requeue:
                requeue_slurm_job()
            # No rank exits before the requeue: srun --kill-on-bad-exit would end rank 0 before it requeued the job.
            trainer.strategy.barrier("requeued")
            log.warning("%s training stopped at step %d by the preemption signal; rerun to resume", what,
                        trainer.global_step)
            raise Preempted()
        export = Path(out) / "export"
        if before_export is not None and trainer_cfg.strategy not in DEEPSPEED:
            before_export(module.model)
        if trainer.is_global_zero:
            if trainer_cfg.strategy in DEEPSPEED:
                # ZeRO holds the fp32 weights sharded (stage 3 the parameters too): merge last.ckpt's shards instead
                # of saving the (partitioned, or bf16) module copy.
                export_part(Path(out) / "checkpoints" / "last.ckpt", export, overwrite=True)
            else:
                save_part(module.model, export, overwrite=True)  # a run's own export/: only its files are replaced
            # The held-out shards whole, on this process alone: the validation loader holds only this rank's part.
            heldout = None
            if val_idx:
                heldout_cfg = dataclasses.replace(loader_cfg, resampled=False, shuffle_buffer=0, num_workers=0,
                                                  drop_last=False)
                heldout = ClipLoader(data, heldout_cfg, shards=val_idx, rank=0, world=1)
            # ZeRO holds the weights sharded across processes: score the merged export instead.
            model = type(module.model).from_pretrained(export) if trainer_cfg.strategy in DEEPSPEED else module.model
            on_gpu = torch.cuda.is_available() and trainer_cfg.accelerator != "cpu"
            finish_training(what, out, export, stop, assess, model, heldout, "cuda" if on_gpu else "cpu")
        trainer.strategy.barrier("export")
        return export


@contextlib.contextmanager
def hold_run_folder(out: str | Path) -> Iterator[None]:
    """Hold run folder ``out`` (raises :class:`~wm_video.utils.locking.FolderInUse`, naming the holder's PID, when
    another run has it) and remove the temporaries that dead processes left in it and in its ``checkpoints/``."""
    with FolderLock(out, "run folder"):
        for folder in (Path(out), Path(out) / "checkpoints"):
            for stale in clean_stale_temporaries(folder):
                log.info("removed %s, left by a run that was killed while writing it", stale)
        yield


def _validation_from_the_start() -> Any:
    from lightning.pytorch.callbacks import Callback

    class ValidationFromTheStart(Callback):
        """Every validation run reads the same first ``val_batches`` held-out batches: a run cut short by
        ``limit_val_batches`` would otherwise leave the stream where it stopped, and the next run (or a resumed
        run, which skips the sanity check) would score other clips."""

        def on_validation_start(self, trainer, pl_module) -> None:
            loaders = trainer.val_dataloaders
            for loader in loaders if isinstance(loaders, list | tuple) else [loaders]:
                if hasattr(loader, "set_epoch"):
                    loader.set_epoch(0)

    return ValidationFromTheStart()
