"""Optional tokenizer losses beyond L1/L2: a perceptual feature distance and a patch adversarial loss.

No pretrained network can be downloaded here, so the perceptual loss takes a local weights file for its
feature network (VGG16's convolutional ``features``, e.g. exported from torchvision as a state dict) and
refuses to run without one. The patch discriminator is trained from scratch. Its generator loss is weighted
adaptively, as in VQGAN (Esser et al. 2021): the ratio of the reconstruction loss's gradient norm to the
adversarial loss's gradient norm at the decoder's last layer, so neither term drowns the other. It starts only
after ``start_step``, once reconstructions are meaningful.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

# VGG16 "features": channel widths, "M" = 2x2 max-pool. Distances are taken after these ReLUs (by index).
_VGG16 = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512]
_TAPS = (3, 8, 15, 22, 29)  # relu1_2, relu2_2, relu3_3, relu4_3, relu5_3 in torchvision's numbering
# ImageNet statistics the VGG weights expect, for inputs in [0, 1].
_MEAN, _STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def vgg16_features() -> nn.Sequential:
    layers: list[nn.Module] = []
    c = 3
    for v in _VGG16:
        if v == "M":
            layers.append(nn.MaxPool2d(2))
        else:
            layers += [nn.Conv2d(c, int(v), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(v)
    return nn.Sequential(*layers)


def load_state_dict_file(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from ``.safetensors`` or a torch file, loaded without pickle (``weights_only=True``)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state.get("state_dict", state) if isinstance(state, dict) else state


class PerceptualLoss(nn.Module):
    """Mean squared distance of channel-normalised VGG16 features (LPIPS without learned layer weights).

    Args:
        weights: local file with the VGG16 ``features`` state dict (keys ``0.weight`` ... or
            ``features.0.weight`` ...), as ``.safetensors`` or a torch file.
    """

    def __init__(self, weights: str | Path | None) -> None:
        super().__init__()
        if not weights:
            raise ValueError("the perceptual loss needs a local VGG16 weights file (model.perceptual_weights); "
                             "none can be downloaded here. Set model.perceptual_weight=0 to train without it")
        path = Path(weights)
        if not path.is_file():
            raise FileNotFoundError(f"perceptual loss weights {path} not found")
        self.net = vgg16_features()
        state = {k.removeprefix("features."): v for k, v in load_state_dict_file(path).items()}
        missing, _ = self.net.load_state_dict(state, strict=False)
        if missing:
            raise ValueError(f"{path} is not a VGG16 features state dict: missing {missing[:4]}...")
        self.net.requires_grad_(False).eval()
        self.register_buffer("mean", torch.tensor(_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(_STD).view(1, 3, 1, 1), persistent=False)

    def train(self, mode: bool = True) -> PerceptualLoss:
        super().train(mode)
        self.net.eval()  # a frozen feature network, always
        return self

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x``, ``y``: ``(n, 3, h, w)`` in [-1, 1]."""
        h = torch.cat([x, y]).add(1).div(2).sub(self.mean).div(self.std)
        loss = h.new_zeros(())
        for i, layer in enumerate(self.net):
            h = layer(h)
            if i in _TAPS:
                a, b = F.normalize(h, dim=1).chunk(2)
                loss = loss + (a - b).pow(2).sum(1).mean()
            if i >= _TAPS[-1]:
                break
        return loss


