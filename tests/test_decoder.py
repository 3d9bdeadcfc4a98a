"""The diffusion decoder on tiny random models: seeds, step counts, token sensitivity, save/load, training, errors."""

from __future__ import annotations

import pytest
import torch
from conftest import fit_losses

import wm_video.models.decoder.model as decoder_model
from wm_video.models.decoder import DecoderConfig, DiffusionDecoder
from wm_video.models.decoder.sampler import make_scheduler
from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.training.presets import decoder_debug, tokenizer_debug
from wm_video.world_model import RenderSettings
from wm_video.world_model_env import WorldModelEnv


def make_tokenizer(seed: int = 0, **overrides) -> VQTokenizer:
    torch.manual_seed(seed)
    cfg = tokenizer_debug()
    for k, v in overrides.items():
        setattr(cfg, k, v)
    tok = VQTokenizer(TokenizerConfig(**vars(cfg))).eval()
    with torch.no_grad():  # a spread-out codebook, as a trained one would have
        tok.quantizer.embed.copy_(torch.nn.functional.normalize(torch.randn_like(tok.quantizer.embed), dim=-1))
    return tok


def make_decoder(tok: VQTokenizer | None = None, seed: int = 0, **overrides) -> DiffusionDecoder:
    torch.manual_seed(seed)
    return DiffusionDecoder.from_tokenizer(tok or make_tokenizer(), DecoderConfig(**{**vars(decoder_debug()),
                                                                                        **overrides})).eval()


def random_tokens(b: int = 2, t: int = 2, seed: int = 0, vocab: int = 32, grid: int = 8) -> torch.Tensor:
    return torch.randint(0, vocab, (b, t, grid, grid), generator=torch.Generator().manual_seed(seed))


def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("sampler", ["euler", "dpmsolver"])
def test_same_seed_same_frames_other_seed_other_frames(sampler):
    dec, tokens = make_decoder(), random_tokens()
    a = dec.render(tokens, num_inference_steps=3, sampler=sampler, generator=seeded(1))
    b = dec.render(tokens, num_inference_steps=3, sampler=sampler, generator=seeded(1))
    c = dec.render(tokens, num_inference_steps=3, sampler=sampler, generator=seeded(2))
    assert a.shape == (2, 2, 3, 32, 32) and a.abs().max() <= 1
    assert torch.equal(a, b)
    assert not torch.allclose(a, c)


@pytest.mark.parametrize("sampler", ["euler", "dpmsolver"])
@pytest.mark.parametrize("steps", [1, 2, 3, 5])
def test_network_calls_equal_the_steps_asked_for(sampler, steps):
    dec = make_decoder()
    calls = []
    dec.network.unet.register_forward_hook(lambda *_: calls.append(1))
    dec.render(random_tokens(t=1), num_inference_steps=steps, sampler=sampler, generator=seeded(0))
    assert len(calls) == steps


def test_default_steps_come_from_the_config():
    dec = make_decoder(num_inference_steps=2)
    calls = []
    dec.network.unet.register_forward_hook(lambda *_: calls.append(1))
    dec.render(random_tokens(t=1), generator=seeded(0))
    assert len(calls) == 2


def test_different_tokens_give_different_frames():
    dec = make_decoder()
    a = dec.render(random_tokens(seed=0), num_inference_steps=2, generator=seeded(0))
    b = dec.render(random_tokens(seed=1), num_inference_steps=2, generator=seeded(0))
    assert (a - b).abs().mean() > 1e-3
    # the token embedding is spatially aligned: one changed token changes exactly its own 4x4 pixel patch
    tokens = random_tokens(b=1, t=1, seed=3)
    other = tokens.clone()
    other[0, 0, 0, 0] = (other[0, 0, 0, 0] + 1) % 32
    embed = slice(3, 3 + dec.config.embed_channels)  # after the 3 channels of the token render
    diff = (dec.conditioning(tokens.flatten(0, 1)) - dec.conditioning(other.flatten(0, 1)))[0, embed].abs().sum(0)
    changed = (diff > 0).nonzero().tolist()
    assert changed == [[i, j] for i in range(4) for j in range(4)]


