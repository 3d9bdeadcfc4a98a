"""The settings of ``wm-video generate`` as one typed config (kind ``generate``), with its presets."""

from __future__ import annotations

from dataclasses import dataclass

from wm_video.config import register_kind, register_preset
from wm_video.task_text import TaskTextSettings


@dataclass
class GenerateConfig(TaskTextSettings):
    """How a context video's future is predicted and written.

    Args:
        num_frames: frames to predict (default None: as many as there are actions: all of the actions file, or the
            clip's own actions up to the clip's end).
        context_frames: context frames to use (default None: 4, at most the model's window).
        gif: also write a GIF beside the mp4 (default False).
        side_by_side: put the dataset clip's real frames (the context must be a dataset clip) to the right of the
            prediction; where the clip ends before the prediction, the panel is blank and a warning says so
            (default False).
        num_inference_steps: diffusion decoder steps per frame (default None: the decoder's own).
        temperature: token sampling temperature. The default 1 samples, which keeps the video lively (argmax
            rollouts tend to freeze or smear motion); 0 is argmax, deterministic (what 'wm-video eval' scores).
        maskgit_steps: MaskGIT passes per frame (default 8).
        seed: random seed; the same seed gives the same video (default 0).
        scale: upscaling factor of the written video, nearest neighbour (default 4).
        domain: the action domain of a world model trained on several (``WorldModel.domains``); None (the default)
            for a model of one action space.
        task: the task text of the rollout, for a world model trained with task text (default None: the dataset
            clip's own task; an error where the context has none); refused for a model trained without text.
    """

    num_frames: int | None = None
    context_frames: int | None = None
    gif: bool = False
    side_by_side: bool = False
    num_inference_steps: int | None = None
    temperature: float = 1.0
    maskgit_steps: int = 8
    seed: int = 0
    scale: int = 4
    domain: str | None = None

    def validate(self) -> None:
        """Every setting in range, checked before any file or model is read."""
        for flag, value, low in (("--num-frames", self.num_frames, 1), ("--context-frames", self.context_frames, 1),
                                 ("--num-inference-steps", self.num_inference_steps, 1),
                                 ("--maskgit-steps", self.maskgit_steps, 1), ("--scale", self.scale, 1),
                                 ("--temperature", self.temperature, 0)):
            if value is not None and value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")


register_kind("generate", GenerateConfig)


@register_preset("generate", "default")
def _generate_default() -> GenerateConfig:
    return GenerateConfig()


@register_preset("generate", "debug")
def _generate_debug() -> GenerateConfig:
    # seconds on a CPU: one MaskGIT pass and one decoder step per frame, no upscaling
    return GenerateConfig(maskgit_steps=1, num_inference_steps=1, scale=1)
