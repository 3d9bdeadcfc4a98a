"""Checkpoints that survive preemption: atomic writes, the newest complete one on resume, exact continuation.

What a checkpoint holds: Lightning's model, optimizer, LR-schedule and loop state (step, batch counters), the
``hyper_parameters`` (plain values), ``rank_states``: each rank's data-stream position (every rank reads its
own part of the stream, while Lightning would save rank 0's only), and ``export``: the part's class and config,
for :mod:`wm_video.training.consolidate`. Random numbers need no saved state:
:class:`StepSeeds` reseeds torch, numpy and Python before every training batch from ``(seed, rank, batches
so far)``, so validation runs, sanity checks and loader start-up between two steps cannot shift what the next
step draws, and a resumed run draws exactly what the uninterrupted one would have.

Writes: a file goes to ``.NAME.tmp-PID`` then ``os.replace`` (atomic on POSIX, :mod:`wm_video.utils.atomic`; a
run that starts in the folder removes those a killed one left); a DeepSpeed folder is written as ``NAME.tmp`` by
every rank and renamed by rank 0 (see :mod:`wm_video.training.strategy`). A half-written checkpoint therefore
never has a final name, and :func:`find_resume_checkpoint` still checks each candidate (loadable, with the keys a
resume needs) and skips a corrupt one with a warning.

Preemption: SLURM sends ``--signal=SIGUSR1@120`` (configurable: ``trainer.preemption_signal``) to every task.
:class:`Preemption` only records it; at the next optimizer-step boundary all ranks agree (one all-reduce), save
``last.ckpt`` and stop; then rank 0 runs ``scontrol requeue`` and the process exits with :data:`EXIT_PREEMPTED`.
Saving from inside the signal handler (what Lightning's own SLURM handler does) would catch ranks in different
places, mid-step or inside a collective. No step is redone after the resume.
"""

from __future__ import annotations

import json
import logging
import os
import random
import re
import shutil
import signal
import subprocess
import threading
from pathlib import Path
from typing import Any

import numpy as np
import torch
from lightning.fabric.utilities.types import _PATH
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.plugins.io import TorchCheckpointIO

from wm_video.training.export_info import export_info
from wm_video.utils.atomic import AtomicFile
from wm_video.utils.seeds import stable_seed

log = logging.getLogger(__name__)

EXIT_PREEMPTED = 75  # EX_TEMPFAIL: stopped to be resumed; `torchrun --max-restarts` restarts on it
REQUIRED_KEYS = ("state_dict", "global_step", "loops")
CHECKPOINT_DIR = "checkpoints"
LAST = "last.ckpt"


class CheckpointError(ValueError):
    """A checkpoint cannot be resumed from as configured; the message names the file and the fields."""


class Preempted(SystemExit):
    """Raised after a preemption checkpoint: the run stops to be resumed (exit status :data:`EXIT_PREEMPTED`)."""

    def __init__(self) -> None:
        super().__init__(EXIT_PREEMPTED)


# ---- atomic writes ------------------------------------------------------------------------------------------


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary name in the same folder, flushed to disk, then renamed into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with AtomicFile(path) as f:
        torch.save(obj, f.file)


def atomic_checkpoint_io() -> Any:
    """Lightning's torch checkpoint IO with write-then-rename saves (a plugin for ``Trainer(plugins=[...])``)."""
    class AtomicCheckpointIO(TorchCheckpointIO):
        def save_checkpoint(self, checkpoint: dict[str, Any], path: _PATH, storage_options: Any | None = None) -> None:
            atomic_torch_save(checkpoint, path)

    return AtomicCheckpointIO()


# ---- reading: DeepSpeed folders and plain files --------------------------------------------------------------


def _deepspeed_safe_globals() -> list[Any]:
    """The few DeepSpeed classes its checkpoint files hold besides tensors and plain values: allowed by name, so
    they load with ``weights_only=True`` like every other checkpoint here."""
    allowed: list[Any] = []
    try:  # DeepSpeed is an optional heavy dependency (the 'deepspeed' extra): imported here, only when installed
        from deepspeed.runtime.fp16.loss_scaler import DynamicLossScaler, LossScaler
        from deepspeed.runtime.zero.config import ZeroStageEnum

        allowed += [LossScaler, DynamicLossScaler, ZeroStageEnum]
        from deepspeed.utils.tensor_fragment import fragment_address

        allowed.append(fragment_address)
    except ImportError:
        pass
    return allowed