def test_token_render_is_the_tokenizers_own_reconstruction():
    tok = make_tokenizer()
    dec = make_decoder(tok)
    tokens = random_tokens()
    render = dec.network.conditioner(tokens.flatten(0, 1))[:, :3]
    assert torch.allclose(render, tok.detokenize(tokens).flatten(0, 1).clamp(-1, 1), atol=1e-5)
    assert dec.config.tokenizer_fingerprint == tok.fingerprint()


def test_save_load_gives_the_same_video(tmp_path):
    dec, tokens = make_decoder(prev_frame=True), random_tokens(t=3)
    dec.save_pretrained(tmp_path / "dec")
    assert {"config.json", "model.safetensors"} <= {p.name for p in (tmp_path / "dec").iterdir()}
    loaded = DiffusionDecoder.from_pretrained(tmp_path / "dec").eval()
    assert loaded.config == dec.config
    a = dec.render(tokens, num_inference_steps=2, generator=seeded(5))
    b = loaded.render(tokens, num_inference_steps=2, generator=seeded(5))
    assert torch.equal(a, b)


def test_previous_frame_conditions_the_render():
    dec = make_decoder(prev_frame=True)
    tokens = random_tokens(t=3)
    first = torch.zeros(2, 3, 32, 32)
    a = dec.render(tokens, prev_frame=first, num_inference_steps=1, generator=seeded(0))
    b = dec.render(tokens, prev_frame=first + 0.5, num_inference_steps=1, generator=seeded(0))
    assert a.shape == (2, 3, 3, 32, 32)
    assert not torch.allclose(a[:, 0], b[:, 0])
    frames = torch.randint(0, 256, (2, 3, 3, 32, 32), dtype=torch.uint8)
    loss, _ = dec.compute_loss({"frames": frames, "tokens": tokens})
    assert torch.isfinite(loss)
    with pytest.raises(ValueError, match="at least 2 frames"):
        dec.compute_loss({"frames": frames[:, :1], "tokens": tokens[:, :1]})


def fixed_eval_loss(dec: DiffusionDecoder, batch: dict) -> float:
    state = torch.get_rng_state()
    torch.manual_seed(123)  # the same noise levels and noise every time
    with torch.no_grad():
        loss = float(dec.compute_loss(batch)[0])
    torch.set_rng_state(state)
    return loss


def test_tiny_training_lowers_the_loss():
    tok = make_tokenizer()
    dec = make_decoder(tok).train()
    g = torch.Generator().manual_seed(0)
    frames = (torch.rand(4, 2, 3, 1, 1, generator=g) * 255).to(torch.uint8).expand(4, 2, 3, 32, 32).contiguous()
    batch = {"frames": frames, "tokens": tok.tokenize(frames.float() / 127.5 - 1)}
    before = fixed_eval_loss(dec, batch)
    torch.manual_seed(0)
    fit_losses(dec, batch, steps=60, lr=3e-3)
    after = fixed_eval_loss(dec, batch)
    assert after < 0.5 * before, (before, after)


