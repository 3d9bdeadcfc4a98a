"""How to train, independent of what is trained: :class:`TrainerConfig` and the strategy names it accepts.

Kept apart from :mod:`.trainer` (which builds the Lightning Trainer) and :mod:`.strategy` (which builds the
strategy), so both can read the config without importing each other.
"""

from __future__ import annotations

import signal
from dataclasses import dataclass

DEEPSPEED = {  # name -> (ZeRO stage, offload optimizer states, offload parameters)
    "deepspeed_stage_1": (1, False, False),
    "deepspeed_stage_2": (2, False, False),
    "deepspeed_stage_2_offload": (2, True, False),
    "deepspeed_stage_3": (3, False, False),
    "deepspeed_stage_3_offload": (3, True, True),
}
STRATEGIES = ("auto", "ddp", *DEEPSPEED)


@dataclass
class TrainerConfig:
    """How to train, independent of what is trained.

    Args:
        accelerator: ``auto``, ``cpu`` or ``gpu``.
        devices: devices per node (``auto``, a count, or ``-1`` for all).
        num_nodes: nodes (SLURM sets the rest of the topology).
        strategy: ``auto``, ``ddp``, ``deepspeed_stage_1``, ``deepspeed_stage_2``, ``deepspeed_stage_3``,
            ``deepspeed_stage_2_offload`` (optimizer states in CPU memory) or ``deepspeed_stage_3_offload``
            (parameters too). DeepSpeed needs CUDA GPUs; on CPUs use ``ddp``.
        precision: ``auto`` (bf16-mixed on GPU, 32-true on CPU), or any Lightning precision string.
        max_steps: optimizer steps to train for.
        max_minutes: an opt-in safety limit: also stop after this much wall-clock training time (None, the
            default and every preset's: no limit, so results never depend on machine load). It is Lightning's
            ``max_time`` (the ``Timer`` callback), which counts in total over every resume of a run, not per
            invocation: the training time (from the start of the fit loop, validation included, process start-up
            not) is saved in each checkpoint and a resumed run continues from the figure in the checkpoint it
            resumes from (a preemption checkpoint is written at the signal; time after the last checkpoint before a
            crash is lost to the count). A resumed run whose cap is already spent stops at once, with no step
            trained; raise the cap to continue. A run cut short by it logs a warning naming the steps done and
            planned, and its summary says ``time cap``.
        val_check_interval: run validation every this many training batches (None: once per epoch).
        limit_val_batches: validation batches per validation run.
        log_every_n_steps: logging interval in steps.
        logger: ``tensorboard`` (default), ``wandb`` (needs the wandb package), ``csv`` or ``none``.
        wandb_project: project name when ``logger`` is ``wandb``.
        run_dir: folder for logs and checkpoints of this run.
        checkpoint_every_n_steps: save a checkpoint this often (also ``last.ckpt``).
        keep_last_k: checkpoints kept besides ``last.ckpt``.
        grad_clip: gradient norm clip (None: off).
        accumulate_grad_batches: batches per optimizer step (the effective batch is
            ``loader.batch_size x accumulate_grad_batches x devices x num_nodes``).
        activation_checkpointing: recompute activations in the backward pass (less memory, about one more
            forward of compute), through the model's own gradient-checkpointing switches. The one switch users
            set: a run config's ``model.gradient_checkpointing`` (the dynamics model's internal flag) is read as this
            (:class:`~wm_video.training.dynamics_config.DynamicsTrainConfig`).
        compile: ``torch.compile`` each repeated block of the model (not with DeepSpeed).
        compile_mode: ``torch.compile`` mode (None: default; ``max-autotune`` and others).
        find_unused_parameters: DDP looks for parameters without gradients each step (slower; needed only when
            some parameters get no gradient in a step, e.g. a discriminator before it starts).
        preemption_signal: signal name (``SIGUSR1``) that means "checkpoint and stop": ``sbatch
            --signal=SIGUSR1@120`` sends it 120 s before the time limit or on preemption; under SLURM the job is
            then requeued (``sbatch --requeue``) and resumes. None: no handler.
        requeue: under SLURM, requeue the job after a preemption checkpoint.
        progress: ``auto`` (bar on terminals, log lines in batch jobs), ``bar`` or ``log``.
        seed: global seed for torch, numpy and Python (each training batch reseeds from it, the rank and the
            batch count, so resumed runs draw the same random numbers).
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
    activation_checkpointing: bool = False
    compile: bool = False
    compile_mode: str | None = None
    find_unused_parameters: bool = False
    preemption_signal: str | None = "SIGUSR1"
    requeue: bool = True
    progress: str = "auto"
    seed: int = 0

    def validate(self) -> None:
        if self.logger not in ("tensorboard", "wandb", "csv", "none"):
            raise ValueError(f"trainer: field 'logger' must be tensorboard, wandb, csv or none, got {self.logger!r}")
        if self.progress not in ("auto", "bar", "log"):
            raise ValueError(f"trainer: field 'progress' must be auto, bar or log, got {self.progress!r}")
        if self.preemption_signal is not None and not isinstance(getattr(signal, self.preemption_signal, None),
                                                                 signal.Signals):
            raise ValueError(f"trainer: field 'preemption_signal' must be a signal name such as SIGUSR1, "
                             f"got {self.preemption_signal!r}")
        if self.accumulate_grad_batches < 1 or self.checkpoint_every_n_steps < 1 or self.keep_last_k < 1:
            raise ValueError("trainer: fields 'accumulate_grad_batches', 'checkpoint_every_n_steps' and 'keep_last_k' "
                             "must be >= 1")
        if self.strategy not in STRATEGIES:
            raise ValueError(f"trainer: field 'strategy' must be one of {list(STRATEGIES)}, got {self.strategy!r}")