class PatchDiscriminator(nn.Module):
    """A PatchGAN: one real/fake logit per overlapping patch of the frame (``(n, 1, h/8, w/8)`` for 3 layers).

    Args:
        channels: width of the first layer (doubling per layer).
        layers: strided convolution layers.
    """

    def __init__(self, channels: int = 64, layers: int = 3) -> None:
        super().__init__()
        mods: list[nn.Module] = [nn.Conv2d(3, channels, 4, 2, 1), nn.LeakyReLU(0.2)]
        c = channels
        for i in range(1, layers):
            c_out = channels * min(2**i, 8)
            mods += [nn.Conv2d(c, c_out, 4, 2, 1, bias=False), nn.GroupNorm(min(32, c_out // 4), c_out),
                     nn.LeakyReLU(0.2)]
            c = c_out
        mods.append(nn.Conv2d(c, 1, 3, 1, 1))
        self.net = nn.Sequential(*mods)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def hinge_d_loss(logits_real: torch.Tensor, logits_fake: torch.Tensor) -> torch.Tensor:
    """Discriminator hinge loss: push real logits above 1 and fake ones below -1."""
    return 0.5 * (F.relu(1 - logits_real).mean() + F.relu(1 + logits_fake).mean())


def generator_loss(logits_fake: torch.Tensor) -> torch.Tensor:
    return -logits_fake.mean()


def adaptive_weight(rec_loss: torch.Tensor, g_loss: torch.Tensor, last_layer: torch.Tensor,
                    max_weight: float = 1e4) -> torch.Tensor:
    """``||d rec / d W|| / (||d g / d W|| + 1e-4)`` at the decoder's last weight ``W``, clamped, detached."""
    rec_grad = torch.autograd.grad(rec_loss, last_layer, retain_graph=True)[0]
    g_grad = torch.autograd.grad(g_loss, last_layer, retain_graph=True)[0]
    return (rec_grad.norm() / (g_grad.norm() + 1e-4)).clamp(0, max_weight).detach()


def foreground_mask(frames: torch.Tensor, threshold: float = 0.1) -> torch.Tensor:
    """Pixels that differ from their clip's background: ``(b, t, 3, h, w)`` in [-1, 1] -> ``(b, t, 1, h, w)`` bool.

    The background of a clip is its per-pixel median over time, so the mask holds what moves or changes (sprites,
    eaten dots, the ball), dilated by one pixel to cover the edges. Atari sprites cover well under 1% of a frame:
    an unweighted L1/L2 loss reaches 29 dB while dropping them, so ``foreground_weight`` weights these pixels up.
    A clip of fewer than 3 frames has no meaningful median, and gets an empty mask.
    """
    if frames.shape[1] < 3:
        return torch.zeros_like(frames[:, :, :1], dtype=torch.bool)
    background = frames.median(dim=1, keepdim=True).values
    moving = (frames - background).abs().amax(dim=2, keepdim=True) > threshold  # (b, t, 1, h, w)
    dilated = F.max_pool2d(moving.flatten(0, 1).float(), 3, stride=1, padding=1)
    return dilated.view_as(moving) > 0


def temporal_stability_loss(lookup: torch.Tensor, frames: torch.Tensor, threshold: float = 16 / 255) -> torch.Tensor:
    """Pull together the quantizer inputs of consecutive frames at the token cells whose pixels did not change.

    ``lookup`` ``(b, t, c, h', w')`` (the quantizer's ``lookup`` vectors, frames in order), ``frames``
    ``(b, t, 3, h, w)`` in [-1, 1] with ``t >= 2`` consecutive frames. A cell is static when no pixel inside it
    moves by more than ``threshold`` (any channel) from frame ``i`` to ``i + 1``; the loss is the mean squared
    distance of the two frames' vectors over static cells (0 when none is static).

    Why: the encoder's receptive field spans most of a 64x64 frame, so a sprite moving anywhere nudges the latents of
    every cell, and near a code boundary a cell whose pixels stayed put flips its token. On Atari Boxing 42% of the
    tokens changed from one frame to the next while 3% of the pixels did: most of what a dynamics model had to
    predict was this flicker, not the world.
    """
    f = frames.shape[-1] // lookup.shape[-1]
    moved = (frames[:, 1:] - frames[:, :-1]).abs().amax(2)  # (b, t-1, h, w)
    static = F.max_pool2d(moved.flatten(0, 1), f).view(*moved.shape[:2], *lookup.shape[-2:]) <= threshold
    dist = (lookup[:, 1:] - lookup[:, :-1]).pow(2).sum(2)  # (b, t-1, h', w')
    return (dist * static).sum() / static.sum().clamp(min=1)
