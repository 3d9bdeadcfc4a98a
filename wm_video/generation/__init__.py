"""Action-conditioned video generation with a world model: inputs, the pipeline and video output."""

from wm_video.generation.pipeline import GenerationOutput, WorldModelPipeline

__all__ = ["GenerationOutput", "WorldModelPipeline"]
