"""Action-conditioned spatiotemporal transformer over token frames: next-frame tokens, rewards, terminations."""

from wm_video.models.dynamics.config import (
    ActionDomain,
    DynamicsConfig,
    training_flops_per_step,
    training_flops_per_token,
)
from wm_video.models.dynamics.maskgit import maskgit_generate
from wm_video.models.dynamics.model import DynamicsModel, DynamicsOutput
from wm_video.models.dynamics.sampling import (
    Rollout,
    RolloutOutput,
    RolloutStep,
    rollout,
    sample_next_frame,
)

__all__ = [
    "ActionDomain",
    "DynamicsConfig",
    "DynamicsModel",
    "DynamicsOutput",
    "Rollout",
    "RolloutOutput",
    "RolloutStep",
    "maskgit_generate",
    "rollout",
    "sample_next_frame",
    "training_flops_per_step",
    "training_flops_per_token",
]
