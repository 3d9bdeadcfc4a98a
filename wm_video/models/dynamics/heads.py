"""Reward and termination heads, and their losses.

Both predict the outcome of the transition ``(s_i, a_i)``: they read the pooled (mean over ``n`` tokens) output of
clean frame ``i``, which has seen frames ``<= i``, together with the embedding of the action ``a_i`` taken there.
The frame after a terminating action is not stored (docs/data-format.md), so termination can only be predicted
this way, from the last frame and the action, never from the frame that follows.

Rewards: two-hot classification over bins uniform in ``symlog(r)`` (DreamerV3). The expected value of the
predicted distribution, mapped back with ``symexp``, is the reward estimate. The reward layer starts at zero, so
the first predictions are a uniform distribution whose expectation is 0 (for a symmetric range).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from wm_video.models.dynamics.config import DynamicsConfig


def symlog(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.log1p(x.abs())


def symexp(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.expm1(x.abs())


def two_hot(values: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Rewards ``(...)`` -> two-hot targets ``(..., K)`` over ``bins`` ``(K,)`` (ascending, symlog space): the
    weight is split between the two bins around ``symlog(r)`` so that their weighted mean is ``symlog(r)``
    (clipped to the bins' range)."""
    bins = bins.float()
    y = torch.minimum(torch.maximum(symlog(values.float()), bins[0]), bins[-1])
    upper = torch.searchsorted(bins, y.contiguous(), right=True).clamp(1, len(bins) - 1)  # (...)
    lo, hi = bins[upper - 1], bins[upper]
    w_hi = ((y - lo) / (hi - lo)).clamp(0, 1)
    out = torch.zeros(*y.shape, len(bins), dtype=torch.float32, device=y.device)
    out.scatter_(-1, (upper - 1)[..., None], (1 - w_hi)[..., None])
    return out.scatter_add_(-1, upper[..., None], w_hi[..., None])


def two_hot_decode(logits: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Logits ``(..., K)`` -> expected reward ``(...)``: ``symexp`` of the mean bin under the softmax."""
    return symexp(logits.float().softmax(-1) @ bins.float())


def reward_loss(logits: torch.Tensor, rewards: torch.Tensor, bins: torch.Tensor) -> torch.Tensor:
    """Cross-entropy between ``logits`` ``(..., K)`` and the two-hot targets of ``rewards`` ``(...)`` (mean)."""
    target = two_hot(rewards, bins)
    return -(target * logits.float().log_softmax(-1)).sum(-1).mean()


def termination_loss(logits: torch.Tensor, terminations: torch.Tensor, pos_weight: float) -> torch.Tensor:
    """Binary cross-entropy with logits, positives weighted by ``pos_weight`` (mean)."""
    weight = torch.tensor(pos_weight, device=logits.device)
    return F.binary_cross_entropy_with_logits(logits.float(), terminations.float(), pos_weight=weight)


def outcome_metrics(reward_logits: torch.Tensor | None, rewards: torch.Tensor | None, bins: torch.Tensor,
                    termination_logits: torch.Tensor | None, terminations: torch.Tensor | None
                    ) -> dict[str, torch.Tensor]:
    """Detached metrics for logs: ``reward_mae`` (expected reward vs the real one), ``termination_acc`` and
    ``termination_recall`` (threshold 0.5; recall only when the batch has terminations)."""
    logs = {}
    if rewards is not None and reward_logits is not None:
        logs["reward_mae"] = (two_hot_decode(reward_logits.detach(), bins) - rewards.float()).abs().mean()
    if terminations is not None and termination_logits is not None:
        pred, real = termination_logits.detach() > 0, terminations.bool()
        logs["termination_acc"] = (pred == real).float().mean()
        if bool(real.any()):
            logs["termination_recall"] = pred[real].float().mean()
    return logs


class OutcomeHeads(nn.Module):
    """Pooled frame features ``(..., d)`` and action vectors ``(..., c)`` -> reward logits ``(..., K)`` and
    termination logits ``(...)``, through one shared hidden layer."""

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__()
        c = config
        self.trunk = nn.Sequential(nn.LayerNorm(c.width + c.cond_dim), nn.Linear(c.width + c.cond_dim, c.width),
                                   nn.SiLU())
        self.reward = nn.Linear(c.width, c.reward_bins)
        self.termination = nn.Linear(c.width, 1)
        self.register_buffer("bins", torch.linspace(*c.reward_range, c.reward_bins), persistent=False)

    def zero_init_(self) -> None:
        nn.init.zeros_(self.reward.weight)
        nn.init.zeros_(self.reward.bias)

    def forward(self, pooled: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.trunk(torch.cat([pooled, action.to(pooled.dtype)], dim=-1))
        return self.reward(h), self.termination(h).squeeze(-1)

    def expected_reward(self, logits: torch.Tensor) -> torch.Tensor:
        return two_hot_decode(logits, self.bins)
