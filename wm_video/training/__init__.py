"""Training set-up shared by every model: the Trainer from config; parallelism is applied here, not in models."""

from wm_video.training.trainer import build_trainer
from wm_video.training.trainer_config import TrainerConfig

__all__ = ["TrainerConfig", "build_trainer"]
