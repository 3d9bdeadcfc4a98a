"""VQ video tokenizer: frames -> discrete tokens -> frames."""

from wm_video.models.tokenizer.config import TokenizerConfig
from wm_video.models.tokenizer.model import TokenizerOutput, VQTokenizer

__all__ = ["TokenizerConfig", "TokenizerOutput", "VQTokenizer"]
