"""Task text -> a per-clip conditioning offset ``(b, c)``, added to every frame's action vector (the adaLN input of
every block) and to the outcome heads' action input.

The embedding ``(b, text_dim)`` comes from a frozen text encoder outside the model
(:mod:`wm_video.models.text_encoder`); it is layer-normed without parameters (T5's mean-pooled and CLIP's pooled
vectors differ in scale by orders of magnitude) and passed through an MLP whose last layer starts at zero, so a
model given text starts exactly as the model without it (and a text-free model fine-tuned with text starts from
itself). "No text" is the zero offset: a clip whose text is dropped in training (``text_dropout``), the
unconditional stream of classifier-free guidance on text, and ``text=None`` on a text model.
"""

from __future__ import annotations

import torch
from torch import nn

from wm_video.models.checks import check_values
from wm_video.models.dynamics.config import DynamicsConfig


class TextConditioning(nn.Module):
    """Text embeddings ``(b, text_dim)`` -> conditioning offsets ``(b, c)``. Args: config: the model's config
    (``text_dim``, ``cond_dim``)."""

    def __init__(self, config: DynamicsConfig) -> None:
        super().__init__()
        self.text_dim = config.text_dim
        self.norm = nn.LayerNorm(config.text_dim, elementwise_affine=False)
        self.mlp = nn.Sequential(nn.Linear(config.text_dim, config.cond_dim), nn.SiLU(),
                                 nn.Linear(config.cond_dim, config.cond_dim))

    def zero_init_(self) -> None:
        """The offset starts at zero for every text (last layer zero); the first layer gets PyTorch's fan-in init
        back after the model's generic 0.02 init, as its inputs are unit-scale."""
        self.mlp[0].reset_parameters()
        nn.init.zeros_(self.mlp[-1].weight)
        nn.init.zeros_(self.mlp[-1].bias)

    def check(self, text: torch.Tensor, b: int, where: str = "text") -> None:
        """Clear errors for embeddings that are not float ``(b, text_dim)`` (finite, outside
        :func:`~wm_video.models.checks.validated`)."""
        if not text.is_floating_point() or tuple(text.shape) != (b, self.text_dim):
            raise ValueError(f"{where}: expected text embeddings, float (b, text_dim) = {(b, self.text_dim)}, got "
                             f"{str(text.dtype).removeprefix('torch.')} {tuple(text.shape)}")
        if check_values() and not bool(torch.isfinite(text).all()):
            raise ValueError(f"{where}: NaN or inf in the text embeddings")

    def forward(self, text: torch.Tensor, b: int, drop_prob: float = 0.0) -> torch.Tensor:
        """``text`` ``(b, text_dim)`` -> offsets ``(b, c)``; ``drop_prob``: probability, per clip, of the zero
        offset (no text)."""
        self.check(text, b)
        weight = self.mlp[0].weight
        offset = self.mlp(self.norm(text.float()).to(weight.dtype))  # (b, c)
        if drop_prob > 0:
            keep = torch.rand(b, device=offset.device) >= drop_prob  # (b,)
            offset = offset * keep[:, None].to(offset.dtype)
        return offset
