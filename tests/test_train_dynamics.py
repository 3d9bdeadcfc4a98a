"""`wm-video train dynamics` end to end on tiny token shards: config from the data, logs, export, resume."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
import torch
from conftest import write_dataset, write_token_dataset

from wm_video.cli import main
from wm_video.models.dynamics import DynamicsModel
from wm_video.training.dynamics_module import crop_window

ROOT = Path(__file__).resolve().parents[1]


def test_crop_window_cuts_every_time_field_alike():
    batch = {"tokens": torch.arange(2 * 6 * 4).view(2, 6, 2, 2), "actions": torch.arange(12).view(2, 6),
             "rewards": torch.arange(12.0).view(2, 6), "key": ["a", "b"]}
    out = crop_window(batch, 4, torch.Generator().manual_seed(0))
    assert out["tokens"].shape == (2, 4, 2, 2) and out["key"] == ["a", "b"]
    start = int(out["actions"][0, 0])
    assert torch.equal(out["tokens"], batch["tokens"][:, start:start + 4])
    assert torch.equal(out["rewards"], batch["rewards"][:, start:start + 4])
    assert crop_window(batch, 8) is batch


def test_train_export_and_resume(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=4, t=6, grid=4, vocab=16)
    args = ["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out", str(tmp_path / "run"),
            "trainer.val_check_interval=2", "val_fraction=0.34", "trainer.log_every_n_steps=2"]
    assert main([*args, "--max-steps", "4"]) == 0
    model = DynamicsModel.from_pretrained(tmp_path / "run" / "export")
    # the data, not the preset, decided vocabulary, grid and action space
    assert (model.config.vocab_size, model.config.token_h, model.config.num_actions) == (16, 4, 6)
    assert model.config.termination_pos_weight == pytest.approx((72 - 6) / 6)  # 72 steps, 6 terminations
    tags = set(EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Tags()["scalars"])
    assert {"train/token_ce", "train/reward_loss", "train/termination_loss", "val/tf_token_acc",
            "val/tf_copy_acc", "perf/tokens_per_s", "perf/mfu"} <= tags
    assert main([*args, "--max-steps", "6"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6

    # the held-out evaluation script runs on the export and reports every figure with its baseline
    spec = importlib.util.spec_from_file_location("eval_dynamics", ROOT / "eval" / "dynamics" / "eval_dynamics.py")
    eval_dynamics = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(eval_dynamics)
    result = eval_dynamics.evaluate(str(tmp_path / "run" / "export"), str(tmp_path / "tok"), val_fraction=0.34)
    assert result["clips"] == 4 and result["predicted_tokens"] == 4 * 3 * 16  # cut to the 4-frame window
    for key in ("next_frame_token_acc", "copy_last_frame_acc", "changed_token_acc", "reward_f1"):
        assert 0 <= result[key] <= 1, key
    assert result["termination_positive"] == 2 and 0 <= result["termination_auroc"] <= 1
    assert result["token_ce_shuffled_actions"] > 0 and result["token_ce_null_action"] > 0


def test_frames_instead_of_tokens_is_a_clear_error(tmp_path, capsys):
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2)
    assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "ds"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "not tokens: tokenize it first" in capsys.readouterr().err
