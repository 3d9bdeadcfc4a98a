"""Model-predictive control for continuous actions: the cross-entropy method (CEM), or MPPI's weighted average.

Each decision searches action sequences of ``horizon`` steps: ``iterations`` times, draw ``population`` sequences
from a diagonal Gaussian clipped to the action bounds, score them all in one batched imagined rollout
(:func:`~wm_video.planning.scoring.score_plans`), and refit the Gaussian to the best ``elites`` (CEM) or to all
of them weighted by ``softmax(score / (mppi_temperature * std(scores)))`` (MPPI; normalising by the spread of the
scores keeps one temperature usable across tasks whose rewards differ in scale). The first action of the final
mean is taken, then the whole search is redone at the next real step (replanning every step); the previous mean,
shifted by one step, seeds the next search (warm start), and the current mean is always one of the candidates.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from wm_video.data.schema import ActionSpace
from wm_video.planning.scoring import ImaginedEnv, Plan, ValueFn, check_sampling, score_plans


@dataclass
class CEMConfig:
    """Args:
    horizon: planned steps ``H``.
    population: action sequences scored per iteration (one batch of ``population * samples`` rollouts).
    elites: best sequences the Gaussian is refitted to (CEM).
    iterations: refits per decision.
    discount: per-step discount of predicted rewards.
    init_std: initial standard deviation, as a fraction of each dimension's half range.
    min_std: floor of the standard deviation, same unit (keeps the search from collapsing early).
    momentum: weight of the old mean and std in each refit (0: replace them).
    mppi: MPPI's score-weighted average of every candidate instead of the elites' mean.
    mppi_temperature: MPPI temperature in units of the scores' standard deviation.
    samples: imagined rollouts per sequence (``> 1`` needs a sampling temperature above 0).
    uncertainty: penalty on the standard deviation of a sequence's sampled returns.
    warm_start: start each search from the previous decision's mean shifted by one step.
    """

    horizon: int = 12
    population: int = 64
    elites: int = 8
    iterations: int = 4
    discount: float = 0.99
    init_std: float = 0.5
    min_std: float = 0.05
    momentum: float = 0.1
    mppi: bool = False
    mppi_temperature: float = 0.5
    samples: int = 1
    uncertainty: float = 0.0
    warm_start: bool = True

    def __post_init__(self) -> None:
        for name in ("horizon", "population", "elites", "iterations", "samples"):
            if getattr(self, name) < 1:
                raise ValueError(f"cem: {name} must be >= 1, got {getattr(self, name)}")
        if self.elites > self.population:
            raise ValueError(f"cem: elites ({self.elites}) cannot exceed population ({self.population})")
        if not 0 < self.discount <= 1:
            raise ValueError(f"cem: discount must be in (0, 1], got {self.discount}")
        if not 0 <= self.momentum < 1:
            raise ValueError(f"cem: momentum must be in [0, 1), got {self.momentum}")
        if self.init_std <= 0 or self.min_std < 0 or self.mppi_temperature <= 0:
            raise ValueError("cem: init_std and mppi_temperature must be > 0, min_std >= 0")


def check_bounds(space: ActionSpace, planner: str = "cem") -> tuple[torch.Tensor, torch.Tensor]:
    """``(low, high)`` float tensors ``(a,)`` of a continuous space; ValueError for discrete or unbounded ones."""
    if space.kind != "continuous":
        hint = " (use the mcts planner)" if space.kind == "discrete" else ""
        raise ValueError(f"{planner}: searches continuous actions, and this model's actions are {space.kind}{hint}")
    if space.low is None or space.high is None:
        raise ValueError(f"{planner}: needs action bounds, and none are known: the world model's index has no "
                         "action_space low/high (export it with --data) and none were given (--action-low, "
                         "--action-high)")
    low, high = torch.tensor(space.low, dtype=torch.float32), torch.tensor(space.high, dtype=torch.float32)
    if not bool((low < high).all()):
        raise ValueError(f"{planner}: every action low must be below its high, got {space.low} and {space.high}")
    return low, high


class CEMPlanner:
    """CEM / MPPI over an imagined environment (see the module docstring).

    Args:
        env: the imagined environment, e.g. ``WorldModelEnv(model, render=False, temperature=0)``.
        action_space: continuous, with bounds (:func:`~wm_video.planning.scoring.model_action_space`).
        config: search settings.
        value_fn: optional value of the state after the last planned step (tokens ``(b, k, h, w)`` -> ``(b,)``).
        value_frames: frames ``k`` the value function reads.
        generator: random source of the candidate sequences (seed it for reproducible decisions).
        device: where candidates are made (the world model's device).
    """

    def __init__(self, env: ImaginedEnv, action_space: ActionSpace, config: CEMConfig | None = None,
                 value_fn: ValueFn | None = None, value_frames: int = 1, generator: torch.Generator | None = None,
                 device: torch.device | str = "cpu") -> None:
        self.config = c = config or CEMConfig()
        self.low, self.high = (x.to(device) for x in check_bounds(action_space))
        check_sampling(env, c.samples, c.uncertainty)
        self.env, self.value_fn, self.value_frames = env, value_fn, value_frames
        self.generator, self.device = generator, torch.device(device)
        self.imagined_frames = 0
        self._mean: torch.Tensor | None = None  # (H, a), the warm start

    def reset(self) -> None:
        """Forget the warm start (a new episode)."""
        self._mean = None

    def plan(self, context: torch.Tensor, context_actions: torch.Tensor | None = None) -> Plan:
        """Search from one context ``(t0, 3, h, w)`` with actions ``(t0 - 1, a)`` -> the :class:`Plan`."""
        c = self.config
        low, high = self.low, self.high
        mid, half = (low + high) / 2, (high - low) / 2  # (a,)
        h, a = c.horizon, low.shape[0]
        mean = mid.expand(h, a).clone()
        if c.warm_start and self._mean is not None:
            mean = torch.cat([self._mean[1:], self._mean[-1:]])
        std = (c.init_std * half).expand(h, a).clone()
        best_score = float("-inf")
        for _ in range(c.iterations):
            noise = torch.randn(c.population, h, a, generator=self.generator,
                                device=self.generator.device if self.generator else self.device).to(self.device)
            cand = torch.maximum(torch.minimum(mean + std * noise, high), low)  # (p, H, a)
            cand[0] = mean
            scores = score_plans(self.env, context, context_actions, cand, c.discount, c.samples, c.uncertainty,
                                 self.value_fn, self.value_frames)
            self.imagined_frames += scores.frames
            s = scores.score.to(self.device)
            best_score = max(best_score, float(s.max()))
            if c.mppi:
                w = ((s - s.max()) / (c.mppi_temperature * s.std(correction=0).clamp_min(1e-6))).softmax(0)
                new_mean = (w[:, None, None] * cand).sum(0)
                new_std = (w[:, None, None] * (cand - new_mean) ** 2).sum(0).sqrt()
            else:
                elite = cand[s.topk(c.elites).indices]  # (e, H, a)
                new_mean, new_std = elite.mean(0), elite.std(0, correction=0)
            mean = c.momentum * mean + (1 - c.momentum) * new_mean
            std = (c.momentum * std + (1 - c.momentum) * new_std).maximum(c.min_std * half)
        self._mean = mean
        return Plan(action=mean[0].cpu(), actions=mean.cpu(), score=best_score,
                    info={"iterations": c.iterations, "final_std": float(std.mean())})
