"""Dynamics model invariants on tiny models: causality, action sensitivity, the null action, KV-cache rollouts equal
to recomputation (inside and past the window), heads and losses, save/load, checkpointing, bad inputs, presets."""

from __future__ import annotations

import dataclasses
import itertools
import json

import pytest
import torch
from conftest import fit_losses
from torch.utils.flop_counter import FlopCounterMode

from wm_video.config import load_config, preset
from wm_video.models.dynamics import (
    DynamicsConfig,
    DynamicsModel,
    Rollout,
    maskgit_generate,
    rollout,
    sample_next_frame,
    training_flops_per_step,
)
from wm_video.models.dynamics.heads import symexp, symlog, two_hot, two_hot_decode

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


# the input options beside the token embedding: none, the previous frame's token, and that with the 3x3 input conv
INPUTS = {False: {}, True: {"previous_token_input": True}, "conv": {"previous_token_input": True, "input_conv": True}}


def tiny(**kw) -> DynamicsConfig:
    return dataclasses.replace(load_config("dynamics", preset_name="debug"), **kw)


def model_for(cfg: DynamicsConfig, seed: int = 0, random_init: bool = True) -> DynamicsModel:
    """A model whose zero-initialised parts (adaLN, action offsets, reward layer) are random, so every input
    path has an effect from the start."""
    torch.manual_seed(seed)
    model = DynamicsModel(cfg).eval()
    if random_init:
        with torch.no_grad():
            for p in model.parameters():
                if not p.any():
                    p.normal_(std=0.3)
    return model


def actions_for(cfg: DynamicsConfig, b: int, t: int, seed: int = 1) -> torch.Tensor | None:
    g = torch.Generator().manual_seed(seed)
    if cfg.action_type == "discrete":
        return torch.randint(0, cfg.num_actions, (b, t), generator=g)
    if cfg.action_type == "continuous":
        return torch.randn(b, t, cfg.action_dim, generator=g)
    return None


def tokens_for(cfg: DynamicsConfig, b: int = 2, t: int = 4, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (b, t, cfg.token_h, cfg.token_w), generator=g)


KINDS = {"discrete": {}, "continuous": {"action_type": "continuous", "action_dim": 3}, "none": {"action_type": "none"}}


def test_changed_token_weight_weights_the_targets_that_changed():
    import torch.nn.functional as F

    cfg = tiny(action_type="none", changed_token_weight=4.0)
    model = DynamicsModel(cfg).eval()  # eval: no dropout, so both passes see the same network
    tokens = tokens_for(cfg, 2, 3)
    tokens[:, 1, :2] = tokens[:, 0, :2]  # some targets repeat the previous frame, most change
    torch.manual_seed(1)
    loss, logs = model.compute_loss({"tokens": tokens}, mask_ratio=1.0)
    out = model(tokens, mask_ratio=1.0)
    ce = F.cross_entropy(out.logits.flatten(0, -2).float(), tokens[:, 1:].flatten(), reduction="none")
    changed = (tokens[:, 1:] != tokens[:, :-1]).flatten().float()
    weight = 1 + 4.0 * changed
    torch.testing.assert_close(loss, (weight * ce).sum() / weight.sum())
    torch.testing.assert_close(logs["token_ce"], ce.mean())  # logged unweighted
    assert 0 < changed.mean() < 1
    with pytest.raises(ValueError, match="changed_token_weight"):
        tiny(changed_token_weight=-1.0)


