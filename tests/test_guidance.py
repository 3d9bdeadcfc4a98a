"""Classifier-free guidance on actions at sampling time (``Rollout(guidance_scale=s)``): s = 1 is the plain model,
the cached and recomputed paths agree, guided logits are ``uncond + s * (cond - uncond)`` with ``uncond`` the
all-null-action model, the heads stay conditional, and bad scales are named."""

from __future__ import annotations

import pytest
import torch
from test_dynamics import KINDS, actions_for, model_for, tiny, tokens_for
from test_world_model import context, make_world_model

from wm_video.models.dynamics import Rollout, rollout, sample_next_frame
from wm_video.world_model_env import WorldModelEnv


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: see test_dynamics
    yield
    torch.set_num_threads(before)


def _roll(model, scale, use_cache, context_len, n_steps, steps, actions=True, temperature=0.0, seed=None):
    cfg = model.config
    acts = actions_for(cfg, 2, context_len + n_steps) if actions else None
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    roll = Rollout(model, steps=steps, temperature=temperature, use_cache=use_cache, generator=gen,
                   guidance_scale=scale)
    roll.start(tokens_for(cfg, 2, context_len), None if acts is None else acts[:, :context_len])
    return acts, [roll.step(None if acts is None else acts[:, context_len - 1 + i]) for i in range(n_steps)]


@pytest.mark.parametrize("use_cache", [True, False])
def test_scale_one_is_the_plain_model(use_cache):
    cfg = tiny()
    model = model_for(cfg)
    _, plain = _roll(model, 1.0, use_cache, 2, 3, steps=2, temperature=1.0, seed=5)
    roll = Rollout(model, steps=2, temperature=1.0, use_cache=use_cache, generator=torch.Generator().manual_seed(5))
    assert not roll.guided  # the default: no unconditional stream at all
    acts = actions_for(cfg, 2, 5)
    roll.start(tokens_for(cfg, 2, 2), acts[:, :2])
    for i, p in enumerate(plain):
        o = roll.step(acts[:, 1 + i])
        assert torch.equal(o.tokens, p.tokens) and torch.equal(o.logits, p.logits)
        assert torch.equal(o.reward, p.reward) and torch.equal(o.termination, p.termination)
    tokens, actions = tokens_for(cfg, 2, 3), actions_for(cfg, 2, 5)
    runs = [rollout(model, tokens, actions[:, 2:], actions[:, :3], steps=2, use_cache=use_cache,
                    generator=torch.Generator().manual_seed(1), **kw) for kw in ({}, {"guidance_scale": 1.0})]
    for field in ("tokens", "rewards", "terminations"):
        assert torch.equal(getattr(runs[0], field), getattr(runs[1], field))


@pytest.mark.parametrize(("kind", "scale"), [("discrete", 2.0), ("continuous", 0.5)])
def test_guided_cached_rollout_equals_recomputation_within_the_window(kind, scale):
    model = model_for(tiny(**KINDS[kind]))  # context_frames 4: 1 + 3 frames stay within the window
    _, cached = _roll(model, scale, True, 1, 3, steps=3)
    _, plain = _roll(model, scale, False, 1, 3, steps=3)
    for c, p in zip(cached, plain, strict=True):
        assert torch.equal(c.tokens, p.tokens)
        torch.testing.assert_close(c.logits, p.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c.reward_logits, p.reward_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c.termination_logits, p.termination_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("use_cache", [True, False])
def test_guided_logits_extrapolate_from_the_unconditional_model(use_cache):
    cfg, s = tiny(), 3.0
    model = model_for(cfg)  # random action offsets: cond != uncond
    acts, [guided] = _roll(model, s, use_cache, 3, 1, steps=1)  # one pass of a fully masked frame
    _, [cond] = _roll(model, 1.0, use_cache, 3, 1, steps=1)
    _, [uncond] = _roll(model, 1.0, use_cache, 3, 1, steps=1, actions=False)
    assert (cond.logits - uncond.logits).abs().mean() > 0.1 * uncond.logits.std()
    torch.testing.assert_close(guided.logits - uncond.logits, s * (cond.logits - uncond.logits), atol=1e-4,
                               rtol=1e-4)
    assert torch.equal(guided.tokens, guided.logits.argmax(-1))
    # further from the unconditional model than the plain one; the heads read the conditional stream
    assert (guided.logits - uncond.logits).norm() > (cond.logits - uncond.logits).norm()
    torch.testing.assert_close(guided.reward_logits, cond.reward_logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided.termination_logits, cond.termination_logits, atol=1e-5, rtol=1e-5)
    nxt = sample_next_frame(model, tokens_for(cfg, 2, 3), acts[:, :3], steps=1, temperature=0.0, guidance_scale=s)
    torch.testing.assert_close(nxt.logits, guided.logits, atol=1e-5, rtol=1e-5)


def test_guided_cached_rollout_past_the_window_guides_two_sliding_window_passes():
    cfg, s = tiny(), 2.0  # window 4; 2 + 6 frames: each stream keeps its own cache rows
    model = model_for(cfg)
    acts, outs = _roll(model, s, True, 2, 6, steps=1)
    history = torch.cat([tokens_for(cfg, 2, 2), torch.stack([o.tokens for o in outs], 1)], 1)
    with torch.no_grad():
        cond = model(history, acts, mask_ratio=1.0, sliding_window=True)
        uncond = model(history, None, mask_ratio=1.0, sliding_window=True)
    for i, o in enumerate(outs):
        frame = 2 + i
        want = uncond.logits[:, frame - 1] + s * (cond.logits[:, frame - 1] - uncond.logits[:, frame - 1])
        torch.testing.assert_close(o.logits, want, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(o.reward_logits, cond.reward_logits[:, frame - 1], atol=1e-4, rtol=1e-4)


def test_video_only_model_skips_the_unconditional_stream():
    model = model_for(tiny(action_type="none"))
    assert not Rollout(model, guidance_scale=4.0).guided  # cond == uncond: guidance would change nothing


def test_world_model_env_passes_the_scale_on():
    env = WorldModelEnv(make_world_model(decoder=False), maskgit_steps=1, temperature=0.0, render=False,
                        guidance_scale=2.5)
    assert env.rollout.guidance_scale == 2.5 and env.rollout.guided
    env.reset(context(), torch.tensor([[1, 2], [3, 4]]))
    out = env.step(torch.tensor([0, 5]))
    assert out.tokens.shape == (2, 8, 8) and out.rewards.shape == (2,) and out.terminations.shape == (2,)


@pytest.mark.parametrize("scale", [-0.5, float("nan")])
def test_bad_scale_is_named(scale):
    model = model_for(tiny())
    with pytest.raises(ValueError, match=r"guidance_scale must be >= 0 \(1: no guidance\), got"):
        Rollout(model, guidance_scale=scale)
    with pytest.raises(ValueError, match="guidance_scale must be >= 0"):
        rollout(model, tokens_for(model.config), num_frames=1, guidance_scale=scale)