def test_tokens_of_another_tokenizer_are_refused():
    dec = make_decoder()
    with pytest.raises(ValueError, match=r"token grid 4x4.*8x8"):
        dec.render(torch.zeros(1, 1, 4, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"must be in \[0, 32\)"):
        dec.render(torch.full((1, 1, 8, 8), 40))
    with pytest.raises(ValueError, match="expected"):
        dec.render(torch.zeros(1, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match=r"vocab_size: 64 \(decoder expects 32"):
        dec.check_tokenizer(make_tokenizer(codebook_size=64))
    with pytest.raises(ValueError, match="different weights"):
        dec.check_tokenizer(make_tokenizer(seed=1))
    dec.check_tokenizer(make_tokenizer())  # the same tokenizer passes


@pytest.mark.parametrize("steps", [0, -1, 1001, 2.5])
def test_impossible_step_counts_name_the_valid_range(steps):
    with pytest.raises(ValueError, match=r"num_inference_steps must be an integer in \[1, 1000\]"):
        make_decoder().render(random_tokens(t=1), num_inference_steps=steps)


def test_bad_configs_and_folders_are_clear_errors(tmp_path):
    with pytest.raises(ValueError, match="from_tokenizer"):
        DiffusionDecoder(DecoderConfig())
    with pytest.raises(ValueError, match="'attention' needs one entry per level"):
        DecoderConfig(block_channels=[8, 16], attention=[True])
    with pytest.raises(ValueError, match="sampler"):
        make_decoder().render(random_tokens(t=1), sampler="ddim")
    make_tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(ValueError, match="is not a decoder config"):
        DiffusionDecoder.from_pretrained(tmp_path / "tok")
    with pytest.raises(FileNotFoundError, match=r"missing model\.safetensors"):
        (tmp_path / "empty").mkdir()
        (tmp_path / "empty" / "config.json").write_text("{}")
        DiffusionDecoder.from_pretrained(tmp_path / "empty")


@pytest.mark.parametrize("residual", [True, False])
def test_residual_sampling_starts_from_the_token_render(residual, monkeypatch):
    """With a network that predicts nothing, one step returns (nearly) the token render in residual mode and
    (nearly) zeros otherwise: the residual is added to the render."""
    tok = make_tokenizer()
    kw = {} if residual else dict(residual=False, sigma_data=0.5, sigma_max=80.0)
    dec = make_decoder(tok, **kw)
    monkeypatch.setattr(dec.network, "forward", lambda x_in, sigma, cond: torch.zeros_like(x_in))
    tokens = random_tokens(t=1)
    out = dec.render(tokens, num_inference_steps=1, generator=seeded(0))
    render = tok.detokenize(tokens).clamp(-1, 1)
    expected = render if residual else torch.zeros_like(render)
    assert (out - expected).abs().max() < 0.05
    with pytest.raises(ValueError, match="'residual' needs 'token_render'"):
        DecoderConfig(token_render=False, residual=True)


@pytest.mark.parametrize("sampler", ["euler", "dpmsolver"])
def test_trailing_karras_schedule_for_both_samplers(sampler):
    from wm_video.models.decoder.sampler import karras_sigmas, make_scheduler, set_steps

    cfg = decoder_debug()
    scheduler = make_scheduler(cfg, sampler)
    set_steps(scheduler, 3, torch.device("cpu"))
    want = karras_sigmas(torch.tensor([0, 1 / 3, 2 / 3], dtype=torch.float64), cfg.sigma_min, cfg.sigma_max, cfg.rho)
    torch.testing.assert_close(scheduler.sigmas, torch.cat([want.float(), torch.zeros(1)]))
    assert scheduler.sigmas[0] == pytest.approx(cfg.sigma_max) and scheduler.sigmas[2] > cfg.sigma_min  # trailing
    torch.testing.assert_close(scheduler.timesteps, scheduler.precondition_noise(want.float()))


@pytest.mark.parametrize("sampler", ["euler", "dpmsolver"])
def test_a_rollout_builds_one_scheduler_and_renders_what_a_fresh_one_per_frame_did(sampler, monkeypatch):
    from test_world_model import context, make_world_model  # here: test_world_model imports this module

    wm = make_world_model()  # its decoder conditions on the previous frame: one sampling run per frame

    def frames() -> torch.Tensor:
        env = WorldModelEnv(wm, maskgit_steps=1, render=RenderSettings(num_inference_steps=2, sampler=sampler),
                            generator=seeded(0))
        env.reset(context(), torch.tensor([[1, 2], [3, 4]]))
        return torch.stack([env.step(torch.tensor([i, 5 - i])).frames for i in range(4)], 1)

    built = []
    monkeypatch.setattr(decoder_model, "make_scheduler", lambda cfg, s=None: built.append(s) or make_scheduler(cfg, s))
    reused = frames()
    assert built == [sampler]
    assert torch.equal(frames(), reused) and built == [sampler]  # the next rollout reuses it too
    # the behaviour before: a new scheduler for every frame
    monkeypatch.setattr(DiffusionDecoder, "scheduler", lambda self, s=None: make_scheduler(self.config, s))
    assert torch.equal(frames(), reused)
