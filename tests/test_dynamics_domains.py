"""One dynamics model over several action domains (``DynamicsConfig.domains``), on tiny models: save/load, action
sensitivity per domain, no leaks between domains, causality and KV-cache equality with a domain, the shared null
action, ``add_domain`` for fine-tuning, errors, and old single-domain exports."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest
import torch

from wm_video.config import ConfigError, load_config
from wm_video.models.dynamics import ActionDomain, DynamicsConfig, DynamicsModel, Rollout, rollout, sample_next_frame
from wm_video.models.dynamics.actions import ActionEncoder, DomainActions

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module

DOMAINS = [ActionDomain("atari", "discrete", num_actions=4),
           ActionDomain("arm", "continuous", action_dim=2, action_mean=[0.5, -1.0], action_std=[2.0, 0.5]),
           ActionDomain("video", "none")]


def tiny(**kw) -> DynamicsConfig:
    return dataclasses.replace(load_config("dynamics", preset_name="debug"), **{"domains": DOMAINS, **kw})


def perturbed(model: DynamicsModel, seed: int = 0) -> DynamicsModel:
    """``model`` with its zero-initialised parts (adaLN modulation, action offsets, reward layer) made random, so
    every input path has an effect (as ``model_for`` in tests/test_dynamics.py)."""
    torch.manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            if not p.any():
                p.normal_(std=0.3)
    return model.eval()


def model_for(cfg: DynamicsConfig, seed: int = 0) -> DynamicsModel:
    torch.manual_seed(seed)
    return perturbed(DynamicsModel(cfg), seed)


def actions_for(cfg: DynamicsConfig, domain: str | None, b: int, t: int, seed: int = 1) -> torch.Tensor | None:
    spec, g = cfg.domain(domain), torch.Generator().manual_seed(seed)
    if spec.action_type == "discrete":
        return torch.randint(0, spec.num_actions, (b, t), generator=g)
    if spec.action_type == "continuous":
        return torch.randn(b, t, spec.action_dim, generator=g) * 2
    return None


def other_actions(cfg: DynamicsConfig, domain: str, actions: torch.Tensor) -> torch.Tensor:
    spec = cfg.domain(domain)
    return (actions + 1) % spec.num_actions if spec.action_type == "discrete" else actions + 1.0


def tokens_for(cfg: DynamicsConfig, b: int = 2, t: int = 4, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, cfg.vocab_size, (b, t, cfg.token_h, cfg.token_w), generator=g)


def logits(model: DynamicsModel, tokens: torch.Tensor, actions: torch.Tensor | None, domain: str | None
           ) -> torch.Tensor:
    with torch.no_grad():
        return model(tokens, actions, mask_ratio=1.0, domain=domain).logits


def test_the_config_checks_and_builds_its_domains(tmp_path):
    cfg = tiny(domains=[dataclasses.asdict(d) for d in DOMAINS])  # as config.json holds them
    assert cfg.domains == DOMAINS and [d.name for d in cfg.action_domains] == ["atari", "arm", "video"]
    assert cfg.domain("arm").action_std == [2.0, 0.5]
    arm = cfg.domain_config("arm")
    assert (arm.action_type, arm.action_dim, arm.action_mean, arm.domains) == ("continuous", 2, [0.5, -1.0], [])
    single = load_config("dynamics", preset_name="debug")  # no domains: one, named default, from the top-level fields
    assert single.domains == [] and single.domain(None) == single.domain("default")
    assert single.domain().action_type == single.action_type
    with pytest.raises(ValueError, match=r"names must be unique, repeated: \['atari'\]"):
        tiny(domains=[DOMAINS[0], DOMAINS[0]])
    for name in ("", "a.b", "_x", "keys"):
        with pytest.raises(ValueError, match=re.escape(f"name '{name}'")):
            tiny(domains=[ActionDomain(name)])
    with pytest.raises(ValueError, match="action domain 'arm': field 'action_std' needs action_dim=2 entries"):
        ActionDomain("arm", "continuous", action_dim=2, action_std=[1.0])
    with pytest.raises(ValueError, match="action domain 'pong': field 'num_actions' must be >= 1"):
        tiny(domains=[{"name": "pong", "action_type": "discrete"}])
    with pytest.raises(ValueError, match="action domain 'x': field 'action_type' must be one of"):
        ActionDomain("x", "joystick")
    # a YAML experiment file lists them as mappings
    (tmp_path / "multi.yaml").write_text("kind: dynamics\ndomains:\n  - {name: atari, action_type: discrete, "
                                         "num_actions: 4}\n  - {name: video}\n")
    cfg = load_config(yaml_path=tmp_path / "multi.yaml")
    assert cfg.domains == [ActionDomain("atari", "discrete", 4), ActionDomain("video")]
    (tmp_path / "bad.yaml").write_text("kind: dynamics\ndomains:\n  - {name: atari, num_actoins: 4}\n")
    with pytest.raises(ConfigError, match="num_actoins"):
        load_config(yaml_path=tmp_path / "bad.yaml")


def test_save_load_round_trip_with_three_domains(tmp_path):
    cfg = tiny()
    model = model_for(cfg)
    assert isinstance(model.actions, DomainActions) and list(model.actions.encoders) == ["atari", "arm", "video"]
    model.save_pretrained(tmp_path)
    written = json.loads((tmp_path / "config.json").read_text())["domains"]
    assert written[1] == {"name": "arm", "action_type": "continuous", "num_actions": 0, "action_dim": 2,
                          "action_mean": [0.5, -1.0], "action_std": [2.0, 0.5], "action_low": [],
                          "action_high": []}
    assert "atari: discrete, 4 actions; arm: continuous, 2 dims; video: none (video only)" in (
        tmp_path / "README.md").read_text()  # the part's card lists the domains
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    torch.testing.assert_close(loaded.actions.encoders["arm"].std, torch.tensor([2.0, 0.5]), rtol=0, atol=0)
    tokens = tokens_for(cfg)
    mask = model.sample_target_mask(2, 3, 0.5, torch.Generator().manual_seed(0)).view(2, 3, 4, 4)
    for d in DOMAINS:
        acts = actions_for(cfg, d.name, 2, 4)
        with torch.no_grad():
            a = model(tokens, acts, target_mask=mask, domain=d.name)
            b = loaded(tokens, acts, target_mask=mask, domain=d.name)
        for field in ("logits", "reward_logits", "termination_logits", "pooled"):
            torch.testing.assert_close(getattr(a, field), getattr(b, field), rtol=0, atol=0)


@pytest.mark.parametrize("domain", ["atari", "arm"])
def test_each_domains_actions_change_its_predictions(domain):
    cfg = tiny()
    model = model_for(cfg)
    tokens, acts = tokens_for(cfg, 1, 2), actions_for(cfg, domain, 1, 2)
    la = logits(model, tokens, acts, domain)
    lb = logits(model, tokens, other_actions(cfg, domain, acts), domain)
    assert (la - lb).abs().mean() > 0.1 * la.std()
    with torch.no_grad():
        ra = model(tokens, acts, mask_ratio=1.0, domain=domain).reward_logits
        rb = model(tokens, other_actions(cfg, domain, acts), mask_ratio=1.0, domain=domain).reward_logits
    assert not torch.allclose(ra, rb)  # the heads read the domain's action too


def test_continuous_domains_are_normalised_with_their_own_statistics():
    raw = model_for(tiny(domains=[ActionDomain("arm", "continuous", action_dim=2)]))
    norm = DynamicsModel(tiny(domains=[DOMAINS[1]])).eval()
    norm.load_state_dict(raw.state_dict())
    tokens, acts = tokens_for(raw.config), actions_for(raw.config, "arm", 2, 4)
    scaled = acts * torch.tensor([2.0, 0.5]) + torch.tensor([0.5, -1.0])
    torch.testing.assert_close(logits(norm, tokens, scaled, "arm"), logits(raw, tokens, acts, "arm"))


def test_domains_do_not_leak_into_each_other():
    cfg = tiny()
    model = model_for(cfg)
    tokens = tokens_for(cfg)
    acts = {d.name: actions_for(cfg, d.name, 2, 4) for d in DOMAINS}
    before = {name: logits(model, tokens, a, name) for name, a in acts.items()}
    for changed in ("arm", "atari"):
        with torch.no_grad():
            for p in model.actions.encoders[changed].parameters():
                p.add_(torch.randn_like(p))
        after = {name: logits(model, tokens, a, name) for name, a in acts.items()}
        for name in acts:
            if name == changed:
                assert not torch.allclose(after[name], before[name])
            else:
                assert torch.equal(after[name], before[name]), (changed, name)
        before = after


def test_frames_never_see_the_future_with_a_domain():
    cfg = tiny(action_token=True)
    model = model_for(cfg)
    tokens, acts = tokens_for(cfg), actions_for(cfg, "arm", 2, 4)
    changed = tokens.clone()
    changed[:, 2] = (changed[:, 2] + 1) % cfg.vocab_size  # frame 2
    mask = model.sample_target_mask(2, 3, generator=torch.Generator().manual_seed(0)).view(2, 3, 4, 4)
    with torch.no_grad():
        a = model(tokens, acts, target_mask=mask, domain="arm")
        b = model(changed, acts, target_mask=mask, domain="arm")
    torch.testing.assert_close(a.pooled[:, :2], b.pooled[:, :2])
    torch.testing.assert_close(a.reward_logits[:, :2], b.reward_logits[:, :2])
    torch.testing.assert_close(a.logits[:, :1], b.logits[:, :1])
    assert not torch.allclose(a.logits[:, 2], b.logits[:, 2])  # frame 3's prediction does see frame 2
    later = acts.clone()
    later[:, 2] += 1.0  # the action taken at frame 2 produces frame 3 only
    with torch.no_grad():
        c = model(tokens, later, target_mask=mask, domain="arm")
    torch.testing.assert_close(a.logits[:, :2], c.logits[:, :2])
    assert not torch.allclose(a.logits[:, 2], c.logits[:, 2])


@pytest.mark.parametrize("domain", ["arm", "atari"])
def test_cached_rollout_equals_recomputation_for_a_domain(domain):
    cfg = tiny()  # context_frames 4: from 1 frame, 3 steps stay within the window
    model = model_for(cfg)
    acts = actions_for(cfg, domain, 2, 4)
    outs = {}
    for use_cache in (True, False):
        roll = Rollout(model, steps=3, temperature=0.0, use_cache=use_cache, domain=domain)
        roll.start(tokens_for(cfg, 2, 1))
        outs[use_cache] = [roll.step(acts[:, i]) for i in range(3)]
    for c, p in zip(outs[True], outs[False], strict=True):
        assert torch.equal(c.tokens, p.tokens)
        torch.testing.assert_close(c.logits, p.logits, atol=1e-4, rtol=1e-4)
        torch.testing.assert_close(c.reward_logits, p.reward_logits, atol=1e-4, rtol=1e-4)
    # past the window, the cached rollout equals the sliding-window forward of the same domain
    context, n_steps = 2, 6
    acts = actions_for(cfg, domain, 2, context + n_steps)
    start = tokens_for(cfg, 2, context)
    out = rollout(model, start, acts[:, context - 1:context - 1 + n_steps], context_actions=acts[:, :context - 1],
                  steps=1, temperature=0.0, domain=domain)
    history = torch.cat([start, out.tokens], 1)
    with torch.no_grad():
        full = model(history, acts[:, :context + n_steps], mask_ratio=1.0, sliding_window=True, domain=domain)
    for i in range(n_steps):
        assert torch.equal(out.tokens[:, i], full.logits[:, context - 1 + i].argmax(-1))
    torch.testing.assert_close(out.rewards, full.reward[:, context - 1:context - 1 + n_steps], atol=1e-4, rtol=1e-4)
    nxt = sample_next_frame(model, start, acts[:, :context], steps=1, temperature=0.0, domain=domain)
    assert torch.equal(nxt.tokens, out.tokens[:, 0])


def test_guidance_follows_the_domains_action_type():
    model = model_for(tiny())
    assert Rollout(model, guidance_scale=2.0, domain="atari").guided
    assert not Rollout(model, guidance_scale=2.0, domain="video").guided  # cond == uncond: nothing to guide


def test_compute_loss_trains_the_batchs_domain_and_the_shared_null():
    cfg = tiny()
    model = model_for(cfg).train()  # perturbed: a fresh model's zero modulation would pass the null no gradient
    tokens = tokens_for(cfg)
    batch = {"tokens": tokens, "actions": actions_for(cfg, "atari", 2, 4), "domain": "atari",
             "rewards": torch.randn(2, 4), "terminations": torch.zeros(2, 4, dtype=torch.bool)}
    loss, logs = model.compute_loss(batch)
    assert torch.isfinite(loss) and torch.isfinite(logs["reward_loss"])
    loss.backward()
    encoders = model.actions.encoders
    assert model.actions.null.grad.abs().sum() > 0 and encoders["atari"].embed.weight.grad is not None
    assert all(p.grad is None for p in encoders["arm"].parameters())  # another domain's encoder is not used
    model.zero_grad()
    loss, _ = model.compute_loss({"tokens": tokens, "domain": "video"})  # action-free video trains the same null
    loss.backward()
    assert torch.isfinite(loss) and model.actions.null.grad.abs().sum() > 0
    with pytest.raises(ValueError, match=r"batch\['domain'\]: one domain name \(str\) for the whole batch"):
        model.compute_loss({"tokens": tokens, "domain": ["atari", "atari"]})
    with pytest.raises(ValueError, match="pass domain=NAME"):
        model.compute_loss({"tokens": tokens})
    tf = model.eval().teacher_forced_accuracy(tokens, batch["actions"], domain="atari")
    _, logs = model.compute_loss({**batch, "rewards": None, "terminations": None}, mask_ratio=1.0)
    torch.testing.assert_close(tf["token_ce"], logs["token_ce"])


def test_every_domain_shares_one_null_action():
    cfg = tiny()
    model = model_for(cfg)
    nulls = [name for name, _ in model.named_parameters() if name.endswith("null")]
    assert nulls == ["actions.null"]
    tokens = tokens_for(cfg)
    video = logits(model, tokens, None, "video")
    for name in ("atari", "arm"):
        torch.testing.assert_close(logits(model, tokens, None, name), video, rtol=0, atol=0)
        acts = actions_for(cfg, name, 2, 4)
        assert not torch.allclose(logits(model, tokens, acts, name), video)
        model.config = dataclasses.replace(cfg, null_action_prob=1.0)  # training drops every clip's actions
        with torch.no_grad():
            dropped = model.train()(tokens, acts, mask_ratio=1.0, domain=name).logits
        model.config = cfg
        model.eval()
        torch.testing.assert_close(dropped, video, rtol=0, atol=0)


def test_unknown_or_missing_domains_are_named():
    cfg = tiny()
    model = model_for(cfg)
    tokens = tokens_for(cfg)
    missing = r"this model has 3 action domains \['atari', 'arm', 'video'\]; pass domain=NAME"
    unknown = r"unknown action domain 'robot'; known: \['atari', 'arm', 'video'\]"
    for call in (lambda: model(tokens), lambda: model.teacher_forced_accuracy(tokens), lambda: Rollout(model),
                 lambda: rollout(model, tokens, num_frames=1)):
        with pytest.raises(ValueError, match=missing):
            call()
    for call in (lambda: model(tokens, domain="robot"), lambda: Rollout(model, domain="robot"),
                 lambda: model.compute_loss({"tokens": tokens, "domain": "robot"}),
                 lambda: sample_next_frame(model, tokens, domain="robot")):
        with pytest.raises(ValueError, match=unknown):
            call()
    with pytest.raises(ValueError, match=r"actions \(domain 'arm'\): expected continuous actions, float \(b, t, a\) "
                                         r"= \(2, 4, 2\), got int64 \(2, 4\)"):
        model(tokens, actions_for(cfg, "atari", 2, 4), domain="arm")
    with pytest.raises(ValueError, match=r"\(domain 'atari'\): discrete ids must be in \[0, 4\)"):
        model(tokens, torch.full((2, 4), 5), domain="atari")
    with pytest.raises(ValueError, match=r"\(domain 'video'\): this model has action_type 'none'"):
        model(tokens, torch.zeros(2, 4, dtype=torch.long), domain="video")
    roll = Rollout(model, domain="arm")
    roll.start(tokens)
    with pytest.raises(ValueError, match=r"\(domain 'arm'\): expected continuous actions, float \(b, a\) = \(2, 2\), "
                                         r"got float32 \(2, 3\)"):
        roll.step(torch.zeros(2, 3))
    with pytest.raises(ValueError, match=missing):
        model.actions.check(None, (2, 4))  # the world-model env's entry check


def test_add_domain_starts_as_the_null_action_and_changes_nothing_else(tmp_path):
    cfg = tiny(domains=DOMAINS[:2], action_init="normal")
    model = model_for(cfg)
    tokens = tokens_for(cfg)
    old = {k: v.clone() for k, v in model.state_dict().items()}
    before = {d.name: logits(model, tokens, actions_for(cfg, d.name, 2, 4), d.name) for d in DOMAINS[:2]}
    null = logits(model, tokens, None, "atari")
    robot = ActionDomain("robot", "continuous", action_dim=3, action_mean=[1.0, 2.0, 3.0], action_std=[1.0, 1.0, 2.0])
    model.add_domain(dataclasses.asdict(robot))  # a dict, as a config.json or a caller may give it
    state = model.state_dict()
    assert sorted(set(state) - set(old)) == ["actions.encoders.robot.mlp.0.bias", "actions.encoders.robot.mlp.0.weight",
                                             "actions.encoders.robot.mlp.2.bias", "actions.encoders.robot.mlp.2.weight"]
    for key, value in old.items():
        assert torch.equal(state[key], value), key
    for d in DOMAINS[:2]:
        assert torch.equal(logits(model, tokens, actions_for(cfg, d.name, 2, 4), d.name), before[d.name])
    robot_acts = torch.randn(2, 4, 3) * 5
    assert torch.equal(logits(model, tokens, robot_acts, "robot"), null)  # every action starts as the null action
    assert model.config.domains == [*DOMAINS[:2], robot] and not model.actions.encoders["robot"].training
    model.save_pretrained(tmp_path)
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    assert loaded.config == model.config
    assert torch.equal(logits(loaded, tokens, robot_acts, "robot"), null)
    with pytest.raises(ValueError, match=r"already has an action domain 'arm' \(domains: \['atari', 'arm', 'robot'\]"):
        model.add_domain(ActionDomain("arm", "discrete", num_actions=2))
    with pytest.raises(ValueError, match=r"name 'a\.b'"):
        model.add_domain(ActionDomain("a.b"))
    assert list(model.actions.encoders) == ["atari", "arm", "robot"]  # a refused domain leaves nothing behind


@pytest.mark.parametrize("kind", ["none", "discrete"])
def test_add_domain_to_a_single_domain_model(tmp_path, kind):
    """A model without a domains list (e.g. pretrained on action-free video) gets a second domain: its own action
    space becomes domain ``default``, with the same parameter objects."""
    fields = {"none": {"action_type": "none"}, "discrete": {"num_actions": 3}}[kind]
    cfg = load_config("dynamics", preset_name="debug")
    model = model_for(dataclasses.replace(cfg, **fields))
    tokens = tokens_for(cfg)
    acts = torch.randint(0, 3, (2, 4)) if kind == "discrete" else None
    before, null = logits(model, tokens, acts, None), logits(model, tokens, None, None)
    params = dict(model.named_parameters())
    model.add_domain(ActionDomain("arm", "continuous", action_dim=2))
    moved = {"actions.embed.weight": "actions.encoders.default.embed.weight"}
    for name, p in params.items():
        assert dict(model.named_parameters())[moved.get(name, name)] is p, name
    assert [d.name for d in model.config.domains] == ["default", "arm"]
    assert torch.equal(logits(model, tokens, acts, "default"), before)
    assert torch.equal(logits(model, tokens, torch.randn(2, 4, 2), "arm"), null)
    model.save_pretrained(tmp_path)
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    assert torch.equal(logits(loaded, tokens, acts, "default"), before)


def test_an_old_single_domain_export_loads_and_behaves_as_before(tmp_path):
    cfg = dataclasses.replace(load_config("dynamics", preset_name="debug"), action_type="continuous", action_dim=2,
                              action_mean=[1.0, 0.0], action_std=[2.0, 1.0])
    model = model_for(cfg)
    model.save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    assert config.pop("domains") == []
    (tmp_path / "config.json").write_text(json.dumps(config))  # as written before domains existed
    loaded = DynamicsModel.from_pretrained(tmp_path).eval()
    assert loaded.config == cfg and loaded.config.domains == []
    assert type(loaded.actions) is ActionEncoder  # the old layout: actions.null, actions.mlp.*
    assert {k for k in loaded.state_dict() if k.startswith("actions.")} == {
        "actions.null", "actions.mlp.0.weight", "actions.mlp.0.bias", "actions.mlp.2.weight", "actions.mlp.2.bias"}
    tokens, acts = tokens_for(cfg), torch.randn(2, 4, 2)
    expected = logits(model, tokens, acts, None)
    assert torch.equal(logits(loaded, tokens, acts, None), expected)
    assert torch.equal(logits(loaded, tokens, acts, "default"), expected)  # its one domain's name
    with pytest.raises(ValueError, match=r"unknown action domain 'arm'; known: \['default'\]"):
        loaded(tokens, acts, domain="arm")
    out = rollout(loaded, tokens[:, :2], acts[:, 1:3], context_actions=acts[:, :1], steps=1, temperature=0.0)
    assert out.tokens.shape == (2, 2, 4, 4)


@pytest.mark.parametrize("domain", ["atari", "arm", "video"])
def test_a_domain_model_is_that_domain_of_the_same_weights(tmp_path, domain):
    cfg = tiny()
    model = model_for(cfg)
    view = model.domain_model(domain).eval()
    assert view.config == cfg.domain_config(domain) and not view.config.domains
    assert not any(t.is_meta for t in [*view.parameters(), *view.buffers()])
    shared = {p.data_ptr() for p in model.parameters()}
    assert all(p.data_ptr() in shared for p in view.parameters())  # nothing copied
    tokens, acts = tokens_for(cfg), actions_for(cfg, domain, 2, 4)
    torch.testing.assert_close(logits(view, tokens, acts, None), logits(model, tokens, acts, domain), rtol=0, atol=0)
    future = acts[:, 2:] if acts is not None else None
    steps = rollout(view, tokens[:, :2], future, num_frames=2, temperature=0.0)
    ref = rollout(model, tokens[:, :2], future, num_frames=2, temperature=0.0, domain=domain)
    assert torch.equal(steps.tokens, ref.tokens)
    view.save_pretrained(tmp_path)  # that domain alone, as a single-domain export
    alone = DynamicsModel.from_pretrained(tmp_path).eval()
    assert alone.config.action_type == cfg.domain(domain).action_type and not alone.config.domains
    torch.testing.assert_close(logits(alone, tokens, acts, None), logits(model, tokens, acts, domain), rtol=0, atol=0)


def test_a_domain_model_trains_the_model_it_came_from():
    cfg = tiny()
    model = model_for(cfg)
    view = model.domain_model("arm").train()
    tokens, acts = tokens_for(cfg), actions_for(cfg, "arm", 2, 4)
    before = model.actions.encoders["arm"].mlp[0].weight.clone()
    view.compute_loss({"tokens": tokens, "actions": acts})[0].backward()
    assert model.actions.encoders["arm"].mlp[0].weight.grad is not None
    assert model.actions.encoders["atari"].embed.weight.grad is None  # another domain's encoder is untouched
    with torch.no_grad():
        model.actions.encoders["arm"].mlp[0].weight.add_(1.0)
    torch.testing.assert_close(view.actions.mlp[0].weight, before + 1.0)


def test_a_domain_model_names_the_known_domains():
    model = model_for(tiny())
    with pytest.raises(ValueError, match=re.escape("unknown action domain 'robot'; known: ['atari', 'arm', 'video']")):
        model.domain_model("robot")
    with pytest.raises(ValueError, match="has 3 action domains"):
        model.domain_model()
    single = model_for(dataclasses.replace(load_config("dynamics", preset_name="debug"), action_type="none"))
    assert single.domain_model() is single and single.domain_model("default") is single
    with pytest.raises(ValueError, match="unknown action domain 'atari'"):
        single.domain_model("atari")


def test_domain_bounds_are_checked():
    ActionDomain("arm", "continuous", action_dim=2, action_low=[-1, -2], action_high=[1, 2])
    with pytest.raises(ValueError, match="'action_low' and 'action_high' need action_dim=2"):
        ActionDomain("arm", "continuous", action_dim=2, action_low=[-1], action_high=[1])
    with pytest.raises(ValueError, match="exceeds"):
        ActionDomain("arm", "continuous", action_dim=1, action_low=[1], action_high=[-1])
