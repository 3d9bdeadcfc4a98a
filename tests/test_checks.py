"""Inputs are validated once, where they enter (``WorldModelEnv.reset`` / ``step``, a training batch before its
device copy): the models' own value checks, each a host read, are skipped inside ``checks.validated()`` and come
back with ``CHECK_VALUES`` (``WM_VIDEO_CHECKS=1``)."""

from __future__ import annotations

import warnings

import pytest
import torch
from test_dynamics import actions_for, model_for, tiny, tokens_for
from test_world_model import context, make_world_model

from wm_video.models import checks
from wm_video.models.checks import check_values, validated
from wm_video.models.dynamics import rollout, sample_next_frame
from wm_video.training.dynamics_module import DynamicsModule, DynamicsTrainConfig
from wm_video.world_model import RenderSettings
from wm_video.world_model_env import WorldModelEnv

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(autouse=True)
def default_checks(monkeypatch):
    """The default switch, also under WM_VIDEO_CHECKS=1: the counts below are those of the default."""
    monkeypatch.setattr(checks, "CHECK_VALUES", False)


@pytest.fixture
def value_reads(monkeypatch):
    """Counts the value checks' host reads: id ranges (``torch.aminmax``) and finiteness (``torch.isfinite``)."""
    calls = {"aminmax": 0, "isfinite": 0}
    for name in calls:
        original = getattr(torch, name)

        def counted(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        monkeypatch.setattr(torch, name, counted)
    return calls


def test_validated_turns_value_checks_off_until_the_block_ends_and_the_debug_switch_keeps_them(monkeypatch):
    assert check_values()  # outside validated(): on
    with pytest.raises(RuntimeError), validated():
        assert not check_values()
        with validated():
            assert not check_values()
        assert not check_values()
        raise RuntimeError
    assert check_values()  # also after an error inside
    monkeypatch.setattr(checks, "CHECK_VALUES", True)
    with validated():
        assert check_values()


def test_a_model_called_directly_still_checks_its_input_values(value_reads):
    cfg = tiny()
    model = model_for(cfg)
    tokens, actions = tokens_for(cfg), actions_for(cfg, 2, 4)
    with pytest.raises(ValueError, match=r"tokens: ids must be in \[0, 32\), got \[\d+, 32\]"):
        model(tokens.index_fill(1, torch.tensor([2]), cfg.vocab_size))
    value_reads.update(aminmax=0)
    model(tokens, actions)
    assert value_reads["aminmax"] == 2  # tokens and actions
    with validated():
        model(tokens, actions)
    assert value_reads["aminmax"] == 2  # nothing more read inside validated()


def test_env_step_reads_the_action_values_once_and_the_models_read_nothing_more(value_reads, monkeypatch):
    env = WorldModelEnv(make_world_model(), maskgit_steps=2, render=RenderSettings(num_inference_steps=1),
                        generator=torch.Generator().manual_seed(0))
    env.reset(context(), torch.tensor([[1, 2], [3, 4]]))
    value_reads.update(aminmax=0, isfinite=0)
    for _ in range(3):
        env.step(torch.tensor([0, 5]))
    assert value_reads == {"aminmax": 3, "isfinite": 0}  # the env's check of each step's actions, nothing else
    with pytest.raises(ValueError, match=r"actions: discrete ids must be in \[0, 6\), got \[0, 9\]"):
        env.step(torch.tensor([0, 9]))
    with pytest.raises(ValueError, match=r"context actions: discrete ids must be in \[0, 6\), got \[-1, 4\]"):
        env.reset(context(), torch.tensor([[1, 2], [-1, 4]]))
    with validated():  # a caller whose actions are its own (a planner) skips even the env's check
        value_reads.update(aminmax=0)
        env.reset(context(), torch.tensor([[1, 2], [3, 4]]))
        env.step(torch.tensor([0, 5]))
        assert value_reads["aminmax"] == 0
    monkeypatch.setattr(checks, "CHECK_VALUES", True)  # debugging: every floor checks again
    value_reads.update(aminmax=0)
    env.step(torch.tensor([0, 5]))
    assert value_reads["aminmax"] >= 3  # the env, the action encoder, the decoder's tokens


def test_continuous_actions_are_checked_once_per_step_naming_the_place():
    env = WorldModelEnv(make_world_model(decoder=False, action_type="continuous", action_dim=2), maskgit_steps=1,
                        render=False)
    env.reset(context())
    env.step(torch.zeros(2, 2))
    nan = torch.zeros(2, 2)
    nan[1, 0] = float("inf")
    with pytest.raises(ValueError, match=r"actions: NaN or inf in continuous actions \(first at index \[1, 0\]\)"):
        env.step(nan)


def test_rollout_helpers_check_all_actions_once(value_reads):
    cfg = tiny()
    model, tokens = model_for(cfg), tokens_for(cfg, t=3)
    actions = actions_for(cfg, 2, 5)
    rollout(model, tokens, actions, num_frames=None, steps=1, temperature=0.0)
    assert value_reads["aminmax"] == 2  # the context tokens and all five steps' actions, once each
    value_reads.update(aminmax=0)
    sample_next_frame(model, tokens, actions[:, :3], steps=1, temperature=0.0)
    assert value_reads["aminmax"] == 2  # the clip's tokens and actions, not again in start and step
    with pytest.raises(ValueError, match=r"discrete ids must be in \[0, 6\), got \[0, 6\]"):
        rollout(model, tokens, actions.index_fill(1, torch.tensor([4]), 6), steps=1)


def test_training_checks_each_batch_on_the_cpu_before_the_device_copy_and_not_in_the_step(value_reads):
    cfg = tiny()
    module = DynamicsModule(DynamicsTrainConfig(model=cfg))
    batch = {"tokens": tokens_for(cfg), "actions": actions_for(cfg, 2, 4)}
    assert module.on_before_batch_transfer(batch, 0) is batch
    assert value_reads["aminmax"] == 2  # tokens and actions
    value_reads.update(aminmax=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # self.log without a Trainer attached
        loss = module.training_step(batch, 0)
    assert torch.isfinite(loss) and value_reads["aminmax"] == 0
    bad_tokens = {**batch, "tokens": batch["tokens"].index_fill(1, torch.tensor([1]), cfg.vocab_size)}
    with pytest.raises(ValueError, match=r"tokens: ids must be in \[0, 32\)"):
        module.on_before_batch_transfer(bad_tokens, 0)
    bad_actions = {**batch, "actions": batch["actions"].index_fill(1, torch.tensor([1]), -1)}
    with pytest.raises(ValueError, match=r"actions: discrete ids must be in \[0, 6\), got \[-1, \d\]"):
        module.on_before_batch_transfer(bad_actions, 0)