@pytest.mark.parametrize("kind", list(KINDS))
def test_shapes_losses_and_gradients(kind):
    cfg = tiny(**KINDS[kind])
    model = DynamicsModel(cfg).train()
    b, t = 2, 4
    batch = {"tokens": tokens_for(cfg, b, t), "rewards": torch.randn(b, t) * 5,
             "terminations": torch.tensor([[0, 0, 0, 1], [0, 0, 0, 0]], dtype=torch.bool)}
    if kind != "none":
        batch["actions"] = actions_for(cfg, b, t)
    out = model(batch["tokens"], batch.get("actions"))
    k, bins = cfg.vocab_size, cfg.reward_bins
    assert out.logits.shape == (b, t - 1, 4, 4, k) and out.target_mask.shape == (b, t - 1, 4, 4)
    assert out.reward_logits.shape == (b, t, bins) and out.termination_logits.shape == (b, t)
    assert out.reward.shape == (b, t) and out.pooled.shape == (b, t, cfg.width)
    assert out.target_mask.flatten(2).any(-1).all()  # every target frame has a masked token
    loss, logs = model.compute_loss(batch)
    assert torch.isfinite(loss)
    for key in ("token_ce", "token_acc", "copy_acc", "reward_loss", "termination_loss", "reward_mae"):
        assert torch.isfinite(logs[key]), key
    loss.backward()
    assert model.token_embed.weight.grad.abs().sum() > 0 and model.outcome.trunk[1].weight.grad.abs().sum() > 0


def test_teacher_forced_mode_masks_every_target_token():
    cfg = tiny()
    model, tokens, actions = model_for(cfg), tokens_for(cfg), actions_for(cfg, 2, 4)
    out = model(tokens, actions, mask_ratio=1.0)
    assert out.target_mask.all()
    tf = model.teacher_forced_accuracy(tokens, actions)
    torch.testing.assert_close(tf["token_acc"], (out.logits.argmax(-1) == tokens[:, 1:]).float().mean())
    _, logs = model.compute_loss({"tokens": tokens, "actions": actions}, mask_ratio=1.0)
    torch.testing.assert_close(tf["token_ce"], logs["token_ce"])
    small_ids = model(tokens.to(torch.uint8), actions, mask_ratio=1.0)  # as token shards store them
    torch.testing.assert_close(small_ids.logits, out.logits)


@pytest.mark.parametrize(("spatial_pos", "action_token", "previous"),
                         [("learned", False, False), ("rope", False, False), ("learned", True, False),
                          ("rope", True, False), ("learned", False, True), ("learned", False, "conv")])
def test_frames_never_see_the_future(spatial_pos, action_token, previous):
    cfg = tiny(spatial_pos=spatial_pos, action_token=action_token, **INPUTS[previous])
    model = model_for(cfg)
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    mask = model.sample_target_mask(2, 3, generator=torch.Generator().manual_seed(0)).view(2, 3, 4, 4)
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 1) % cfg.vocab_size  # frame 2
    with torch.no_grad():
        a, b = model(tokens, actions, target_mask=mask), model(changed, actions, target_mask=mask)
    # frames 0..1: pooled outputs and heads; targets: frame 1 (index 0)
    torch.testing.assert_close(a.pooled[:, :2], b.pooled[:, :2])
    torch.testing.assert_close(a.reward_logits[:, :2], b.reward_logits[:, :2])
    torch.testing.assert_close(a.termination_logits[:, :2], b.termination_logits[:, :2])
    torch.testing.assert_close(a.logits[:, :1], b.logits[:, :1])
    assert not torch.allclose(a.logits[:, 2], b.logits[:, 2])  # frame 3's prediction does see frame 2
    # fully masked targets: the prediction of frame 2 does not see frame 2 either
    with torch.no_grad():
        a, b = model(tokens, actions, mask_ratio=1.0), model(changed, actions, mask_ratio=1.0)
    torch.testing.assert_close(a.logits[:, :2], b.logits[:, :2])


