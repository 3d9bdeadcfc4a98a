"""Perceptual and adversarial tokenizer losses: local weights only, hinge signs, the adaptive weight formula."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from wm_video.models.tokenizer.losses import (
    PatchDiscriminator,
    PerceptualLoss,
    adaptive_weight,
    generator_loss,
    hinge_d_loss,
    temporal_stability_loss,
    vgg16_features,
)


def test_perceptual_loss_needs_a_local_weights_file(tmp_path):
    with pytest.raises(ValueError, match="local VGG16 weights file"):
        PerceptualLoss(None)
    with pytest.raises(FileNotFoundError, match=r"nope.safetensors not found"):
        PerceptualLoss(tmp_path / "nope.safetensors")
    save_file({"something.weight": torch.zeros(1)}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="not a VGG16 features state dict"):
        PerceptualLoss(tmp_path / "bad.safetensors")


@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_perceptual_loss_plumbing_with_random_weights(tmp_path, fmt):
    torch.manual_seed(0)
    state = {f"features.{k}": v for k, v in vgg16_features().state_dict().items()}  # torchvision's key names
    path = tmp_path / f"vgg.{fmt}"
    save_file(state, str(path)) if fmt == "safetensors" else torch.save(state, path)
    loss = PerceptualLoss(path)
    x = torch.rand(2, 3, 32, 32) * 2 - 1
    assert float(loss(x, x)) == pytest.approx(0.0, abs=1e-6)
    y = (x + 0.3 * torch.randn_like(x)).clamp(-1, 1).requires_grad_(True)
    d = loss(x, y)
    d.backward()
    assert float(d) > 0 and y.grad.abs().sum() > 0
    assert not any(p.requires_grad for p in loss.net.parameters())


def test_patch_discriminator_and_hinge_losses():
    disc = PatchDiscriminator(channels=8, layers=3)
    assert disc(torch.zeros(2, 3, 64, 64)).shape == (2, 1, 8, 8)
    assert float(hinge_d_loss(torch.full((4,), 2.0), torch.full((4,), -2.0))) == 0.0  # confident and right
    assert float(hinge_d_loss(torch.full((4,), -1.0), torch.full((4,), 1.0))) == 2.0
    assert float(generator_loss(torch.full((4,), 3.0))) == -3.0


def test_adaptive_weight_is_the_gradient_norm_ratio():
    w = torch.randn(4, 4, requires_grad=True)
    rec = (w * 3).pow(2).sum()
    g = (w * 0.5).sum()
    expected = (2 * 9 * w).norm() / (torch.full_like(w, 0.5).norm() + 1e-4)
    torch.testing.assert_close(adaptive_weight(rec, g, w), expected.detach())


def test_training_with_a_perceptual_loss_from_a_local_file(tmp_path):
    from wm_video.config import load_config
    from wm_video.training.tokenizer_module import TokenizerModule

    save_file(vgg16_features().state_dict(), str(tmp_path / "vgg.safetensors"))
    weights = tmp_path / "vgg.safetensors"
    cfg = load_config("train_tokenizer", preset_name="debug",
                      overrides=["model.perceptual_weight=0.1", f"model.perceptual_weights={weights}"])
    module = TokenizerModule(cfg)
    batch = {"frames": torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)}
    loss, logs = module.model.compute_loss(batch, module.perceptual)
    loss.backward()
    assert "perceptual" in logs and float(logs["perceptual"]) > 0
    assert not any(k.startswith("perceptual") for k in module.model.state_dict())  # never in the export
    with pytest.raises(ValueError, match="local VGG16 weights file"):
        TokenizerModule(load_config("train_tokenizer", preset_name="debug", overrides=["model.perceptual_weight=0.1"]))


def test_adversarial_terms_give_each_side_only_its_own_gradients():
    from wm_video.config import load_config
    from wm_video.models.tokenizer import VQTokenizer

    torch.manual_seed(0)
    # eval mode: no EMA codebook updates or restarts, so repeated passes see the same codes
    model = VQTokenizer(load_config("tokenizer", preset_name="debug", overrides=["disc_weight=0.5"])).eval()
    disc = PatchDiscriminator(channels=8, layers=2)
    batch = {"frames": torch.randint(0, 256, (2, 2, 3, 32, 32), dtype=torch.uint8)}
    loss, logs = model.compute_loss(batch, disc=disc)
    loss.backward()
    assert {"gan_g", "gan_d", "gan_weight"} <= set(logs) and float(logs["gan_weight"]) > 0
    combined = {n: p.grad.clone() for n, p in disc.named_parameters()}
    enc_grad = model.encoder.conv_in.weight.grad.clone()

    # The discriminator's gradients are those of its hinge loss alone (on the same reconstructions) ...
    disc.zero_grad()
    model.zero_grad()
    frames = batch["frames"].float() / 127.5 - 1
    recon = model(frames).recon.flatten(0, 1)
    hinge_d_loss(disc(frames.flatten(0, 1)), disc(recon.detach())).backward()
    for n, p in disc.named_parameters():
        torch.testing.assert_close(p.grad, combined[n], msg=n)
    # ... and the tokenizer's gradients differ from the reconstruction-only ones: the generator term reaches it.
    model.zero_grad()
    model.compute_loss(batch)[0].backward()
    assert not torch.allclose(model.encoder.conv_in.weight.grad, enc_grad)


def test_temporal_stability_loss_counts_only_static_cells():
    frames = torch.full((1, 2, 3, 4, 4), -1.0)  # two 4x4 frames, 2x2 cells of 2x2 pixels
    frames[0, 1, :, 0, 0] = 1.0  # a pixel of the top-left cell moves
    lookup = torch.zeros(1, 2, 2, 2, 2)  # (b, t, c, h', w')
    lookup[0, 1, :, 0, 0] = 5.0  # the moving cell's vector changes a lot: not penalised
    lookup[0, 1, 0, 1, 1] = 0.5  # a static cell's vector changes: squared distance 0.25
    loss = temporal_stability_loss(lookup, frames)
    assert torch.isclose(loss, torch.tensor(0.25 / 3))  # 3 static cells
    lookup.requires_grad_(True)
    temporal_stability_loss(lookup, frames).backward()
    assert lookup.grad[0, :, :, 0, 0].abs().sum() == 0 and lookup.grad[0, :, 0, 1, 1].abs().sum() > 0
    still = torch.zeros(1, 2, 3, 4, 4)
    frames_all_moving = torch.stack([still[:, 0], still[:, 1] + 1], 1)
    assert temporal_stability_loss(lookup.detach(), frames_all_moving) == 0  # nothing static: nothing to pull


def test_temporal_stability_trains_with_consecutive_pairs():
    from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
    from wm_video.training.tokenizer_module import sample_pairs

    x = torch.arange(2 * 6).view(2, 6, 1, 1, 1).expand(2, 6, 3, 8, 8)
    pairs = sample_pairs(x, 4, generator=torch.Generator().manual_seed(0))
    assert pairs.shape[:2] == (2, 4)
    assert ((pairs[:, 1::2] - pairs[:, ::2]) == 1).all()  # each pair is two consecutive frames, in order
    torch.manual_seed(0)
    cfg = TokenizerConfig(resolution=16, downsample=4, base_channels=8, channel_mult=[1, 1, 1], norm_groups=4,
                          latent_channels=8, codebook_size=16, codebook_dim=4, temporal_weight=1.0)
    model = VQTokenizer(cfg)
    frames = torch.randint(0, 256, (2, 2, 3, 16, 16), dtype=torch.uint8)
    frames[:, 1, :, :8] = frames[:, 0, :, :8]  # the top half does not change: its cells are static
    loss, logs = model.compute_loss({"frames": frames})
    assert "temporal" in logs and logs["temporal"] > 0 and torch.isfinite(loss)
    with pytest.raises(ValueError, match="temporal_weight"):
        TokenizerConfig(temporal_weight=-1)
