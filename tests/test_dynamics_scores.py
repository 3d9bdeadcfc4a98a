"""The one dynamics scoring protocol (``wm_video.evaluation.dynamics_scores``): it agrees with the model's own
teacher-forced metric, and the shuffled-action figure gives every clip another clip's actions, whatever the batch."""

from __future__ import annotations

import pytest
import torch

from wm_video.config import preset
from wm_video.evaluation.dynamics_scores import other_actions, score_dynamics
from wm_video.models.dynamics import DynamicsModel


def tiny_model() -> DynamicsModel:
    torch.manual_seed(0)
    model = DynamicsModel(preset("dynamics", "debug")).eval()  # 32 codes, 4x4 tokens, 6 discrete actions
    with torch.no_grad():  # zero-initialised layers (adaLN, action embedding) would hide the actions
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def clips(n: int, t: int = 4, seed: int = 0) -> list[dict[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [{"tokens": torch.randint(0, 32, (1, t, 4, 4), generator=g),
             "actions": torch.randint(0, 6, (1, t), generator=g)} for _ in range(n)]


def batched(items: list[dict[str, torch.Tensor]], size: int) -> list[dict[str, torch.Tensor]]:
    return [{k: torch.cat([c[k] for c in items[i:i + size]]) for k in items[0]} for i in range(0, len(items), size)]


def test_true_action_figures_match_teacher_forced_accuracy():
    model, data = tiny_model(), clips(3)
    batch = batched(data, 3)[0]
    tf = model.teacher_forced_accuracy(batch["tokens"], batch["actions"])
    s = score_dynamics(model, [batch]).summary()
    assert s["next_frame_token_acc"] == pytest.approx(float(tf["token_acc"]), abs=1e-6)
    assert s["token_ce_true_actions"] == pytest.approx(float(tf["token_ce"]), rel=1e-5)
    assert s["copy_last_frame_acc"] == pytest.approx(float(tf["copy_acc"]), abs=1e-6)


def test_other_actions_are_the_previous_clips():
    actions = torch.arange(6).view(3, 2)
    previous = torch.tensor([[9, 9]])
    assert other_actions(actions, previous).tolist() == [[9, 9], [0, 1], [2, 3]]


def test_shuffled_actions_do_not_depend_on_the_batch_size():
    """Batches of one clip used to score each clip with its own actions (a 'shuffle' of one); now every clip gets
    the actions of the clip before it in the scored set, so one-clip batches give the figure of one big batch."""
    model, data = tiny_model(), clips(4)
    one_by_one = score_dynamics(model, batched(data, 1)).summary()
    together = score_dynamics(model, batched(data, 4)).summary()
    for key in ("token_ce_true_actions", "token_ce_shuffled_actions", "token_ce_null_action"):
        assert one_by_one[key] == pytest.approx(together[key], rel=1e-5), key
    assert one_by_one["token_ce_shuffled_actions"] != pytest.approx(one_by_one["token_ce_true_actions"], rel=1e-6)


def test_a_single_clip_gets_its_own_actions_reversed():
    model, data = tiny_model(), clips(1)
    s = score_dynamics(model, data).summary()
    reversed_ce = score_dynamics(model, [{**data[0], "actions": data[0]["actions"].flip(1)}], action_gaps=False)
    assert s["token_ce_shuffled_actions"] == pytest.approx(reversed_ce.summary()["token_ce_true_actions"], rel=1e-5)


def test_limits_and_mode_are_kept():
    model, data = tiny_model(), clips(5)
    model.train()
    s = score_dynamics(model, batched(data, 2), max_batches=2)
    assert s.clips == 4 and model.training
    assert score_dynamics(model, batched(data, 2), max_clips=3).clips == 4  # the batch that crosses it is finished