@pytest.mark.parametrize(("action_token", "previous"), [(False, False), (True, False), (False, True), (False, "conv")])
def test_an_action_affects_its_outcome_and_later_frames_only(action_token, previous):
    cfg = tiny(action_token=action_token, **INPUTS[previous])
    model = model_for(cfg)
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    other = actions.clone()
    other[:, 1] = (other[:, 1] + 1) % cfg.num_actions  # the action taken at frame 1
    with torch.no_grad():
        a, b = model(tokens, actions, mask_ratio=1.0), model(tokens, other, mask_ratio=1.0)
    torch.testing.assert_close(a.pooled[:, :2], b.pooled[:, :2])  # frames 0, 1 are not its result
    torch.testing.assert_close(a.logits[:, 0], b.logits[:, 0])  # nor is frame 1's prediction
    torch.testing.assert_close(a.reward_logits[:, 0], b.reward_logits[:, 0])
    assert not torch.allclose(a.reward_logits[:, 1], b.reward_logits[:, 1])  # its own outcome changes
    assert not torch.allclose(a.logits[:, 1], b.logits[:, 1])  # and the frame it produces (frame 2)


def test_the_action_token_reaches_every_token_through_attention_alone():
    """With the modulation made independent of the action (its weights on the conditioning zeroed, its random
    biases kept), only the action token carries the action: a different action still changes the next frame's
    logits, where the same model without the token ignores it. The token adds one position per frame."""

    def action_blind(model: DynamicsModel) -> DynamicsModel:
        for lin in [*(blk.modulation for blk in model.backbone.blocks), model.backbone.out_modulation]:
            torch.nn.init.zeros_(lin.weight)
        return model

    tokens = tokens_for(tiny(), b=1, t=2)
    a = actions_for(tiny(), 1, 2)
    b = (a + 1) % tiny().num_actions
    with torch.no_grad():
        with_token, plain = action_blind(model_for(tiny(action_token=True))), action_blind(model_for(tiny()))
        with_token.backbone.action_proj.weight.normal_(std=1.0)  # a unit-scale token, as after some training
        la, lb = with_token(tokens, a, mask_ratio=1.0).logits, with_token(tokens, b, mask_ratio=1.0).logits
        pa, pb = plain(tokens, a, mask_ratio=1.0).logits, plain(tokens, b, mask_ratio=1.0).logits
    assert (la - lb).abs().mean() > 1e-5  # small at init (0.02-scale attention weights), but there
    assert torch.equal(pa, pb)
    _, kv = with_token.encode(tokens.flatten(2), with_token.actions(a, (1, 2)), torch.arange(2),
                              torch.ones(2, dtype=torch.bool), collect_kv=True)
    assert kv[0][0].shape[0] == tiny().tokens_per_frame + 1  # (b (n + 1)), heads, frames, e


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_a_different_action_changes_the_next_frame(kind):
    cfg = tiny(**KINDS[kind])
    model = model_for(cfg)
    tokens = tokens_for(cfg, b=1, t=2)
    a = actions_for(cfg, 1, 2)
    b = (a + 1) % cfg.num_actions if kind == "discrete" else a + 1.0
    with torch.no_grad():
        la = model(tokens, a, mask_ratio=1.0).logits
        lb = model(tokens, b, mask_ratio=1.0).logits
    assert (la - lb).abs().mean() > 0.1 * la.std()


def test_continuous_actions_are_normalised_with_the_config_statistics():
    mean, std = [1.0, -2.0, 0.5], [2.0, 0.5, 3.0]
    raw = model_for(tiny(**KINDS["continuous"]))
    norm = DynamicsModel(tiny(**KINDS["continuous"], action_mean=mean, action_std=std)).eval()
    norm.load_state_dict(raw.state_dict())
    tokens, actions = tokens_for(raw.config), actions_for(raw.config, 2, 4)
    scaled = actions * torch.tensor(std) + torch.tensor(mean)
    with torch.no_grad():
        torch.testing.assert_close(norm(tokens, scaled, mask_ratio=1.0).logits,
                                   raw(tokens, actions, mask_ratio=1.0).logits)


