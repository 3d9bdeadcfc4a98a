"""Task-text conditioning of the dynamics model (``DynamicsConfig.text_dim``) on tiny models: a model with text
starts as the one without (zero init), learns to follow its text, drops it in training (``text_dropout``),
guides on it at sampling (scale 1: the plain model), saves and loads with it, and refuses text it was not trained
with."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from test_dynamics import actions_for, model_for, tiny, tokens_for
from text_fixtures import save_tiny_text_encoder

from wm_video.models.dynamics import DynamicsModel, Rollout, rollout, sample_next_frame
from wm_video.models.text_encoder import TextEncoder

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module
TEXT_DIM = 16


def text_for(b: int = 2, seed: int = 3) -> torch.Tensor:
    return torch.randn(b, TEXT_DIM, generator=torch.Generator().manual_seed(seed))


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    return TextEncoder(save_tiny_text_encoder(tmp_path_factory.mktemp("text") / "t5"))


def test_a_fresh_text_model_predicts_as_the_same_model_without_text():
    cfg = tiny()
    plain = model_for(cfg, random_init=False)
    torch.manual_seed(0)
    texted = DynamicsModel(dataclasses.replace(cfg, text_dim=TEXT_DIM)).eval()
    assert set(texted.state_dict()) - set(plain.state_dict()) == {f"text.mlp.{i}.{p}" for i in (0, 2)
                                                                  for p in ("weight", "bias")}
    texted.load_state_dict(plain.state_dict(), strict=False)  # the same weights elsewhere
    tokens, actions = tokens_for(cfg, 2, 4), actions_for(cfg, 2, 4)
    with torch.no_grad():
        want = plain(tokens, actions, mask_ratio=1.0)
        for text in (text_for(), None):
            got = texted(tokens, actions, mask_ratio=1.0, text=text)
            for field in ("logits", "reward_logits", "termination_logits"):
                assert torch.equal(getattr(got, field), getattr(want, field))


def test_a_model_without_text_has_no_text_weights_and_loads_old_configs(tmp_path):
    model = model_for(tiny())
    assert model.text is None and not any(k.startswith("text.") for k in model.state_dict())
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["text_dim"] == 0
    for key in ("text_dim", "text_dropout", "text_encoder"):  # an export made before text existed
        del config[key]
    (tmp_path / "config.json").write_text(json.dumps(config))
    loaded = DynamicsModel.from_pretrained(tmp_path)
    assert loaded.config.text_dim == 0 and loaded.text is None


def test_text_dropout_trains_the_no_text_model():
    cfg = tiny(text_dim=TEXT_DIM, text_dropout=1.0)
    model = model_for(cfg).train()  # random text weights: text changes predictions
    tokens, text = tokens_for(cfg, 2, 3), text_for()
    runs = [model(tokens, mask_ratio=0.5, generator=torch.Generator().manual_seed(1), text=t) for t in (text, None)]
    assert torch.equal(runs[0].logits, runs[1].logits)  # every clip's text dropped
    model.eval()
    evals = [model(tokens, mask_ratio=1.0, text=t).logits for t in (text, None)]
    assert not torch.allclose(evals[0], evals[1])  # never dropped outside training


def test_text_decides_the_next_frame_after_a_few_steps(encoder):
    cfg = tiny(action_type="none", context_frames=2, text_dim=TEXT_DIM, text_dropout=0.0)
    torch.manual_seed(0)
    model = DynamicsModel(cfg)
    tasks = ["reach", "push the block", "reach", "push the block"]
    target = torch.tensor([1, 2, 1, 2])
    tokens = torch.zeros(4, 2, cfg.token_h, cfg.token_w, dtype=torch.long)
    tokens[:, 1] = target[:, None, None]  # frame 1 is all 1 after "reach", all 2 after "push the block"
    batch = {"tokens": tokens, "text_embeddings": encoder(tasks)}
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(40):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    with torch.no_grad():
        pred = model(tokens, mask_ratio=1.0, text=batch["text_embeddings"]).logits.argmax(-1)[:, 0]  # (b, h, w)
        swapped = model(tokens, mask_ratio=1.0, text=encoder(tasks[1:] + tasks[:1])).logits.argmax(-1)[:, 0]
    assert torch.equal(pred, target[:, None, None].expand_as(pred))
    assert torch.equal(swapped, (3 - target)[:, None, None].expand_as(pred))  # the other text, the other frame


def _roll(model, text, text_scale=1.0, use_cache=True, scale=1.0, n_steps=1, steps=1):
    """``n_steps`` steps of ``steps`` MaskGIT passes (1: the logits of one pass over a fully masked frame, which
    guidance formulas can be checked on)."""
    cfg = model.config
    acts = actions_for(cfg, 2, 2 + n_steps)
    roll = Rollout(model, steps=steps, temperature=0.0, use_cache=use_cache, guidance_scale=scale,
                   text_guidance_scale=text_scale)
    roll.start(tokens_for(cfg, 2, 2), acts[:, :2], text=text)
    return [roll.step(acts[:, 1 + i]) for i in range(n_steps)]


@pytest.mark.parametrize("use_cache", [True, False])
def test_text_guidance_scale_one_is_the_plain_model_and_zero_the_text_free_one(use_cache):
    model = model_for(tiny(text_dim=TEXT_DIM))
    text = text_for()
    plain = _roll(model, text, use_cache=use_cache, n_steps=2, steps=2)
    assert Rollout(model, text_guidance_scale=1.0).num_streams == 1  # no text-free stream at all
    for o, p in zip(_roll(model, text, 1.0, use_cache, n_steps=2, steps=2), plain, strict=True):
        assert torch.equal(o.logits, p.logits) and torch.equal(o.reward, p.reward)
    # one-shot, teacher-forced: the rollout's first frame is the model's own prediction with the text
    with torch.no_grad():
        one = sample_next_frame(model, tokens_for(model.config, 2, 2), actions_for(model.config, 2, 3)[:, :2], steps=1,
                                temperature=0.0, text=text)
        full = model(torch.cat([tokens_for(model.config, 2, 2), one.tokens[:, None]], 1),
                     actions_for(model.config, 2, 3)[:, :3], mask_ratio=1.0, text=text)
    torch.testing.assert_close(one.logits, full.logits[:, -1], atol=1e-5, rtol=1e-5)
    [uncond] = _roll(model, None, use_cache=use_cache)
    [cond] = _roll(model, text, use_cache=use_cache)
    [zero] = _roll(model, text, 0.0, use_cache)
    [guided] = _roll(model, text, 3.0, use_cache)
    assert (cond.logits - uncond.logits).abs().mean() > 0.05 * uncond.logits.std()
    torch.testing.assert_close(zero.logits, uncond.logits, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(guided.logits - uncond.logits, 3.0 * (cond.logits - uncond.logits), atol=1e-4,
                               rtol=1e-4)
    torch.testing.assert_close(guided.reward_logits, cond.reward_logits, atol=1e-5, rtol=1e-5)  # heads: cond


def test_action_and_text_guidance_combine():
    model = model_for(tiny(text_dim=TEXT_DIM))
    text, s, st = text_for(), 2.0, 3.0
    [both] = _roll(model, text, st, scale=s)
    [cond] = _roll(model, text)
    [text_only] = _roll(model, text, 1.0, scale=0.0)  # actions dropped, text kept
    [no_text] = _roll(model, None)
    want = text_only.logits + s * (cond.logits - text_only.logits) + (st - 1) * (cond.logits - no_text.logits)
    torch.testing.assert_close(both.logits, want, atol=1e-4, rtol=1e-4)
    out = rollout(model, tokens_for(model.config, 2, 2), actions_for(model.config, 2, 3), steps=1, text=text,
                  guidance_scale=s, text_guidance_scale=st, use_cache=False)
    assert out.tokens.shape == (2, 3, 4, 4)


def test_restarted_rows_take_their_own_text():
    model = model_for(tiny(text_dim=TEXT_DIM))
    cfg, text = model.config, text_for()
    roll = Rollout(model, steps=1, temperature=0.0, text_guidance_scale=2.0)
    roll.start(tokens_for(cfg, 2, 3), text=text)
    roll.step()
    new_text = text_for(1, seed=9)
    roll.restart_rows(torch.tensor([1]), tokens_for(cfg, 1, 3, seed=4), text=new_text)
    fresh = Rollout(model, steps=1, temperature=0.0, text_guidance_scale=2.0)
    fresh.start(tokens_for(cfg, 1, 3, seed=4), text=new_text)
    torch.testing.assert_close(roll.step().logits[1:], fresh.step().logits, atol=1e-4, rtol=1e-4)
    with pytest.raises(ValueError, match="restart_rows: text missing, but the rollout started with text"):
        roll.restart_rows(torch.tensor([0]), tokens_for(cfg, 1, 3))


def test_save_load_keeps_the_text_model_and_its_encoder(tmp_path):
    model = model_for(tiny(text_dim=TEXT_DIM, text_encoder="/models/t5-small"))
    model.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["text_encoder"] == "/models/t5-small"
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    tokens, actions, text = tokens_for(model.config), actions_for(model.config, 2, 4), text_for()
    with torch.no_grad():
        assert torch.equal(loaded(tokens, actions, mask_ratio=1.0, text=text).logits,
                           model(tokens, actions, mask_ratio=1.0, text=text).logits)


def test_text_given_to_a_model_without_text_is_refused():
    model = model_for(tiny())
    tokens = tokens_for(model.config)
    with pytest.raises(ValueError, match=r"trained without task text \(text_dim=0\), got text embeddings"):
        model(tokens, text=text_for())
    with pytest.raises(ValueError, match="trained without task text"):
        model.compute_loss({"tokens": tokens, "text_embeddings": text_for()})
    with pytest.raises(ValueError, match="trained without task text"):
        Rollout(model).start(tokens, text=text_for())
    with pytest.raises(ValueError, match=r"text_guidance_scale=2.0: this dynamics model was trained without"):
        Rollout(model, text_guidance_scale=2.0)


def test_a_text_model_refuses_a_batch_without_text_and_text_of_the_wrong_shape():
    model = model_for(tiny(text_dim=TEXT_DIM))
    tokens = tokens_for(model.config)
    with pytest.raises(ValueError, match=r"batch\['text_embeddings'\]: missing; .* \(text_dim=16\)"):
        model.compute_loss({"tokens": tokens})
    with pytest.raises(ValueError, match=r"expected text embeddings, float \(b, text_dim\) = \(2, 16\), got float32 "
                                         r"\(2, 8\)"):
        model(tokens, text=torch.zeros(2, 8))
    with pytest.raises(ValueError, match="text_guidance_scale must be >= 0"):
        Rollout(model, text_guidance_scale=-1.0)
