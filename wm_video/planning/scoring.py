"""What every planner shares: the imagined environment it steps, the checks a model must pass before planning, and
the scoring of a batch of action sequences by imagined rollouts.

A plan is scored in token space (``render=False``): the context is repeated once per rollout row, the
:class:`~wm_video.world_model_env.WorldModelEnv` is reset once with that batch (one KV-cached prefill), then stepped
``H`` times with every row's own actions. Its return is the discounted predicted reward weighted by the
probability of still being alive::

    G = sum_t gamma^t * S_t * r_t  (+ gamma^H * S_H * V(s_H) with a value function)
    S_0 = 1,  S_{t+1} = S_t * (1 - p_t)

where ``r_t`` and ``p_t`` are the reward and termination probability the dynamics model's heads predict for the
``t``-th action. The reward of the action that ends the episode still counts; what follows it is weighted out.

Uncertainty-aware scoring: with ``samples = K > 1`` each plan is imagined ``K`` times at a sampling temperature
above 0 and scored ``mean(G) - uncertainty * std(G)``, so plans whose sampled futures disagree (the model is
unsure what happens) lose against equally good plans with a consistent outcome.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import torch

from wm_video.data.schema import ActionSpace

log = logging.getLogger(__name__)

ValueFn = Callable[[torch.Tensor], torch.Tensor]  # tokens (b, k, h, w) of the last k frames -> values (b,)


class ImaginedEnv(Protocol):
    """What planners step: :class:`~wm_video.world_model_env.WorldModelEnv` (``render=False``), or a hand-made
    stand-in with the same two methods (the tests use one whose best action is known)."""

    def reset(self, context_frames: torch.Tensor, context_actions: torch.Tensor | None = None) -> torch.Tensor:
        """``(b, t0, 3, h, w)`` and ``(b, t0 - 1[, a])`` -> the context tokens ``(b, t0, h', w')``."""
        ...

    def step(self, actions: torch.Tensor) -> Any:
        """``(b,)`` / ``(b, a)`` -> an object with ``tokens`` ``(b, h', w')``, ``rewards`` ``(b,)`` and
        ``terminations`` ``(b,)`` (probabilities)."""
        ...


# ---- checks ---------------------------------------------------------------------------------------------------


def check_outcome_heads(model: Any) -> None:
    """Refuse to plan with a world model whose reward/termination predictions mean nothing.

    The dynamics model always has its heads (:class:`~wm_video.models.dynamics.heads.OutcomeHeads`), so what is
    checked is whether they were trained: (1) the model takes actions at all; (2) the index's training-data
    statistics, when present, counted rewards (``stats.rewards.count > 0``); (3) the reward layer is not still at
    its zero initialisation, which only the reward loss moves (a model trained on reward-free data predicts
    exactly 0 reward everywhere, and every plan would tie). Raises ValueError naming what is missing.
    """
    dyn = model.dynamics
    if dyn.config.action_type == "none":
        raise ValueError("planning: this world model is video-only (action_type 'none'): there are no actions to "
                         "plan; fine-tune it on data with actions")
    stats = getattr(getattr(model, "info", None), "stats", None) or {}
    rewards = stats.get("rewards")
    if isinstance(rewards, dict) and rewards.get("count") == 0:
        raise ValueError("planning: the world model's training data had no rewards or terminations "
                         "(world_model.json stats.rewards.count is 0), so its reward and termination heads were "
                         "never trained; train the dynamics model on data with rewards")
    head = dyn.outcome.reward
    if not bool(head.weight.any()) and not bool(head.bias.any()):
        raise ValueError("planning: the dynamics model's reward head is untrained (still all zeros: it was never "
                         "given rewards), so it predicts 0 reward for every plan; train the dynamics model on data "
                         "with rewards and terminations")
    if not stats:
        log.warning("planning: the world model's index has no data statistics (exported without --data); the reward "
                    "head's training could only be checked by its weights")


def model_action_space(model: Any, low: list[float] | None = None, high: list[float] | None = None,
                       fallback: ActionSpace | None = None) -> ActionSpace:
    """The action space planners search: kind and size from the dynamics config; continuous bounds from
    ``low``/``high`` when given, else the world model's index (``info.action_space``, the training data's space),
    else ``fallback``'s (e.g. the simulator's), else none (CEM will refuse)."""
    c = model.dynamics.config
    if c.action_type == "discrete":
        return ActionSpace("discrete", n=c.num_actions)
    if c.action_type != "continuous":
        return ActionSpace("none")
    if (low is None) != (high is None):
        raise ValueError("action bounds: give both --action-low and --action-high, or neither")
    if low is None:
        index = getattr(getattr(model, "info", None), "action_space", None) or {}
        low, high = index.get("low"), index.get("high")
    if low is None and fallback is not None:
        low, high = fallback.low, fallback.high
    space = ActionSpace("continuous", dim=c.action_dim, low=_floats(low), high=_floats(high))
    if space.low is not None and any(lo >= hi for lo, hi in zip(space.low, space.high, strict=True)):
        raise ValueError(f"action bounds: every low must be below its high, got low={space.low}, high={space.high}")
    return space


def _floats(x: list[float] | None) -> list[float] | None:
    return None if x is None else [float(v) for v in x]


def check_sampling(env: Any, samples: int, uncertainty: float) -> None:
    """``samples > 1`` needs a sampling temperature above 0 (argmax rollouts of one plan are all the same)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    if uncertainty < 0:
        raise ValueError(f"uncertainty must be >= 0, got {uncertainty}")
    rollout = getattr(env, "rollout", None)
    if samples > 1 and rollout is not None and rollout.temperature <= 0:
        raise ValueError(f"samples={samples} rollouts per plan need a sampling temperature > 0 (got "
                         f"{rollout.temperature}): at temperature 0 they are identical")
    if uncertainty > 0 and samples < 2:
        raise ValueError("uncertainty > 0 penalises the spread of sampled returns: it needs samples >= 2")