def test_null_action():
    cfg = tiny()
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    fresh = DynamicsModel(cfg).eval()  # real actions start equal to the null action
    with torch.no_grad():
        torch.testing.assert_close(fresh(tokens, actions, mask_ratio=1.0).logits,
                                   fresh(tokens, None, mask_ratio=1.0).logits)
    model = model_for(cfg)
    with torch.no_grad():
        null = model(tokens, None, mask_ratio=1.0).logits
        assert not torch.allclose(null, model(tokens, actions, mask_ratio=1.0).logits)
        dropped = dataclasses.replace(cfg, null_action_prob=1.0)
        model.config = dropped
        torch.testing.assert_close(model.train()(tokens, actions, mask_ratio=1.0).logits, null)  # dropout: all null
    video_only = model_for(tiny(action_type="none"))
    loss, _ = video_only.compute_loss({"tokens": tokens})
    assert torch.isfinite(loss)


@pytest.mark.parametrize("kind", ["discrete", "continuous"])
def test_action_init_normal_gives_distinct_actions_from_the_start(kind):
    cfg = tiny(**KINDS[kind], action_init="normal")
    model = DynamicsModel(cfg).eval()
    acts = actions_for(cfg, 2, 4)
    cond = model.actions(acts, (2, 4))  # (b, t, c)
    null = model.actions(None, (2, 4))
    assert (cond - null).abs().mean() > 0.1  # unit-scale offsets, not zero
    # the modulation that reads them is still adaLN-Zero: the fresh model's predictions ignore actions
    tokens = tokens_for(cfg)

    def uses_actions(m) -> bool:
        with torch.no_grad():
            return not torch.allclose(m.eval()(tokens, acts, mask_ratio=1.0).logits,
                                      m(tokens, None, mask_ratio=1.0).logits)

    assert not uses_actions(model)
    # After one optimizer step the actions matter; with zero init they do not yet: the action offsets' gradient is
    # proportional to the modulation weights, which were zero when it was computed.
    zero = DynamicsModel(dataclasses.replace(cfg, action_init="zero"))
    for m in (model, zero):
        fit_losses(m.train(), {"tokens": tokens, "actions": acts}, steps=1)
    assert uses_actions(model) and not uses_actions(zero)
    with pytest.raises(ValueError, match="action_init"):
        tiny(action_init="uniform")


def _rolled(cfg, use_cache, context, n_steps, steps, seed=0):
    model = model_for(cfg, seed)
    acts = actions_for(cfg, 2, context + n_steps)
    roll = Rollout(model, steps=steps, temperature=0.0, use_cache=use_cache)
    roll.start(tokens_for(cfg, 2, context), acts[:, :context])
    outs = [roll.step(acts[:, context - 1 + i]) for i in range(n_steps)]
    return model, acts, roll, outs


@pytest.mark.parametrize(("kind", "previous"), [("discrete", False), ("continuous", False), ("discrete", True),
                                                ("discrete", "conv")])
