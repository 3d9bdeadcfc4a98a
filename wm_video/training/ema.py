"""An exponential moving average (EMA) of the weights, kept during training and exported in their place.

Lightning's :class:`~lightning.pytorch.callbacks.WeightAveraging` does the bookkeeping: it holds a
``torch.optim.swa_utils.AveragedModel`` of the LightningModule, updates it after every optimizer step, swaps the
averaged weights in for validation (so held-out metrics and logged grids are the EMA's) and, here, swaps them into
the module when training ends (so ``save_part(module.model)`` exports them). Checkpoints hold the averaged weights in
``state_dict`` (so :func:`wm_video.training.consolidate.export_part` exports them too), the raw weights in
``current_model_state`` and the average's update count in ``averaging_state``; a resume restores both, so a resumed
run ends with the same EMA as an uninterrupted one.

Four choices differ from Lightning's ``EMAWeightAveraging``:

- the decay warms up, ``min(decay, (1 + n) / (10 + n))`` after ``n`` updates (as diffusers' ``EMAModel`` and timm
  do): with a fixed 0.999 the average of a 300-step run would still hold 74% of its first step's weights;
- only parameters are averaged; buffers follow the live model (``use_buffers=False``). The VQ codebook and its
  assignment counts are buffers that are themselves an EMA of the encoder's outputs (:mod:`wm_video.models.tokenizer
  .quantizer`), and a dead code that was restarted must not be blended with the code it replaced;
- a checkpoint written before this step's update (the preemption checkpoint, written by an earlier callback at the
  same step boundary) makes the update first, so the resumed run does not miss a step of the average;
- at the end of training the average is swapped into the module rather than copied, so a checkpoint written after
  that still holds the raw weights (a copy made a resumed run's ``last.ckpt`` hold the average twice).

Not with DeepSpeed: ZeRO partitions the weights the average would copy (the run warns and trains without it).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from lightning.pytorch.callbacks import WeightAveraging

log = logging.getLogger(__name__)

# The tokenizer's and decoder's default ``ema_decay``: off. At the tiny preset's budget (300 steps, Boxing) the EMA's
# export scored the same held-out PSNR as the raw weights (docs/benchmarks.md, "EMA of the weights"); runs of many
# thousand steps may gain from 0.999, not measured here.
EMA_DECAY = 0.0
CURRENT_STATE = "current_model_state"  # Lightning's key for the raw weights when the average is in ``state_dict``


def ema_decay_at(decay: float, updates: int) -> float:
    """The decay of update number ``updates + 1``: ``min(decay, (1 + updates) / (10 + updates))``."""
    return min(decay, (1 + updates) / (10 + updates))


class EMA(WeightAveraging):
    """EMA of the LightningModule's parameters, updated after every optimizer step (``decay`` in (0, 1))."""

    def __init__(self, decay: float) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"ema_decay must be in (0, 1) (0 turns the EMA off), got {decay}")
        self.decay = decay

        def update(averaged: list[torch.Tensor], current: list[torch.Tensor], updates: torch.Tensor) -> None:
            # one fused lerp per dtype and device group: averaged += (1 - d) * (current - averaged)
            torch._foreach_lerp_(averaged, current, 1 - ema_decay_at(decay, int(updates)))

        super().__init__(use_buffers=False, multi_avg_fn=update)
        self._ended = False

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._ended = False

    def on_train_end(self, trainer: Any, pl_module: Any) -> None:
        # Swapped, not copied (as Lightning does): the module ends with the average, which is exported, and the raw
        # weights stay here for a checkpoint written after this (ModelCheckpoint writes last.ckpt at train end when
        # it wrote none during the run, a resumed run's case); a copy would store the average as the raw weights.
        self._swap_models(pl_module)
        self._ended = True

    def on_save_checkpoint(self, trainer: Any, pl_module: Any, checkpoint: dict[str, Any]) -> None:
        if not self._ended:
            # A checkpoint written in an earlier callback's on_train_batch_end (the preemption checkpoint) comes before
            # this step's update: make it now, so a resumed run does not miss it.
            if trainer.global_step > self._latest_update_step and self.should_update(step_idx=trainer.global_step - 1):
                self._average_model.update_parameters(pl_module)
                self._latest_update_step = trainer.global_step
                checkpoint.setdefault("callbacks", {})[self.state_key] = self.state_dict()  # collected before this
            super().on_save_checkpoint(trainer, pl_module, checkpoint)
            return
        held = self._average_model.state_dict()  # the raw weights since on_train_end, and the update count
        checkpoint[CURRENT_STATE] = {k[len("module."):]: v for k, v in held.items() if k.startswith("module.")}
        checkpoint["averaging_state"] = {k: v for k, v in held.items() if not k.startswith("module.")}


def ema_callbacks(decay: float, strategy: str) -> list[EMA]:
    """``[EMA(decay)]`` for a run's ``ema_decay``; ``[]`` when it is 0, or with a DeepSpeed ``strategy`` (warned)."""
    if not decay:
        return []
    if strategy.startswith("deepspeed"):
        log.warning("ema_decay=%s is ignored with trainer.strategy=%s: DeepSpeed partitions the weights the average "
                    "copies; the raw weights are exported", decay, strategy)
        return []
    return [EMA(decay)]


def drop_ema_from_checkpoint(checkpoint: dict[str, Any]) -> None:
    """Put a checkpoint's raw weights back in ``state_dict`` (in place), for a run resumed with the EMA off from a
    checkpoint written with it on: without this the run would go on from the averaged weights."""
    if CURRENT_STATE in checkpoint:
        log.warning("resuming with ema_decay=0 from a checkpoint written with the EMA on: going on from its raw "
                    "weights, the average is dropped")
        checkpoint["state_dict"] = checkpoint.pop(CURRENT_STATE)
        checkpoint.pop("averaging_state", None)
