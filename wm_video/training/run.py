"""What every part's training run shares: train/validation loaders over the held-out split, resumable fit, export.

The split is the data layer's (:mod:`wm_video.data.split`): the held-out episodes ``dataset.json`` records (the
last shards of a dataset written before splits were recorded); the log names the rule used. A :class:`DataMix`
trains on several datasets at once, each validated on its own held-out clips, in one clip stream. A domain mixture
(:class:`~wm_video.data.mixture.MixtureSpec`, for datasets whose action spaces differ) trains on a
:class:`~wm_video.data.mixture.DomainMixLoader` (each batch from one dataset, ``batch["domain"]`` its name) and
validates on one loader per domain (:class:`DomainBatches`, every batch tagged with its domain), in the spec's
order; the held-out assessment at the end reads the domains' held-out batches in turn (:class:`RoundRobin`).

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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Callback

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.mixture import DomainMixLoader, MixtureSpec, heldout_loaders
from wm_video.data.split import Split, split_dataset
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
from wm_video.training.trainer import build_trainer
from wm_video.training.trainer_config import DEEPSPEED, TrainerConfig
from wm_video.utils.atomic import clean_stale_temporaries
from wm_video.utils.locking import FolderLock

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DataMix:
    """Several datasets trained on together: clips of ``roots[i]`` drawn at rate ``weights[i] / sum(weights)``,
    each dataset keeping its own held-out split."""

    roots: tuple[str, ...]
    weights: tuple[float, ...]


Data = str | Path | DataMix | MixtureSpec


def data_roots(data: Data) -> list[str]:
    if isinstance(data, MixtureSpec):
        return [str(src.path) for src in data.sources]
    return list(data.roots) if isinstance(data, DataMix) else [str(data)]


class DomainBatches:
    """A domain's held-out :class:`ClipLoader` whose batches carry ``"domain"``, like the mixture's training
    batches; ``set_epoch`` is the loader's."""

    def __init__(self, loader: ClipLoader, domain: str) -> None:
        self.loader, self.domain = loader, domain

    def __iter__(self) -> Iterator[dict[str, Any]]:
        for batch in self.loader:
            batch["domain"] = self.domain
            yield batch

    def set_epoch(self, epoch: int) -> None:
        self.loader.set_epoch(epoch)


class RoundRobin:
    """Batches of several loaders in turn (one of each, then the next of each, ...), until all are spent: a bounded
    read (the quality gates' ``eval_batches``) then sees every domain."""

    def __init__(self, loaders: list[Any]) -> None:
        self.loaders = loaders

    def __iter__(self) -> Iterator[dict[str, Any]]:
        iters = [iter(loader) for loader in self.loaders]
        while iters:
            for it in list(iters):
                batch = next(it, None)
                if batch is None:
                    iters.remove(it)
                else:
                    yield batch


def domain_heldout(spec: MixtureSpec, cfg: LoaderConfig, val_fraction: float | None, rank: int | None = None,
                   world: int | None = None) -> list[DomainBatches]:
    """One ordered loader of tagged batches per domain holding clips out, in the spec's order."""
    return [DomainBatches(loader, name)
            for name, loader in heldout_loaders(spec, cfg, val_fraction, rank=rank, world=world).items()]


def make_loaders(data: Data, cfg: LoaderConfig, val_fraction: float | None = None, rank: int | None = None,
                 world: int | None = None, what: str = "training") -> tuple[Any, Any, list[Split]]:
    """Training loader over each dataset's training clips (mixed at the weights of a :class:`DataMix`) and a
    plain, ordered validation loader over their held-out clips (None when nothing is held out), with the splits
    (:mod:`wm_video.data.split`; ``val_fraction``: None for the recorded ones); ``rank`` / ``world``: this
    process's data-parallel place (default: from the launcher's environment). A :class:`MixtureSpec` gives a
    :class:`DomainMixLoader` and a list of validation loaders, one per domain (None when no domain holds out)."""
    if isinstance(data, MixtureSpec):
        mix = DomainMixLoader(data, cfg, rank=rank, world=world, side="train", val_fraction=val_fraction)
        if not rank:
            for split, name in zip(mix.splits, data.names, strict=True):
                split.log(f"{what}, domain {name!r}")
        return mix, domain_heldout(data, cfg, val_fraction, rank, world) or None, mix.splits
    splits = [split_dataset(root, val_fraction) for root in data_roots(data)]
    for split in splits:
        if not rank:
            split.log(what)
        if not split.train.shards:
            raise ValueError(f"{split.root}: nothing left to train on ({split.rule})")
    weights = list(data.weights) if isinstance(data, DataMix) else None
    train = ClipLoader([s.train for s in splits], cfg, rank=rank, world=world, weights=weights)
    return train, heldout_clips(splits, cfg, rank, world), splits


