"""Planning and policy learning inside the world model.

- :mod:`.scoring`: the imagined environment planners step, the checks a model must pass, batched plan scoring.
- :mod:`.cem`: CEM / MPPI model-predictive control for continuous actions.
- :mod:`.mcts`: MuZero-style tree search for discrete actions.
- :mod:`.imagination`: an actor-critic trained on imagined rollouts (lambda-returns).
- :mod:`.closed_loop`: planners, actors and the random baseline in the real simulator, with video.
- :mod:`.starts`: real contexts (dataset clips or simulator frames) to start imagined episodes from.
- :mod:`.config`: the typed settings of ``wm-video plan`` and ``imagine-train`` (config kinds, presets).
- :mod:`.runner`: a planner or a trained actor in the real simulator against random, as ``wm-video plan`` and
  ``imagine-train`` run them; :mod:`.report`: their report (JSON and Markdown).
"""

from wm_video.planning.cem import CEMConfig, CEMPlanner
from wm_video.planning.closed_loop import ClosedLoopResult, PlanRenderer, RandomAgent, run_closed_loop, summarize
from wm_video.planning.config import ImagineTrainConfig, PlanConfig
from wm_video.planning.imagination import (
    ActorAgent,
    ActorCritic,
    ActorCriticConfig,
    ImaginationTrainer,
    ImagineConfig,
    StartStates,
    lambda_returns,
)
from wm_video.planning.mcts import MCTSConfig, MCTSPlanner
from wm_video.planning.runner import run_planner, train_actor
from wm_video.planning.scoring import (
    Plan,
    PlanScores,
    check_outcome_heads,
    imagine,
    model_action_space,
    score_plans,
)

__all__ = [
    "ActorAgent",
    "ActorCritic",
    "ActorCriticConfig",
    "CEMConfig",
    "CEMPlanner",
    "ClosedLoopResult",
    "ImaginationTrainer",
    "ImagineConfig",
    "ImagineTrainConfig",
    "MCTSConfig",
    "MCTSPlanner",
    "Plan",
    "PlanConfig",
    "PlanRenderer",
    "PlanScores",
    "RandomAgent",
    "StartStates",
    "check_outcome_heads",
    "imagine",
    "lambda_returns",
    "model_action_space",
    "run_closed_loop",
    "run_planner",
    "score_plans",
    "summarize",
    "train_actor",
]
