"""VQ tokenizer invariants on tiny models: shapes, code round trips, EMA and restarts, gradients, save/load."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import fit_losses

from wm_video.config import load_config, preset
from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.models.tokenizer.quantizer import FiniteScalarQuantizer, VectorQuantizerEMA


def tiny(**kw) -> TokenizerConfig:
    return load_config("tokenizer", preset_name="debug", overrides=[f"{k}={v}" for k, v in kw.items()])


def frames(b=2, t=3, size=32, seed=0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(b, t, 3, size, size, generator=g) * 2 - 1


@pytest.mark.parametrize("downsample", [4, 8, 16])
@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_shapes(downsample, quantizer):
    model = VQTokenizer(tiny(downsample=downsample, quantizer=quantizer)).eval()
    x = frames()
    tokens = model.tokenize(x)
    assert tokens.shape == (2, 3, 32 // downsample, 32 // downsample) and tokens.dtype == torch.int64
    assert 0 <= int(tokens.min()) and int(tokens.max()) < model.vocab_size
    assert model.detokenize(tokens).shape == x.shape
    out = model(x)
    assert out.recon.shape == x.shape and torch.equal(out.tokens, tokens)


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_indices_to_codes_matches_the_quantized_codes(quantizer):
    model = VQTokenizer(tiny(quantizer=quantizer)).eval()
    z = torch.randn(4, model.config.latent_channels, 8, 8)
    out = model.quantizer(z)
    torch.testing.assert_close(out.codes, model.quantizer.indices_to_codes(out.indices))
    # and decoding tokens is decoding those codes
    x = frames()
    torch.testing.assert_close(model(x).recon, model.detokenize(model.tokenize(x)))


def test_fsq_every_index_round_trips():
    q = FiniteScalarQuantizer(4, [8, 5, 5, 5])
    idx = torch.arange(q.codebook_size)
    half = torch.div(q._levels, 2, rounding_mode="floor")
    digits = torch.remainder(torch.div(idx[:, None], q._basis, rounding_mode="floor"), q._levels)
    assert torch.equal(q.codes_to_indices((digits - half) / half), idx)
    assert q.codebook_size == 1000


def test_vq_ema_update_follows_the_formula():
    q = VectorQuantizerEMA(6, codebook_size=8, codebook_dim=4, decay=0.9, dead_code_threshold=0.0)
    q.initialized.fill_(True)
    before_size, before_sum = q.cluster_size.clone(), q.embed_sum.clone()
    x = torch.nn.functional.normalize(torch.randn(20, 4), dim=-1)
    idx = q.lookup(x)
    counts = torch.bincount(idx, minlength=8).float()
    q.ema_update(x, idx, counts)
    batch_sum = torch.zeros(8, 4).index_add_(0, idx, x)
    torch.testing.assert_close(q.cluster_size, 0.9 * before_size + 0.1 * counts)
    torch.testing.assert_close(q.embed_sum, 0.9 * before_sum + 0.1 * batch_sum)
    torch.testing.assert_close(q.embed, torch.nn.functional.normalize(q.embed_sum, dim=-1))


def test_vq_dead_codes_restart_from_batch_vectors():
    q = VectorQuantizerEMA(6, codebook_size=8, codebook_dim=4, dead_code_threshold=0.5)
    q.cluster_size[:3] = 0.1  # three codes far below half the mean count (about 0.66)
    x = torch.nn.functional.normalize(torch.randn(16, 4), dim=-1)
    dead = q.restart_dead_codes(x)
    assert dead[:3].all() and not dead[3:].any()
    for code in q.embed[:3]:
        assert torch.isclose(x @ code, torch.tensor(1.0), atol=1e-5).any()  # each is one of the batch vectors
    assert (q.cluster_size[:3] > 0.1).all()  # restarted codes get a grace period


def test_vq_restarts_go_to_the_worst_served_vectors():
    torch.manual_seed(0)
    q = VectorQuantizerEMA(6, codebook_size=8, codebook_dim=4, dead_code_threshold=0.5)
    q.cluster_size[:2] = 0.1  # codes 0 and 1 are dead
    served = q.embed[5].clone()  # a live code matches the common content exactly
    rare = torch.nn.functional.normalize(-served + 0.1 * torch.randn(4), dim=-1)  # far from every live code
    if (rare @ q.embed[2:].t()).max() > 0.9:
        pytest.skip("random codebook happened to serve the rare vector")
    x = torch.cat([served.expand(30, 4), rare[None], rare[None]])  # the common content 15x more frequent
    q.restart_dead_codes(x)
    for code in q.embed[:2]:  # both restarts land on the rare vector, none on the exactly served one
        torch.testing.assert_close(code, rare)


def test_vq_first_training_batch_seeds_the_codebook():
    q = VectorQuantizerEMA(6, codebook_size=8, codebook_dim=4).train()
    out = q(torch.randn(2, 6, 4, 4))
    assert bool(q.initialized) and out.usage > 0.25


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_gradients_reach_the_encoder_through_the_quantizer(quantizer):
    model = VQTokenizer(tiny(quantizer=quantizer)).train()
    loss, _ = model.compute_loss({"frames": (frames() * 127.5 + 127.5).to(torch.uint8)})
    loss.backward()
    first = next(model.encoder.parameters())
    assert first.grad is not None and first.grad.abs().sum() > 0


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_save_load_round_trip(tmp_path, quantizer):
    model = VQTokenizer(tiny(quantizer=quantizer)).train()
    model.compute_loss({"frames": (frames() * 127.5 + 127.5).to(torch.uint8)})  # moves EMA buffers
    model.eval()
    model.save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir() if p.suffix in (".json", ".safetensors")) == [
        "config.json", "model.safetensors"]
    loaded = VQTokenizer.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    x = frames(seed=1)
    assert torch.equal(loaded.tokenize(x), model.tokenize(x))
    torch.testing.assert_close(loaded(x).recon, model(x).recon, rtol=0, atol=0)


def test_loading_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing config.json, model.safetensors"):
        VQTokenizer.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"dim": 3}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match="not a tokenizer config: unknown fields \\['dim'\\]"):
        VQTokenizer.from_pretrained(tmp_path)


def test_bad_input_is_named():
    model = VQTokenizer(tiny(downsample=8))
    with pytest.raises(ValueError, match="30x32 is not divisible by the downsampling factor 8"):
        model.tokenize(torch.zeros(1, 1, 3, 30, 32))
    with pytest.raises(ValueError, match="resolution 60 is not divisible by downsample 8"):
        TokenizerConfig(resolution=60, downsample=8)
    x = frames()
    x[1, 0, 0, 0, 0] = float("nan")
    with pytest.raises(ValueError, match="clip b: pixels are NaN"):
        model.compute_loss({"frames": x, "key": ["a", "b"]})
    with pytest.raises(ValueError, match=r"values must be in \[0, 32\)"):
        model.detokenize(torch.full((1, 1, 4, 4), 32))


def test_overriding_downsample_alone_stays_valid():
    cfg = load_config("tokenizer", preset_name="small", overrides=["downsample=4"])
    assert cfg.num_stages == 3 and len(cfg.block_channels) == 3 and cfg.token_grid == 16


@pytest.mark.parametrize("quantizer", ["vq", "fsq"])
def test_a_tiny_training_run_lowers_reconstruction_loss(quantizer):
    torch.manual_seed(0)
    model = VQTokenizer(tiny(quantizer=quantizer)).train()
    # Smooth images (a few blobs), so a 4x-downsampled code can describe them.
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    centers = torch.rand(8, 2) * 2 - 1
    imgs = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 8) for cx, cy in centers])  # (8, 32, 32)
    batch = {"frames": (imgs[:, None, None].expand(8, 1, 3, 32, 32) * 255).to(torch.uint8)}
    losses = fit_losses(model, batch, 60, "rec_mse")
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_presets_build():
    for name in ("debug", "small"):
        model = VQTokenizer(preset("tokenizer", name))
        assert model.vocab_size == model.config.codebook_size


def test_an_export_from_before_a_new_config_field_still_loads(tmp_path):
    model = VQTokenizer(tiny()).eval()
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    del config["perceptual_weight"]  # as written by a version that did not have the field
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = VQTokenizer.from_pretrained(tmp_path)
    assert loaded.config.perceptual_weight == 0.0


def moving_square_clip(t=5, size=32) -> torch.Tensor:
    """A grey background with a static stripe and a 3x3 white square moving 4 px per frame: ``(1, t, 3, s, s)``."""
    x = torch.full((1, t, 3, size, size), -0.5)
    x[..., 20:22, :] = 0.3  # static: part of the background
    for i in range(t):
        x[0, i, :, 4:7, 2 + 4 * i:5 + 4 * i] = 1.0
    return x


def test_foreground_mask_marks_what_moves_and_not_the_background():
    from wm_video.models.tokenizer.losses import foreground_mask

    x = moving_square_clip()
    fg = foreground_mask(x)
    assert fg.shape == (1, 5, 1, 32, 32) and fg.dtype == torch.bool
    for i in range(5):
        assert fg[0, i, 0, 4:7, 2 + 4 * i:5 + 4 * i].all()  # the square, in every frame
    assert not fg[0, :, 0, 20:22].any() and not fg[0, :, 0, 12:].any()  # the stripe and the empty rows
    assert 0 < fg.float().mean() < 0.05
    assert not foreground_mask(x[:, :2]).any()  # two frames have no median to call background


def test_foreground_weight_weights_the_moving_pixels_up():
    x = moving_square_clip()
    uint8 = ((x + 1) * 127.5).round().to(torch.uint8)
    losses = {}
    for w in (0.0, 30.0):
        torch.manual_seed(0)
        model = VQTokenizer(tiny(foreground_weight=w)).train()
        loss, logs = model.compute_loss({"frames": uint8})
        losses[w] = (loss, logs)
    (plain, plain_logs), (weighted, logs) = losses[0.0], losses[30.0]
    assert "fg_psnr" not in plain_logs and 0 < float(logs["fg_fraction"]) < 0.1
    # Same weights and frames, so the unweighted terms agree; the square is reconstructed worse than the flat
    # background by an untrained model, and weighting it up raises the loss.
    torch.testing.assert_close(plain_logs["rec_mse"], logs["rec_mse"])
    assert float(logs["fg_psnr"]) < float(logs["psnr"]) and float(weighted.detach()) > float(plain.detach())
    with pytest.raises(ValueError, match="foreground_weight"):
        tiny(foreground_weight=-1)


@pytest.mark.parametrize("downsample", [4, 8])
def test_the_patch_encoder_is_local_a_still_patch_keeps_its_token(downsample):
    torch.manual_seed(0)
    model = VQTokenizer(tiny(encoder="patch", downsample=downsample)).eval()
    x = frames(b=1, t=1)
    y = x.clone()
    y[..., 5, 9] = -x[..., 5, 9]  # one pixel changes, in cell (5 // f, 9 // f)
    changed = (5 // downsample, 9 // downsample)
    zx = model.encoder(x[:, 0])
    zy = model.encoder(y[:, 0])
    diff = (zx - zy).abs().amax(1)[0]  # (h', w')
    assert diff[changed] > 0
    diff[changed] = 0
    assert torch.equal(diff, torch.zeros_like(diff))  # every other cell's latent is bit-identical
    tx, ty = model.tokenize(x), model.tokenize(y)
    same = tx == ty
    same[0, 0][changed] = True
    assert same.all()
    # the convolutional encoder, by contrast, lets the pixel reach cells outside its patch
    conv = VQTokenizer(tiny(downsample=downsample)).eval()
    d = (conv.encoder(x[:, 0]) - conv.encoder(y[:, 0])).abs().amax(1)[0]
    assert int((d > 0).sum()) > 1


def test_a_patch_encoder_tokenizer_trains_and_round_trips(tmp_path):
    torch.manual_seed(0)
    model = VQTokenizer(tiny(encoder="patch")).train()
    yy, xx = torch.meshgrid(torch.linspace(-1, 1, 32), torch.linspace(-1, 1, 32), indexing="ij")
    centers = torch.rand(8, 2) * 2 - 1
    imgs = torch.stack([torch.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) * 8) for cx, cy in centers])
    batch = {"frames": (imgs[:, None, None].expand(8, 1, 3, 32, 32) * 255).to(torch.uint8)}
    losses = fit_losses(model, batch, 60, "rec_mse")
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5
    model.eval().save_pretrained(tmp_path)
    loaded = VQTokenizer.from_pretrained(tmp_path).eval()
    assert loaded.config.encoder == "patch"
    x = frames()
    assert torch.equal(model.tokenize(x), loaded.tokenize(x))


def test_an_unknown_encoder_is_refused_by_name():
    with pytest.raises(ValueError, match="'encoder'"):
        tiny(encoder="vit")


@pytest.mark.parametrize("field", ["resolution", "norm_groups", "codebook_size", "layers_per_block"])
def test_zero_or_negative_sizes_are_refused_by_name(field):
    with pytest.raises(ValueError, match=f"'{field}' must be >= 1"):
        TokenizerConfig(**{field: 0})