def heldout_clips(splits: list[Split], cfg: LoaderConfig, rank: int | None = None, world: int | None = None
                  ) -> ClipLoader | None:
    """An ordered loader over the splits' held-out clips, one dataset after another; None when there are none."""
    parts = [s.heldout for s in splits if s.heldout_clips]
    if not parts:
        return None
    shards = sum(len(p.shards) for p in parts)
    val_cfg = dataclasses.replace(cfg, resampled=False, shuffle_buffer=0, drop_last=False,
                                  num_workers=min(cfg.num_workers, shards))
    return ClipLoader(parts, val_cfg, rank=rank, world=world)


def assessment_batches(data: Data, splits: list[Split], cfg: LoaderConfig, val_fraction: float | None) -> Any:
    """All held-out clips, on this process alone (rank 0 of 1): one loader, or the domains' in turn."""
    if isinstance(data, MixtureSpec):
        loaders = domain_heldout(data, cfg, val_fraction, rank=0, world=1)
        return RoundRobin(loaders) if loaders else None
    return heldout_clips(splits, cfg, rank=0, world=1)


def fit_and_export(module: Any, trainer_cfg: TrainerConfig, data: Data, loader_cfg: LoaderConfig,
                   val_fraction: float | None, val_batches: int, out: str | Path, what: str,
                   callbacks: list[Any] | None = None, before_export: Callable[[Any], None] | None = None,
                   assess: Callable[[Any, Any], dict[str, Any]] | None = None) -> Path:
    """Fit ``module`` (whose ``.model`` has ``save_pretrained``) on ``data`` (a dataset folder or a
    :class:`DataMix`), validating on its held-out split (``val_fraction``: None for the recorded one; see
    :mod:`wm_video.data.split`), resuming from the newest complete
    checkpoint in ``out/checkpoints`` when there is one, and export the model to ``out/export``; returns the
    export folder. ``before_export(module.model)`` runs on every process after training and before the export
    (e.g. folding LoRA adapters into the weights; not with DeepSpeed, which exports from ``last.ckpt``).
    ``assess(model, heldout_batches)`` scores the exported model on the held-out clips for the summary and the
    quality gates (:mod:`wm_video.training.quality`), on the main process. Raises
    :class:`~wm_video.training.checkpointing.Preempted` (exit status 75) when the preemption signal stopped
    training."""
    trainer_cfg = dataclasses.replace(trainer_cfg, run_dir=str(out))
    trainer = build_trainer(trainer_cfg, callbacks=[*(callbacks or []), _validation_from_the_start()],
                            limit_val_batches=val_batches if val_fraction != 0 else 0)
    # Lightning knows each process's place before it starts the process group (launchers set it in the
    # environment; when Lightning spawns the processes itself only its own bookkeeping has it).
    rank, world = trainer.node_rank * trainer.num_devices + trainer.local_rank, trainer.world_size
    train, val, splits = make_loaders(data, loader_cfg, val_fraction, rank, world, what)
    if not val:
        trainer.limit_val_batches = 0
    # Rank 0 holds the folder for the whole job; the other ranks (Lightning's own children included) are its job.
    with hold_run_folder(out) if rank == 0 else contextlib.nullcontext():
        found = find_resume_checkpoint(out)
        if found:
            path, meta = found
            check_resume_compatible(path, meta, dict(module.hparams).get("config"), world)
        ckpt = str(found[0]) if found else None
        log.info("training %s: %d train shards, %d held-out clips; %s", what,
                 sum(len(s.train.shards) for s in splits), sum(s.heldout_clips for s in splits),
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
            # The held-out clips whole, on this process alone: the validation loader holds only this rank's part.
            heldout = assessment_batches(data, splits, dataclasses.replace(loader_cfg, num_workers=0), val_fraction)
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