class weights_only_loads:
    """Within the block, every ``torch.load`` (DeepSpeed's own, which ask for full unpickling, included) runs with
    ``weights_only=True`` plus DeepSpeed's few plain classes allowed; a file needing anything else fails."""

    def __enter__(self) -> weights_only_loads:
        self._old = os.environ.get("TORCH_FORCE_WEIGHTS_ONLY_LOAD")
        os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = "1"
        self._globals = torch.serialization.safe_globals(_deepspeed_safe_globals())
        self._globals.__enter__()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._globals.__exit__(*exc)
        if self._old is None:
            os.environ.pop("TORCH_FORCE_WEIGHTS_ONLY_LOAD", None)
        else:
            os.environ["TORCH_FORCE_WEIGHTS_ONLY_LOAD"] = self._old


def deepspeed_model_states_file(path: Path) -> Path:
    """Rank 0's model-state file of a DeepSpeed checkpoint folder (Lightning saves under the tag ``checkpoint``);
    it also holds Lightning's own checkpoint dict (loops, hyper-parameters, rank states)."""
    tag_file = path / "latest"
    tag = tag_file.read_text().strip() if tag_file.exists() else "checkpoint"
    files = sorted((path / tag).glob("*mp_rank_00_model_states.pt"))
    if not files:
        raise FileNotFoundError(f"{path}: no {tag}/*mp_rank_00_model_states.pt; not a complete DeepSpeed checkpoint")
    return files[0]


def load_checkpoint_meta(path: str | os.PathLike) -> dict[str, Any]:
    """The checkpoint dict of a file (tensors memory-mapped, not read) or of a DeepSpeed folder (its client state,
    without the sharded weights), always ``weights_only``."""
    path = Path(path)
    if path.is_dir():
        with weights_only_loads():
            return torch.load(deepspeed_model_states_file(path), map_location="cpu", weights_only=True, mmap=True)
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def check_complete(path: Path) -> tuple[int, dict[str, Any]]:
    """``(global_step, checkpoint dict)`` of a complete checkpoint; raises with the reason otherwise."""
    if path.is_dir():
        tag = (path / "latest").read_text().strip() if (path / "latest").exists() else "checkpoint"
        if not list((path / tag).glob("*optim_states.pt")):
            raise CheckpointError(f"{path}: no optimizer-state files in {tag}/")
    meta = load_checkpoint_meta(path)
    # A DeepSpeed folder keeps the weights in its own entries ("module" and the optimizer shards), not in Lightning's.
    missing = [k for k in REQUIRED_KEYS if k not in meta and not (path.is_dir() and k == "state_dict")]
    if missing:
        raise CheckpointError(f"{path}: missing {missing}")
    return int(meta["global_step"]), meta


def find_resume_checkpoint(run_dir: str | os.PathLike) -> tuple[Path, dict[str, Any]] | None:
    """The newest complete checkpoint in ``run_dir/checkpoints`` (highest step; ``last.ckpt`` wins a tie) and its
    dict, or None; a corrupt or partial one is skipped with a warning naming it and why."""
    folder = Path(run_dir) / CHECKPOINT_DIR
    if not folder.is_dir():
        return None
    candidates = [p for p in folder.iterdir() if p.name == LAST or re.fullmatch(r"step-\d+\.ckpt", p.name)]
    found = []
    for p in candidates:
        try:
            step, meta = check_complete(p)
        except Exception as e:  # a truncated zip, a torn folder, foreign content: all mean "not this one"
            log.warning("skipping checkpoint %s: not complete or not readable (%s: %s)", p, type(e).__name__, e)
            continue
        found.append((step, p.name == LAST, p, meta))
    if not found:
        return None
    step, _, path, meta = max(found, key=lambda f: (f[0], f[1]))
    return path, meta


# ---- resuming with the same config ---------------------------------------------------------------------------

# Fields that change what a checkpoint means or how the data stream continues; other fields (learning rate,
# max_steps, logging, precision) may change between a run and its resume. A domain mixture's sources (``mixture``:
# path and domain of each, in order) belong here; their weights may change (the stream takes the new ones).
RESUME_FIELDS = ("model", "loader.batch_size", "loader.num_workers", "loader.seed", "loader.resampled",
                 "loader.epoch_length", "loader.shuffle_buffer", "trainer.accumulate_grad_batches", "trainer.seed",
                 "mixture")
