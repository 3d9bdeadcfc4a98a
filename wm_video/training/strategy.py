"""The distribution strategy of a run, chosen by name in ``trainer.strategy``, checked before any process group starts.

Names (``STRATEGIES``):

- ``auto``: one process (Lightning picks), or DDP when ``devices``/``num_nodes`` ask for more.
- ``ddp``: data parallel; NCCL on GPUs, gloo on CPUs.
- ``deepspeed_stage_1`` / ``_2`` / ``_3``: DeepSpeed ZeRO sharding of optimizer states (1), plus gradients (2),
  plus parameters (3); ``deepspeed_stage_2_offload`` keeps optimizer states in CPU memory,
  ``deepspeed_stage_3_offload`` parameters and optimizer states. Lightning runs DeepSpeed on CUDA GPUs only.

The launcher (``srun`` under SLURM, ``torchrun``) starts one process per device; :func:`check_launch` compares
its topology with ``trainer.devices`` x ``trainer.num_nodes`` so a mismatch is an error here instead of a hang
at the rendezvous. DeepSpeed checkpoints are folders; :func:`build_strategy` gives them the same write-then-rename
guarantee as single-file checkpoints (see :mod:`wm_video.training.checkpointing`).
"""

from __future__ import annotations

import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch
from lightning.fabric.plugins.environments import TorchElasticEnvironment
from lightning.pytorch.strategies import DDPStrategy, DeepSpeedStrategy

from wm_video.training.trainer_config import DEEPSPEED, STRATEGIES, TrainerConfig
from wm_video.utils.atomic import replace_folder, shared_temporary_path


class LaunchError(ValueError):
    """The run cannot start as configured on this hardware or under this launcher; the message says what to change
    (a ``ValueError``, so the CLI reports it as a user error, without a traceback)."""


def on_gpu(cfg: TrainerConfig) -> bool:
    """Whether ``cfg`` trains on CUDA GPUs (``accelerator: auto`` means GPUs when any is visible)."""
    return cfg.accelerator in ("gpu", "cuda") or (cfg.accelerator == "auto" and torch.cuda.is_available())


def check_strategy(cfg: TrainerConfig) -> None:
    """Errors for a strategy this machine cannot run, naming the field and what to use instead (configs stay
    loadable anywhere: this runs when the Trainer is built, on the machine that trains)."""
    if cfg.strategy not in STRATEGIES:
        raise ValueError(f"trainer: field 'strategy' must be one of {list(STRATEGIES)}, got {cfg.strategy!r}")
    if cfg.strategy not in DEEPSPEED:
        return
    if not on_gpu(cfg):
        where = "accelerator=cpu" if cfg.accelerator == "cpu" else "no CUDA GPU is visible"
        raise LaunchError(
            f"trainer.strategy={cfg.strategy}: Lightning runs DeepSpeed on CUDA GPUs only ({where}). On CPUs use "
            "trainer.strategy=ddp (several processes, gloo) or trainer.strategy=auto (one process); ZeRO itself "
            "runs on CPUs through deepspeed.initialize (tests/test_deepspeed_zero.py shows how).")
    try:
        import deepspeed  # noqa: F401  (optional heavy dependency: the 'deepspeed' extra, imported when asked for)
    except ImportError as e:
        raise LaunchError(f"trainer.strategy={cfg.strategy} needs DeepSpeed: install the 'deepspeed' extra "
                          '(pip install -e ".[deepspeed]")') from e
    if cfg.compile:
        raise LaunchError(f"trainer.compile=true is not supported with trainer.strategy={cfg.strategy} "
                          "(DeepSpeed wraps the module itself); use trainer.strategy=ddp to compile")


def _slurm_tasks_per_node() -> int | None:
    raw = os.environ.get("SLURM_NTASKS_PER_NODE") or os.environ.get("SLURM_TASKS_PER_NODE")
    if not raw:
        return None
    m = re.match(r"(\d+)", raw)  # "2" or "2(x4)"
    return int(m.group(1)) if m else None


