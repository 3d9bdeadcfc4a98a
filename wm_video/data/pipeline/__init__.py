"""Data pipelines: plain video folders and LeRobot datasets into episode-clip shards.

Stages (each re-runnable, each recorded in a manifest under ``OUT/manifest/``): probe -> clip -> filter ->
shard -> stats. ``runner.py`` drives them; ``videos.py`` and ``lerobot.py`` are the sources; the user guide
is ``docs/data-pipelines.md``.

    from wm_video.data.pipeline import PipelineConfig, VideoSource, run_pipeline
    run_pipeline(VideoSource("videos/"), PipelineConfig(size=64, clip_len=16), "data/videos")
"""

from wm_video.data.pipeline.config import PipelineConfig
from wm_video.data.pipeline.lerobot import LeRobotSource
from wm_video.data.pipeline.runner import STAGES, run_pipeline
from wm_video.data.pipeline.videos import VideoSource

__all__ = ["STAGES", "LeRobotSource", "PipelineConfig", "VideoSource", "run_pipeline"]
