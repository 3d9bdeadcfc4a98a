"""Optimizer and learning-rate schedule shared by every part's training."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch


@dataclass
class OptimConfig:
    """AdamW with linear warm-up then cosine decay.

    Args:
        lr: peak learning rate.
        betas: AdamW betas.
        weight_decay: decoupled weight decay (not applied to norms, biases and codebooks).
        warmup_steps: steps of linear warm-up from 0.
        min_lr_ratio: the cosine decays to ``lr * min_lr_ratio`` at ``trainer.max_steps``.
        fused: the fused (one kernel) AdamW: None uses it when every parameter is on a CUDA device (Lightning
            moves the model before it builds the optimizer), False never.
    """

    lr: float = 3e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.95])
    weight_decay: float = 0.01
    warmup_steps: int = 200
    min_lr_ratio: float = 0.1
    fused: bool | None = None


def build_optimizer(model: torch.nn.Module, cfg: OptimConfig, max_steps: int) -> tuple[torch.optim.Optimizer, dict]:
    """AdamW over ``model``'s trainable parameters plus a per-step schedule, as Lightning expects them."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 and "norm" not in name else no_decay).append(p)
    params = decay + no_decay
    on_cuda = bool(params) and all(p.is_cuda for p in params)
    if cfg.fused and not on_cuda:
        raise ValueError("optim: field 'fused' is true but the parameters are not all on CUDA devices (fused AdamW "
                         "here needs CUDA); set optim.fused=null to pick it automatically")
    fused = on_cuda if cfg.fused is None else cfg.fused
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, betas=tuple(cfg.betas),
                            fused=fused or None)

    def factor(step: int) -> float:
        if step < cfg.warmup_steps:
            return (step + 1) / cfg.warmup_steps
        progress = min(1.0, (step - cfg.warmup_steps) / max(1, max_steps - cfg.warmup_steps))
        return cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    return opt, {"scheduler": sched, "interval": "step"}