RESUME_FREE = re.compile(r"mixture\.\d+\.weight")  # fields under RESUME_FIELDS that may still change


def _flatten(tree: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted keys of nested dicts; a list of dicts (``mixture``, ``model.domains``) by index (``mixture.0.path``)."""
    if isinstance(tree, list) and tree and all(isinstance(x, dict) for x in tree):
        tree = {str(i): x for i, x in enumerate(tree)}
    if isinstance(tree, dict):
        out: dict[str, Any] = {}
        for k, v in tree.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: tree}


def config_differences(saved: dict[str, Any], current: dict[str, Any], fields: tuple[str, ...] = RESUME_FIELDS
                       ) -> list[str]:
    """``["model.codebook_size: checkpoint 32, now 64", ...]`` over the dotted ``fields`` (prefixes match). An
    empty list and an absent field are the same (a list field added since the checkpoint, at its default)."""
    a, b = _flatten(saved), _flatten(current)
    keys = sorted(k for k in set(a) | set(b) if any(k == f or k.startswith(f + ".") for f in fields)
                  and not RESUME_FREE.fullmatch(k))
    absent = "<absent>"
    return [f"{k}: checkpoint {a.get(k, absent)!r}, now {b.get(k, absent)!r}" for k in keys
            if a.get(k, []) != b.get(k, [])]


def check_resume_compatible(path: Path, meta: dict[str, Any], current_config: dict[str, Any] | None,
                            world_size: int) -> None:
    """Clear errors, before anything loads, when the run config or world size differs from the checkpoint's."""
    saved = (meta.get("hyper_parameters") or {}).get("config")
    if current_config is not None and saved is not None:
        diffs = config_differences(saved, current_config)
        if diffs:
            raise CheckpointError(
                f"{path} was written with a different config; resuming needs the same values (or a new --out):\n  "
                + "\n  ".join(diffs))
    states = meta.get("rank_states")
    if states is not None and len(states) != world_size:
        raise CheckpointError(
            f"{path} was written by {len(states)} process(es), this run has {world_size}: exact resume of the data "
            "stream needs the same trainer.devices x trainer.num_nodes (or a new --out)")


# ---- callbacks -----------------------------------------------------------------------------------------------


def callbacks(run_dir: str, seed: int, preemption_signal: str | None) -> list[Any]:
    """The resume callbacks :func:`wm_video.training.build_trainer` adds: per-rank stream states, step seeds,
    the preemption handler and the final ``last.ckpt``."""
    return [RankStates(), StepSeeds(seed), Preemption(run_dir, preemption_signal)]


class RankStates(Callback):
    """Every rank's loader position in the checkpoint (``rank_states``), each rank restoring its own; and the
    exported part's class and config (``export``).

    Gathered as JSON bytes in a tensor (plain values, no pickling across processes)."""

    def on_save_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        own = _fit_loop_state(checkpoint).get("combined_loader", [])
        checkpoint["rank_states"] = _gather_json(trainer, own)
        model = getattr(pl_module, "model", None)
        if model is not None and hasattr(model, "config"):  # what `wm-video export` rebuilds
            checkpoint["export"] = export_info(model)

    def on_load_checkpoint(self, trainer, pl_module, checkpoint: dict[str, Any]) -> None:
        states = checkpoint.get("rank_states")
        if states is None:
            return
        if len(states) != trainer.world_size:
            raise CheckpointError(f"checkpoint written by {len(states)} process(es), this run has "
                                  f"{trainer.world_size}: set the same trainer.devices x trainer.num_nodes")
        own = json.loads(states[trainer.global_rank])
        if own:  # Lightning restores the loaders from here, after the callbacks
            _fit_loop_state(checkpoint)["combined_loader"] = own


class StepSeeds(Callback):
    """Reseed before every training batch from ``(seed, rank, batches started so far)``."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        n = trainer.fit_loop.epoch_loop.batch_progress.total.ready
        s = stable_seed(self.seed, trainer.global_rank, n) % 2**32  # numpy takes 32 bits
        torch.manual_seed(s)  # CPU and every CUDA device
        np.random.seed(s)
        random.seed(s)


class Preemption(Callback):
    """Record the preemption signal; checkpoint, stop (and requeue under SLURM) at the next step boundary."""

    def __init__(self, run_dir: str, preemption_signal: str | None) -> None:
        self.run_dir = run_dir
        self.requested = self.preempted = False
        self._previous: Any = None
        self._signum: int | None = None
        self._last_step = -1
        # Installed now, not at fit start: a signal during start-up is then kept for the first step boundary
        # instead of killing the process (the default action of SIGUSR1).
        if preemption_signal and threading.current_thread() is threading.main_thread():
            self._signum = int(getattr(signal, preemption_signal))
            self._previous = signal.signal(self._signum, self._handler)

    def _handler(self, signum: int, frame: Any) -> None:
        self.requested = True
        log.warning("received %s: checkpointing at the next step boundary", signal.Signals(signum).name)

    def on_train_start(self, trainer, pl_module) -> None:
        self._last_step = trainer.global_step

    def _restore(self) -> None:
        if self._signum is not None:
            signal.signal(self._signum, self._previous if self._previous is not None else signal.SIG_DFL)
            self._signum = None

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self._last_step:  # inside a gradient accumulation: not a step boundary
            return
        self._last_step = trainer.global_step
        if not trainer.strategy.reduce_boolean_decision(self.requested, all=False):
            return
        save_last(trainer, self.run_dir)
        self.preempted, trainer.should_stop = True, True
        if trainer.is_global_zero:
            log.warning("preempted: saved %s at step %d", Path(self.run_dir) / CHECKPOINT_DIR / LAST,
                        trainer.global_step)

    def on_train_end(self, trainer, pl_module) -> None:
        if not self.preempted:  # the preemption checkpoint is already last.ckpt
            save_last(trainer, self.run_dir)
        self._restore()

    def teardown(self, trainer, pl_module, stage: str) -> None:
        self._restore()


def _fit_loop_state(checkpoint: dict[str, Any]) -> dict[str, Any]:
    """The fit loop's own state in a Lightning checkpoint (``loops.fit_loop.state_dict``), where its
    ``combined_loader`` entry holds the training loaders' states."""
    return checkpoint.setdefault("loops", {}).setdefault("fit_loop", {}).setdefault("state_dict", {})


def _gather_json(trainer: Any, obj: Any) -> list[str]:
    """``obj`` as JSON from every rank, in rank order."""
    text = json.dumps(obj)
    if trainer.world_size == 1:
        return [text]
    data = torch.frombuffer(bytearray(text.encode()), dtype=torch.uint8)
    device = trainer.strategy.root_device
    n = torch.tensor([data.numel()], device=device)
    sizes = trainer.strategy.all_gather(n).reshape(-1).tolist()
    padded = torch.zeros(max(sizes), dtype=torch.uint8, device=device)
    padded[: data.numel()] = data.to(device)
    rows = trainer.strategy.all_gather(padded).reshape(len(sizes), -1).cpu()
    return [bytes(rows[i, : sizes[i]].tolist()).decode() for i in range(len(sizes))]


def save_last(trainer: Any, run_dir: str) -> None:
    """Write ``checkpoints/last.ckpt`` now (every rank calls it; the strategy's write is atomic)."""
    trainer.save_checkpoint(str(Path(run_dir) / CHECKPOINT_DIR / LAST))


def preemption_callback(trainer: Any) -> Any | None:
    return next((c for c in trainer.callbacks if type(c).__name__ == "Preemption"), None)


def requeue_slurm_job() -> bool:
    """``scontrol requeue`` this SLURM job (array task included); False when not under SLURM or it failed."""
    job = os.environ.get("SLURM_JOB_ID")
    if os.environ.get("SLURM_ARRAY_JOB_ID") and os.environ.get("SLURM_ARRAY_TASK_ID"):
        job = f"{os.environ['SLURM_ARRAY_JOB_ID']}_{os.environ['SLURM_ARRAY_TASK_ID']}"
    if not job or shutil.which("scontrol") is None:
        return False
    result = subprocess.run(["scontrol", "requeue", job], capture_output=True, text=True)
    if result.returncode:
        log.warning("scontrol requeue %s failed: %s", job, result.stderr.strip())
        return False
    log.warning("requeued SLURM job %s", job)
    return True
