"""Diffusion decoder: renders a tokenizer's tokens into sharp frames in a few denoising steps."""

from wm_video.models.decoder.config import DecoderConfig
from wm_video.models.decoder.model import DiffusionDecoder

__all__ = ["DecoderConfig", "DiffusionDecoder"]
