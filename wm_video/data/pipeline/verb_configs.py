"""The settings of ``wm-video data videos`` and ``data lerobot`` as config kinds ``data_videos`` and
``data_lerobot``, with their presets.

Both verbs run one pipeline (:mod:`wm_video.data.pipeline`), so both take its settings
(:class:`DataPipelineConfig`: the pipeline's :class:`PipelineConfig` with the choices of its word-valued fields
spelled as types, which become the flags' choices); a LeRobot dataset adds which of its features to read
(:class:`LeRobotConfig`). Their ``default`` presets differ where the data do: a video folder drops static and
near-duplicate clips, robot data keep their still moments.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wm_video.config import register_kind, register_preset
from wm_video.data.pipeline.config import PipelineConfig
from wm_video.data.pipeline.lerobot import LeRobotSource


@dataclass
class DataPipelineConfig(PipelineConfig):
    """The pipeline's settings as the data verbs take them.

    Args:
        interpolation: resize filter (default area).
        storage: frame storage: raw or png (lossless), mp4 (H.264 yuv444p) (default raw).
        dedup: drop duplicate clips: none, exact (identical frames), near (also perceptual near duplicates).
    """

    interpolation: Literal["area", "bilinear", "bicubic", "lanczos"] = "area"
    storage: Literal["raw", "png", "mp4"] = "raw"
    dedup: Literal["none", "exact", "near"] = "near"

    def pipeline(self) -> PipelineConfig:
        """The pipeline's own settings (what its manifest records), without the verbs' extra fields."""
        return PipelineConfig(**{f.name: getattr(self, f.name) for f in dataclasses.fields(PipelineConfig)})


@dataclass
class LeRobotConfig(DataPipelineConfig):
    """A LeRobot dataset's pipeline settings: the pipeline's, and the features to read.

    Args:
        camera: camera feature, full or short (observation.images.top or top); optional with one camera (default
            None).
        action_key: feature holding the actions (default action).
        state_key: feature kept as clip state: auto (observation.state if present), a key, or none (default auto).
        reward_key: rewards: auto (next.reward if present), a key, or none (default auto).
        done_key: terminations: auto (next.done if present), a key, or none (default auto).
    """

    camera: str | None = None
    action_key: str = "action"
    state_key: str = "auto"
    reward_key: str = "auto"
    done_key: str = "auto"

    def source(self, data: str | Path) -> LeRobotSource:
        return LeRobotSource(str(data), camera=self.camera, action_key=self.action_key, state_key=self.state_key,
                             reward_key=self.reward_key, done_key=self.done_key)


register_kind("data_videos", DataPipelineConfig)
register_kind("data_lerobot", LeRobotConfig)


@register_preset("data_videos", "default")
def _videos_default() -> DataPipelineConfig:
    return DataPipelineConfig()


@register_preset("data_videos", "debug")
def _videos_debug() -> DataPipelineConfig:
    return DataPipelineConfig(size=32, clip_len=8, clips_per_shard=4, workers=1)


@register_preset("data_lerobot", "default")
def _lerobot_default() -> LeRobotConfig:
    # min_motion 0 and no dedup: a robot holding still is data, not a broken clip
    return LeRobotConfig(min_motion=0.0, dedup="none")


@register_preset("data_lerobot", "debug")
def _lerobot_debug() -> LeRobotConfig:
    return dataclasses.replace(_lerobot_default(), size=32, clip_len=8, clips_per_shard=4, workers=1)