def test_cached_rollout_equals_recomputation_within_the_window(kind, previous):
    # context_frames 4: the history stays within the window for 3 steps from 1 frame
    cfg = tiny(**KINDS[kind], **INPUTS[previous])
    _, _, _, cached = _rolled(cfg, True, context=1, n_steps=3, steps=3)
    _, _, _, plain = _rolled(cfg, False, context=1, n_steps=3, steps=3)
    for c, p in zip(cached, plain, strict=True):
        assert torch.equal(c.tokens, p.tokens)
        torch.testing.assert_close(c.logits, p.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c.reward_logits, p.reward_logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c.termination_logits, p.termination_logits, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize(("context", "spatial_pos", "action_token", "previous"),
                         [(2, "learned", False, False), (6, "rope", False, False), (2, "learned", True, False),
                          (6, "rope", True, False), (2, "learned", False, True), (6, "rope", False, True),
                          (6, "rope", False, "conv")])
def test_cached_rollout_equals_full_recomputation_past_the_window(context, spatial_pos, action_token, previous):
    # window 4; 2 + 7 or 6 + 7 frames in all
    cfg = tiny(spatial_pos=spatial_pos, action_token=action_token, **INPUTS[previous])
    n_steps = 7
    model, acts, roll, outs = _rolled(cfg, True, context, n_steps, steps=1)
    assert len(roll.cache) == cfg.context_frames - 1  # the cache never holds more than the window
    start = tokens_for(cfg, 2, context)
    history = torch.cat([start, torch.stack([o.tokens for o in outs], 1)], 1)  # (b, context + 7, h, w)
    with torch.no_grad():
        full = model(history, acts, mask_ratio=1.0, sliding_window=True)
    for i, o in enumerate(outs):
        frame = context + i  # the frame this step produced, by the action taken at frame - 1
        torch.testing.assert_close(o.logits, full.logits[:, frame - 1], atol=1e-4, rtol=1e-4)
        assert torch.equal(o.tokens, full.logits[:, frame - 1].argmax(-1))
        torch.testing.assert_close(o.reward_logits, full.reward_logits[:, frame - 1], atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(o.termination_logits, full.termination_logits[:, frame - 1], atol=1e-4,
                                   rtol=1e-4)


def test_rollout_helpers():
    cfg = tiny()
    model = model_for(cfg)
    tokens, actions = tokens_for(cfg, 2, 3), actions_for(cfg, 2, 5)
    out = rollout(model, tokens, actions[:, 2:], context_actions=actions[:, :3], steps=2,
                  generator=torch.Generator().manual_seed(0))
    assert out.tokens.shape == (2, 3, 4, 4) and out.rewards.shape == (2, 3) and out.terminations.shape == (2, 3)
    assert ((out.terminations >= 0) & (out.terminations <= 1)).all()
    nxt = sample_next_frame(model, tokens, actions[:, :3], steps=1, temperature=0.0)
    first = rollout(model, tokens, actions[:, 2:3], context_actions=actions[:, :2], steps=1, temperature=0.0)
    assert torch.equal(nxt.tokens, first.tokens[:, 0])
    free = rollout(model_for(tiny(action_type="none")), tokens, num_frames=2, steps=2, top_k=4)
    assert free.tokens.shape == (2, 2, 4, 4)


def test_maskgit_fixes_tokens_monotonically_in_k_passes():
    g = torch.Generator().manual_seed(0)
    seen = []

    def predict(tokens):
        seen.append(tokens.clone())
        return torch.randn(*tokens.shape, 8, generator=g)

    for steps in (1, 4):
        seen.clear()
        out = maskgit_generate(predict, 3, 16, mask_id=8, steps=steps, temperature=1.0, generator=g)
        assert len(seen) == steps and (out.tokens < 8).all() and out.logits.shape == (3, 16, 8)
        masked = [(s == 8).sum(-1) for s in seen]
        assert all((a > b).all() for a, b in itertools.pairwise(masked))  # progress every pass
        for s in seen[1:]:
            fixed = s != 8
            assert torch.equal(s[fixed], out.tokens[fixed])  # a fixed token is never changed again


def test_two_hot_symlog_round_trip():
    bins = torch.linspace(-20, 20, 255)
    r = torch.tensor([-1e4, -3.0, -0.5, 0.0, 1e-3, 0.7, 1.0, 42.0, 1e6])
    target = two_hot(r, bins)
    assert torch.allclose(target.sum(-1), torch.ones(len(r))) and ((target > 0).sum(-1) <= 2).all()
    torch.testing.assert_close(two_hot_decode(torch.log(target + 1e-30), bins), r, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(symexp(symlog(r)), r, rtol=1e-5, atol=1e-6)
    assert two_hot(torch.tensor([1e12]), bins)[0, -1] == 1  # clipped to the last bin


def test_fresh_reward_head_predicts_zero():
    cfg = tiny()
    out = DynamicsModel(cfg).eval()(tokens_for(cfg), actions_for(cfg, 2, 4))
    torch.testing.assert_close(out.reward, torch.zeros(2, 4), atol=1e-5, rtol=0)


@pytest.mark.parametrize(("kind", "action_token", "previous"),
                         [("discrete", False, False), ("continuous", False, False), ("discrete", True, False),
                          ("discrete", False, True), ("discrete", False, "conv")])
def test_save_load_round_trip(tmp_path, kind, action_token, previous):
    stats = {"action_mean": [0.1, 0.2, 0.3], "action_std": [1.0, 2.0, 3.0]} if kind == "continuous" else {}
    cfg = tiny(**KINDS[kind], action_token=action_token, **INPUTS[previous], **stats)
    model = model_for(cfg)
    model.save_pretrained(tmp_path)
    assert {"config.json", "model.safetensors"} <= {p.name for p in tmp_path.iterdir()}
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    mask = model.sample_target_mask(2, 3, 0.5).view(2, 3, 4, 4)
    with torch.no_grad():
        a, b = model(tokens, actions, target_mask=mask), loaded(tokens, actions, target_mask=mask)
    for field in ("logits", "reward_logits", "termination_logits", "pooled"):
        torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


def test_loading_a_folder_that_is_not_an_export(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"missing config.json, model.safetensors"):
        DynamicsModel.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"resolution": 64, "downsample": 8}))
    (tmp_path / "model.safetensors").write_bytes(b"")
    with pytest.raises(ValueError, match=r"not a dynamics config: unknown fields \['downsample', 'resolution'\]"):
        DynamicsModel.from_pretrained(tmp_path)


