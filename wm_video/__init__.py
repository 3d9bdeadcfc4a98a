"""wm-video: a video-prediction world model codebase (tokenizer, dynamics transformer, diffusion decoder)."""

__version__ = "0.1.0"
