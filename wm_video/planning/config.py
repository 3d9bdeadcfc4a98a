"""The settings of ``wm-video plan`` (CEM and MCTS) and ``wm-video imagine-train`` as typed configs (kinds ``plan``
and ``imagine_train``), with their presets: ``default`` (the verbs' defaults) and ``debug`` (seconds on a CPU)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

from wm_video.config import register_kind, register_preset
from wm_video.planning.cem import CEMConfig
from wm_video.planning.imagination import ImagineConfig
from wm_video.planning.mcts import MCTSConfig
from wm_video.task_text import TaskTextSettings


@dataclass
class RealRunConfig:
    """How agents are run in the real simulator (the part ``plan`` and ``imagine-train`` share).

    Args:
        episodes: real episodes per agent (default 10).
        max_steps: steps per episode (default None: the simulator's own limit).
        baseline: also run the random policy on the same episode seeds (default True).
        video_episodes: episodes recorded per agent (default 1).
        context_frames: real frames given to the agent (default None: 4, at most the model's window).
        action_low: continuous lower bounds (default None: the model's index, else the simulator's).
        action_high: continuous upper bounds (same defaults).
        temperature: token sampling temperature of imagined rollouts.
        maskgit_steps: MaskGIT passes per imagined frame (default 2).
        num_inference_steps: diffusion decoder steps per rendered frame (default None: the decoder's own).
        scale: upscaling of the video frames (default 2).
        seed: seed of episodes, sampling and search (default 0).
        domain: the action domain of a world model trained on several, the one the simulator's actions are of
            (default None: a model of one action space).
    """

    episodes: int = 10
    max_steps: int | None = None
    baseline: bool = True
    video_episodes: int = 1
    context_frames: int | None = None
    action_low: list[float] | None = None
    action_high: list[float] | None = None
    temperature: float = 0.0
    maskgit_steps: int = 2
    num_inference_steps: int | None = None
    scale: int = 2
    seed: int = 0
    domain: str | None = None

    def validate(self) -> None:
        if self.max_steps is not None and self.max_steps < 1:
            raise ValueError(f"--max-steps must be >= 1, got {self.max_steps}")
        if self.context_frames is not None and self.context_frames < 1:
            raise ValueError(f"--context-frames must be >= 1, got {self.context_frames}")


@dataclass
class PlanConfig(RealRunConfig, TaskTextSettings):
    """Closed-loop planning in the world model, replanning every step.

    Args:
        planner: cem (continuous actions) or mcts (discrete actions) (default cem).
        horizon: planned steps (CEM's sequence length, MCTS's maximum depth) (default 8).
        population: CEM: sequences scored per iteration (default 64).
        elites: CEM: best sequences the sampling distribution is refitted to (default 8).
        iterations: CEM: refits per decision (default 4).
        mppi: CEM: MPPI's score-weighted average instead of the elites' mean (default False).
        simulations: MCTS: leaves evaluated per decision (default 64).
        parallel: MCTS: leaves imagined together in one batch (default 16).
        rollout_depth: MCTS: random-action steps after a leaf that estimate its value (default 4).
        samples: imagined rollouts per plan; > 1 needs --temperature > 0 (default 1).
        uncertainty: penalty on the standard deviation of a plan's sampled returns (needs --samples >= 2;
            default 0).
        discount: per-step discount of predicted rewards (default 0.99).
        temperature: token sampling temperature of imagined rollouts (default 0: argmax, deterministic, so plans
            are compared on one predicted future each; > 0 with --samples scores several).
        value: an actor folder from 'wm-video imagine-train': its critic values the end of each plan (MCTS: also
            its policy as priors) (default None: no value).
        render_steps: plan steps rendered per decision for the video (default None: the whole plan).
        task: the task text the imagined rollouts are conditioned on, for a world model trained with task text
            (default None: a Meta-World simulator's task name, as 'wm-video data collect' records it, e.g.
            ``reach`` for metaworld/reach-v3; an error for other simulators); refused for a model without text.
    """

    planner: Literal["cem", "mcts"] = "cem"
    horizon: int = 8
    population: int = 64
    elites: int = 8
    iterations: int = 4
    mppi: bool = False
    simulations: int = 64
    parallel: int = 16
    rollout_depth: int = 4
    samples: int = 1
    uncertainty: float = 0.0
    discount: float = 0.99
    value: str | None = None
    render_steps: int | None = None

    def cem(self) -> CEMConfig:
        return CEMConfig(horizon=self.horizon, population=self.population, elites=self.elites,
                         iterations=self.iterations, discount=self.discount, mppi=self.mppi, samples=self.samples,
                         uncertainty=self.uncertainty)

    def mcts(self) -> MCTSConfig:
        return MCTSConfig(simulations=self.simulations, parallel=self.parallel, max_depth=self.horizon,
                          rollout_depth=self.rollout_depth, discount=self.discount, samples=self.samples,
                          uncertainty=self.uncertainty)


@dataclass
class ImagineTrainConfig(RealRunConfig, TaskTextSettings):
    """An actor-critic trained in imagination, then run in the real simulator.

    Args:
        iterations: training steps, one imagined batch each (default 300).
        batch_size: imagined episodes per step (default 16).
        horizon: imagined steps per episode (default 15).
        discount: per-step discount (default 0.99).
        return_lambda: lambda of the lambda-returns (default 0.95).
        entropy: weight of the policy's entropy bonus (default 3e-3).
        actor_lr: actor learning rate (default 3e-4).
        critic_lr: critic learning rate (default 3e-4).
        frames: frames of tokens the actor and critic read (default 2).
        start_states: real start contexts collected (default 256).
        temperature: token sampling temperature of imagined rollouts (default 1: sampled, so the actor learns
            from the spread of futures the model predicts, not from one argmax future).
        episodes: real evaluation episodes per agent (default 10; 0: no evaluation).
        log_every: training steps between entries of the training curve (default 10).
        task: the task text the imagined rollouts (training and the videos) are conditioned on, for a world model
            trained with task text (default None: a Meta-World simulator's task name where the start contexts come
            from --env, as for 'wm-video plan'; with --data, an error); refused for a model without text.
    """

    temperature: float = 1.0
    iterations: int = 300
    batch_size: int = 16
    horizon: int = 15
    discount: float = 0.99
    return_lambda: float = 0.95
    entropy: float = 3e-3
    actor_lr: float = 3e-4
    critic_lr: float = 3e-4
    frames: int = 2
    start_states: int = 256
    log_every: int = 10

    def imagine(self) -> ImagineConfig:
        return ImagineConfig(horizon=self.horizon, batch_size=self.batch_size, discount=self.discount,
                             return_lambda=self.return_lambda, entropy=self.entropy, actor_lr=self.actor_lr,
                             critic_lr=self.critic_lr)


register_kind("plan", PlanConfig)
register_kind("imagine_train", ImagineTrainConfig)


@register_preset("plan", "default")
def _plan_default() -> PlanConfig:
    return PlanConfig()


@register_preset("plan", "debug")
def _plan_debug() -> PlanConfig:
    return PlanConfig(episodes=1, max_steps=3, horizon=2, population=4, elites=2, iterations=1, simulations=4,
                      parallel=2, rollout_depth=1, maskgit_steps=1, video_episodes=0)


@register_preset("imagine_train", "default")
def _imagine_default() -> ImagineTrainConfig:
    return ImagineTrainConfig()


@register_preset("imagine_train", "debug")
def _imagine_debug() -> ImagineTrainConfig:
    return dataclasses.replace(ImagineTrainConfig(), iterations=3, batch_size=2, horizon=2, start_states=4,
                               maskgit_steps=1, episodes=1, max_steps=2, log_every=1, video_episodes=0)
