"""Memory and speed switches applied to a plain model from outside, in torchtitan's order: activation
checkpointing first, then ``torch.compile``, then the strategy's wrapping (DDP or DeepSpeed, by Lightning).

Models stay single-device PyTorch that know nothing of this; what they offer is used when present:

- activation checkpointing: the model's own switch (``set_gradient_checkpointing``, the dynamics transformer),
  else every submodule with a ``gradient_checkpointing`` flag (diffusers' blocks in the tokenizer and the
  decoder's UNet) gets it set together with a non-reentrant ``torch.utils.checkpoint`` function;
- compile: each repeated block (an element of an ``nn.ModuleList``) is compiled in place with
  ``nn.Module.compile``, which keeps parameter names, so checkpoints and exports are unchanged; a model without
  repeated blocks is compiled whole.
"""

from __future__ import annotations

import logging
from typing import Any

from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)


def _checkpointed_call(module: nn.Module, *args: Any, **kwargs: Any) -> Any:
    return checkpoint(module.__call__, *args, use_reentrant=False, **kwargs)


def apply_activation_checkpointing(model: nn.Module) -> list[str]:
    """Turn on recomputation in the backward pass; returns the names of the switched modules. Raises when the
    model has no switch (say which in ``trainer.activation_checkpointing``)."""
    if hasattr(model, "set_gradient_checkpointing"):
        model.set_gradient_checkpointing(True)
        return [type(model).__name__]
    switched = []
    for name, module in model.named_modules():
        if isinstance(getattr(module, "gradient_checkpointing", None), bool):
            module._gradient_checkpointing_func = _checkpointed_call  # what diffusers' blocks call
            module.gradient_checkpointing = True
            switched.append(name or type(model).__name__)
    if not switched:
        raise ValueError(f"trainer.activation_checkpointing: {type(model).__name__} has no gradient-checkpointing "
                         "switch (set_gradient_checkpointing or blocks with a gradient_checkpointing flag)")
    return switched


def repeated_blocks(model: nn.Module) -> list[nn.Module]:
    """The outermost elements of ``nn.ModuleList``s: a transformer's or UNet's blocks."""
    blocks: list[nn.Module] = []
    taken: set[int] = set()
    for _, module in model.named_modules():
        if id(module) in taken:
            continue
        if isinstance(module, nn.ModuleList):
            for child in module:
                blocks.append(child)
                taken.update(id(m) for m in child.modules())
    return blocks


def apply_compile(model: nn.Module, mode: str | None = None) -> int:
    """Compile ``model``'s repeated blocks in place (or the model when it has none); returns how many."""
    blocks = repeated_blocks(model) or [model]
    for block in blocks:
        block.compile(mode=mode)
    return len(blocks)


def parallelize_callback(activation_checkpointing: bool, compile: bool, compile_mode: str | None) -> Any:
    """A Lightning callback applying the switches to ``pl_module.model`` at set-up, before the strategy wraps it."""
    class Parallelize(Callback):
        def setup(self, trainer, pl_module, stage: str) -> None:
            model = getattr(pl_module, "model", pl_module)
            if activation_checkpointing:
                names = apply_activation_checkpointing(model)
                log.info("activation checkpointing on %d module(s) of %s", len(names), type(model).__name__)
            if compile:
                n = apply_compile(model, compile_mode)
                log.info("torch.compile on %d block(s) of %s", n, type(model).__name__)

    return Parallelize()