def launcher_topology() -> tuple[str, int, int] | None:
    """``(launcher, processes per node, nodes)`` when started by ``srun`` or ``torchrun``, else None."""
    if TorchElasticEnvironment.detect():
        local = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
        return "torchrun", local, int(os.environ.get("WORLD_SIZE", "1")) // max(local, 1)
    if "SLURM_NTASKS" in os.environ and os.environ.get("SLURM_JOB_NAME") not in ("bash", "interactive"):
        per_node = _slurm_tasks_per_node() or int(os.environ["SLURM_NTASKS"])
        nodes = int(os.environ.get("SLURM_JOB_NUM_NODES") or os.environ.get("SLURM_NNODES") or 1)
        return "srun", per_node, nodes
    return None


def resolve_devices(cfg: TrainerConfig) -> int | str:
    """``devices: auto`` under a launcher means one device per launched process on the node."""
    topo = launcher_topology()
    if cfg.devices == "auto" and topo is not None:
        return topo[1]
    return cfg.devices


def check_launch(cfg: TrainerConfig) -> None:
    """Compare the launcher's processes with ``trainer.devices`` x ``trainer.num_nodes`` (and the GPUs a process
    sees); a mismatch would otherwise wait forever at the rendezvous for processes that never come."""
    topo = launcher_topology()
    devices = resolve_devices(cfg)
    if topo is None:
        return
    launcher, per_node, nodes = topo
    flags = ("#SBATCH --ntasks-per-node", "#SBATCH --nodes") if launcher == "srun" else (
        "torchrun --nproc-per-node", "torchrun --nnodes")
    problems = []
    if isinstance(devices, int) and devices != -1 and devices != per_node:
        problems.append(f"{flags[0]}={per_node} but trainer.devices={devices}")
    if cfg.num_nodes != nodes:
        problems.append(f"{flags[1]}={nodes} but trainer.num_nodes={cfg.num_nodes}")
    if on_gpu(cfg) and torch.cuda.is_available() and isinstance(devices, int) and devices > 0:
        visible = torch.cuda.device_count()
        if visible < devices:
            problems.append(f"each process sees {visible} GPU(s) but trainer.devices={devices}: request "
                            f"--gpus-per-node={devices} and do not bind GPUs per task (no --gpus-per-task)")
    if problems:
        raise LaunchError(f"{launcher} started {per_node} process(es) per node on {nodes} node(s), which does not "
                          f"match the trainer: {'; '.join(problems)}. One process per device: make them equal.")


def build_strategy(cfg: TrainerConfig) -> Any:
    """The Lightning strategy object (or name) for ``cfg.strategy``; call :func:`check_strategy` first."""
    if cfg.strategy == "ddp":
        return DDPStrategy(find_unused_parameters=cfg.find_unused_parameters)
    if cfg.strategy in DEEPSPEED:
        stage, offload_opt, offload_params = DEEPSPEED[cfg.strategy]
        return _atomic_deepspeed_strategy(stage=stage, offload_optimizer=offload_opt,
                                          offload_parameters=offload_params)
    return cfg.strategy


def _atomic_deepspeed_strategy(**kwargs: Any) -> Any:
    class AtomicDeepSpeedStrategy(DeepSpeedStrategy):
        """DeepSpeed writes a checkpoint folder from every rank; write it under a temporary name and rename it
        into place once every rank is done, so a folder under the final name is always complete."""

        def save_checkpoint(self, checkpoint: dict, filepath: Any, storage_options: Any | None = None) -> None:
            final = Path(self.broadcast(str(filepath)))
            tmp = shared_temporary_path(final)
            if self.is_global_zero and tmp.exists():
                shutil.rmtree(tmp)
            self.barrier("ds_checkpoint_tmp")
            super().save_checkpoint(checkpoint, tmp, storage_options)
            self.barrier("ds_checkpoint_written")
            if self.is_global_zero:
                replace_folder(tmp, final)
            self.barrier("ds_checkpoint_renamed")

        def remove_checkpoint(self, filepath: Any) -> None:
            if self.is_global_zero:
                shutil.rmtree(filepath, ignore_errors=True)

    # DeepSpeed's own CPU Adam is needed to pair its offload with a client optimizer by default; the project's
    # AdamW (torch) works on offloaded states too, slower but without building DeepSpeed's C++ ops.
    config = {"zero_force_ds_cpu_optimizer": False} if kwargs.get("offload_optimizer") else None
    strategy = AtomicDeepSpeedStrategy(**kwargs)
    if config:
        strategy.config.update(config)
    return strategy