# ---- scoring --------------------------------------------------------------------------------------------------


def repeat_context(context: torch.Tensor, context_actions: torch.Tensor | None, rows: int,
                   device: torch.device | str | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One context ``(t0, 3, h, w)`` and its actions ``(t0 - 1[, a])`` (or both with a leading batch of 1) ->
    ``rows`` copies ``(rows, t0, 3, h, w)``, ``(rows, t0 - 1[, a])`` (None for a one-frame context)."""
    if context.ndim == 5:
        if context.shape[0] != 1:
            raise ValueError(f"context: planners take one context, got a batch of {context.shape[0]}")
        context = context[0]
        context_actions = None if context_actions is None else context_actions[0]
    if context.ndim != 4:
        raise ValueError(f"context: expected (t, 3, h, w) frames, got {tuple(context.shape)}")
    frames = context[None].expand(rows, *context.shape)
    if device is not None:
        frames = frames.to(device)
    acts = None
    if context_actions is not None and context.shape[0] > 1:
        acts = context_actions[None].expand(rows, *context_actions.shape).to(device or context_actions.device)
    return frames, acts


@dataclass
class Imagined:
    """Imagined rollouts of ``b`` rows over ``H`` steps: ``returns`` ``(b,)`` (survival-weighted, discounted,
    plus the bootstrap value); ``rewards`` and ``terminations`` ``(b, H)``; ``survival`` ``(b, H + 1)`` the
    probability of being alive before each step; ``tokens`` ``(b, k, h, w)`` the last ``k`` frames (context
    frames included where the rollout is shorter)."""

    returns: torch.Tensor
    rewards: torch.Tensor
    terminations: torch.Tensor
    survival: torch.Tensor
    tokens: torch.Tensor


def discounted_return(rewards: torch.Tensor, terminations: torch.Tensor, discount: float,
                      bootstrap: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``(b, H)`` rewards and termination probabilities -> the survival-weighted discounted return ``(b,)`` and the
    survival ``(b, H + 1)``; ``bootstrap`` ``(b,)`` is the value of the state after the last step."""
    alive = torch.cumprod(torch.cat([terminations.new_ones(len(terminations), 1), 1 - terminations], 1), 1)  # (b, H+1)
    h = rewards.shape[1]
    powers = discount ** torch.arange(h + 1, dtype=rewards.dtype, device=rewards.device)  # (H+1,)
    ret = (powers[:h] * alive[:, :h] * rewards).sum(1)
    if bootstrap is not None:
        ret = ret + powers[h] * alive[:, h] * bootstrap
    return ret, alive


@torch.no_grad()
def imagine(env: ImaginedEnv, context: torch.Tensor, context_actions: torch.Tensor | None, actions: torch.Tensor,
            discount: float = 0.99, value_fn: ValueFn | None = None, value_frames: int = 1) -> Imagined:
    """Roll ``actions`` ``(b, H)`` / ``(b, H, a)`` out from ``b`` copies of one context, in one batch.

    Args:
        env: the imagined environment (reset once here with the repeated context).
        context: ``(t0, 3, h, w)`` frames, uint8 or float in [-1, 1].
        context_actions: ``(t0 - 1[, a])`` actions between the context frames, or None (the null action).
        actions: one action sequence per row.
        discount: per-step discount ``gamma``.
        value_fn: bootstrap value of the last state, from the tokens of its last ``value_frames`` frames.
    """
    b, h = actions.shape[:2]
    frames, acts = repeat_context(context, context_actions, b, actions.device)
    history = env.reset(frames, acts)  # (b, t0, h', w')
    recent = list(history[:, -value_frames:].unbind(1))
    rewards, terms = [], []
    for t in range(h):
        out = env.step(actions[:, t])
        rewards.append(out.rewards.float())
        terms.append(out.terminations.float())
        recent = [*recent[1:], out.tokens] if len(recent) >= value_frames else [*recent, out.tokens]
    rewards_t, terms_t = torch.stack(rewards, 1), torch.stack(terms, 1)  # (b, H)
    tokens = torch.stack(recent, 1)
    bootstrap = None if value_fn is None else value_fn(tokens).float().to(rewards_t.device)
    returns, alive = discounted_return(rewards_t, terms_t, discount, bootstrap)
    return Imagined(returns, rewards_t, terms_t, alive, tokens)


@dataclass
class PlanScores:
    """Scores of ``p`` plans: ``score`` ``(p,)`` what planners maximise (``mean - uncertainty * std``);
    ``mean`` and ``std`` ``(p,)`` over the ``k`` sampled returns ``returns`` ``(p, k)``; ``frames`` imagined
    frames this took (rows x steps)."""

    score: torch.Tensor
    mean: torch.Tensor
    std: torch.Tensor
    returns: torch.Tensor
    frames: int


def score_plans(env: ImaginedEnv, context: torch.Tensor, context_actions: torch.Tensor | None, plans: torch.Tensor,
                discount: float = 0.99, samples: int = 1, uncertainty: float = 0.0,
                value_fn: ValueFn | None = None, value_frames: int = 1) -> PlanScores:
    """Score ``plans`` ``(p, H)`` / ``(p, H, a)`` from one context: ``samples`` imagined rollouts per plan (all
    ``p * samples`` rows in one batch), score ``mean - uncertainty * std`` of their returns (see the module
    docstring)."""
    p, h = plans.shape[:2]
    rows = plans.repeat_interleave(samples, 0)  # (p k, H[, a]): a plan's samples are adjacent
    out = imagine(env, context, context_actions, rows, discount, value_fn, value_frames)
    returns = out.returns.view(p, samples)
    mean = returns.mean(1)
    std = returns.std(1, correction=0) if samples > 1 else torch.zeros_like(mean)
    return PlanScores(mean - uncertainty * std, mean, std, returns, p * samples * h)


@dataclass
class Plan:
    """A planner's decision: ``action`` the first action (``()`` int64 or ``(a,)`` float, on the CPU);
    ``actions`` the whole planned sequence ``(H[, a])`` (what the video renders); ``score`` its predicted
    return; ``info`` planner-specific numbers (visit counts, iterations)."""

    action: torch.Tensor
    actions: torch.Tensor
    score: float = float("nan")
    info: dict[str, Any] | None = None
