"""Action-conditioned video generation with a world model: :func:`~wm_video.generation.generate.generate_video`
(what ``wm-video generate`` runs), its config (:mod:`.config`), the pipeline and its inputs (context videos, action
files). Video files are :mod:`wm_video.utils.video_io`'s."""

from wm_video.generation.config import GenerateConfig
from wm_video.generation.generate import GenerateResult, generate_video
from wm_video.generation.pipeline import GenerationOutput, WorldModelPipeline

__all__ = ["GenerateConfig", "GenerateResult", "GenerationOutput", "WorldModelPipeline", "generate_video"]