def test_gradient_checkpointing_gives_the_same_gradients():
    cfg = tiny()
    batch = {"tokens": tokens_for(cfg), "actions": actions_for(cfg, 2, 4), "rewards": torch.randn(2, 4),
             "terminations": torch.zeros(2, 4, dtype=torch.bool)}
    grads = []
    for checkpointing in (False, True):
        model = model_for(cfg).train()
        model.set_gradient_checkpointing(checkpointing)
        torch.manual_seed(3)  # the same masks and action dropout
        loss, _ = model.compute_loss(batch)
        loss.backward()
        grads.append({n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None})
    assert grads[0].keys() == grads[1].keys()
    for name in grads[0]:
        torch.testing.assert_close(grads[0][name], grads[1][name], rtol=1e-5, atol=1e-6)


def test_bad_input_is_named():
    cfg = tiny()
    model = DynamicsModel(cfg)
    tokens = tokens_for(cfg)
    with pytest.raises(ValueError, match=r"ids must be in \[0, 32\), got \[0, 32\]"):
        model(tokens.clamp(max=0).index_fill(1, torch.tensor([3]), 32))
    with pytest.raises(ValueError, match="expected a 4x4 token grid"):
        model(torch.zeros(1, 2, 8, 8, dtype=torch.long))
    with pytest.raises(ValueError, match="6 frames exceed context_frames=4; use the sliding-window rollout"):
        model(tokens_for(cfg, t=6))
    with pytest.raises(ValueError, match=r"expected discrete action ids, int64 \(b, t\) = \(2, 4\), "
                                         r"got float32 \(2, 4, 3\)"):
        model(tokens, torch.zeros(2, 4, 3))
    with pytest.raises(ValueError, match=r"discrete ids must be in \[0, 6\), got \[0, 6\]"):
        model(tokens, torch.full((2, 4), 6).index_fill(1, torch.tensor([0]), 0))
    cont = DynamicsModel(tiny(**KINDS["continuous"]))
    with pytest.raises(ValueError, match=r"expected continuous actions, float \(b, t, a\) = \(2, 4, 3\), "
                                         r"got float32 \(2, 4, 2\)"):
        cont(tokens, torch.zeros(2, 4, 2))
    nan = torch.zeros(2, 4, 3)
    nan[1, 2, 0] = float("nan")
    with pytest.raises(ValueError, match="NaN or inf in continuous actions"):
        cont(tokens, nan)
    with pytest.raises(ValueError, match=r"action_type 'none'.*pass actions=None"):
        DynamicsModel(tiny(action_type="none"))(tokens, torch.zeros(2, 4, dtype=torch.long))
    roll = Rollout(model)
    roll.start(tokens)
    with pytest.raises(ValueError, match=r"int64 \(b,\) = \(2,\), got int64 \(2, 4\)"):
        roll.step(torch.zeros(2, 4, dtype=torch.long))
    with pytest.raises(ValueError, match="field 'heads'=3 does not divide width 32"):
        tiny(heads=3)
    with pytest.raises(ValueError, match="field 'action_std' needs action_dim=3 entries"):
        tiny(**KINDS["continuous"], action_std=[1.0])
    with pytest.raises(ValueError, match="field 'context_frames' must be >= 2"):
        tiny(context_frames=1)


def test_a_tiny_training_run_lowers_the_loss():
    cfg = tiny(null_action_prob=0.0)
    torch.manual_seed(0)
    model = DynamicsModel(cfg).train()
    g = torch.Generator().manual_seed(0)
    # A learnable world: each frame is the previous one shifted by the action (mod vocab); rewards = action.
    first = torch.randint(0, cfg.vocab_size, (8, 1, 4, 4), generator=g)
    actions = torch.randint(0, 3, (8, 4), generator=g)
    frames = [first[:, 0]]
    for i in range(3):
        frames.append((frames[-1] + actions[:, i, None, None]) % cfg.vocab_size)
    batch = {"tokens": torch.stack(frames, 1), "actions": actions, "rewards": actions.float(),
             "terminations": torch.zeros(8, 4, dtype=torch.bool)}
    losses = fit_losses(model, batch, 30)
    assert sum(losses[-5:]) / 5 < 0.7 * sum(losses[:5]) / 5


@pytest.mark.parametrize(("name", "low", "high"), [("debug", 1e4, 1e6), ("small", 15e6, 30e6),
                                                   ("base", 250e6, 450e6), ("large", 0.8e9, 1.6e9)])
def test_presets_build_with_the_stated_sizes(name, low, high):
    cfg = preset("dynamics", name)
    with torch.device("meta"):
        model = DynamicsModel(cfg)
    assert low <= sum(p.numel() for p in model.parameters()) <= high
    assert training_flops_per_step(cfg, 1) > 0


def test_training_flops_match_a_flop_counter():
    cfg = tiny()
    model = DynamicsModel(cfg).train()
    with FlopCounterMode(display=False) as counter:
        loss, _ = model.compute_loss({"tokens": tokens_for(cfg), "rewards": torch.zeros(2, 4)})
        loss.backward()
    # The counter charges masked-out temporal attention too; the formula counts what is seen.
    assert 0.85 < counter.get_total_flops() / training_flops_per_step(cfg, 2) < 1.15


def test_previous_token_input_reads_the_previous_frame_at_each_target_place():
    """With ``previous_token_input`` a target frame's prediction changes when the frame before it changes, even
    through a model whose temporal path is cut (every block's attention output zeroed): the previous tokens reach
    the target through its own input embedding. A fresh model's "no previous token" row is zero and gets no
    gradient, so clean frames are embedded exactly as without the option."""
    cfg = tiny(previous_token_input=True)
    model = model_for(cfg)
    assert not DynamicsModel(cfg).previous_embed.weight[cfg.vocab_size].any()
    with torch.no_grad():
        for blk in model.backbone.blocks:
            for name, p in blk.named_parameters():
                if name.startswith("temporal.proj"):
                    p.zero_()
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    changed = tokens.clone()
    changed[:, 1, 0, 0] = (changed[:, 1, 0, 0] + 1) % cfg.vocab_size  # one token of frame 1
    with torch.no_grad():
        a, b = model(tokens, actions, mask_ratio=1.0), model(changed, actions, mask_ratio=1.0)
    assert not torch.allclose(a.logits[:, 1], b.logits[:, 1])  # frame 2's prediction sees it
    torch.testing.assert_close(a.logits[:, 0], b.logits[:, 0])  # frame 1's prediction does not
    plain = DynamicsModel(dataclasses.replace(cfg, previous_token_input=False))
    assert plain.previous_embed is None and "previous_embed.weight" not in plain.state_dict()
