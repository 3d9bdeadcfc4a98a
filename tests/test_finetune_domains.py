"""Fine-tuning into an action domain (``finetune.domain``): a new domain gets a fresh encoder that starts as the null
action while every other domain's encoder stays as it was; a known domain continues its encoder; clear errors."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from conftest import write_token_dataset
from safetensors.torch import load_file
from test_finetune import train_cfg, write_continuous_token_dataset

from wm_video.cli import main
from wm_video.data.reader import load_dataset_info
from wm_video.models.dynamics import ActionDomain, DynamicsModel

DOMAINS = [ActionDomain("atari", "discrete", num_actions=6), ActionDomain("video", "none")]


def pretrained(path: Path, **fields) -> DynamicsModel:
    """A debug-sized export at ``path`` with every weight moved off its initialisation (the zero-initialised action
    offsets and modulations would otherwise hide what the transfer kept); two domains unless ``fields`` say."""
    torch.manual_seed(0)
    model = DynamicsModel(dataclasses.replace(train_cfg().model, vocab_size=16, token_h=4, token_w=4,
                                              **{"domains": DOMAINS, **fields}))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    model.save_pretrained(path)
    return model.eval()


def finetune(tmp_path: Path, data: Path, *extra: str, steps: int = 3) -> int:
    return main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre"), "--data", str(data),
                 "--out", str(tmp_path / "run"), "--max-steps", str(steps), "val_fraction=0.5", "trainer.logger=none",
                 "finetune.eval_batches=1", "finetune.eval_batch_size=2", *extra])


def test_a_new_domain_is_added_and_the_others_stay_as_they_were(tmp_path):
    write_continuous_token_dataset(tmp_path / "robot", shards=2)
    pre = pretrained(tmp_path / "pre")
    assert finetune(tmp_path, tmp_path / "robot", "finetune.domain=robot") == 0
    model = DynamicsModel.from_pretrained(tmp_path / "run" / "export")
    assert [d.name for d in model.config.domains] == ["atari", "video", "robot"]
    robot, info = model.config.domain("robot"), load_dataset_info(tmp_path / "robot")
    assert (robot.action_type, robot.action_dim) == ("continuous", 2)
    assert robot.action_mean == pytest.approx(info.stats["actions"]["mean"])
    assert (robot.action_low, robot.action_high) == ([-2.0, 3.0], [4.0, 7.0])
    weights, old = load_file(tmp_path / "run" / "export" / "model.safetensors"), pre.state_dict()
    assert torch.equal(weights["actions.encoders.atari.embed.weight"], old["actions.encoders.atari.embed.weight"])
    qkv = "backbone.blocks.0.temporal.qkv.weight"
    assert not torch.equal(weights[qkv], old[qkv])
    assert weights["actions.encoders.robot.mlp.2.weight"].abs().sum() > 0  # the new encoder learned
    record = json.loads((tmp_path / "run" / "finetune_eval.json").read_text())
    assert record["domain"] == "robot" and record["action_type"] == "continuous"
    assert record["transfer"]["fresh"] == []  # every weight came from the pretrained model, the new domain's too
    before = record["before"]  # the new domain starts as the null action: the pretrained model as it was
    assert before["token_ce_true_actions"] == pytest.approx(before["token_ce_null_action"])
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["metrics"]["predicted_tokens"] > 0  # the quality gates scored the domain's held-out clips


def test_a_known_domain_continues_its_encoder(tmp_path):
    write_token_dataset(tmp_path / "atari", shards=2, clips_per_shard=4, t=6, grid=4, vocab=16)  # 6 actions
    pre = pretrained(tmp_path / "pre")
    assert finetune(tmp_path, tmp_path / "atari", "finetune.domain=atari") == 0
    model = DynamicsModel.from_pretrained(tmp_path / "run" / "export")
    assert model.config.domains == pre.config.domains  # no domain added, statistics kept
    key = "actions.encoders.atari.embed.weight"
    assert not torch.equal(model.state_dict()[key], pre.state_dict()[key])  # continued, not restarted
    before = json.loads((tmp_path / "run" / "finetune_eval.json").read_text())["before"]
    assert before["token_ce_true_actions"] != pytest.approx(before["token_ce_null_action"])


def test_a_single_domain_model_becomes_one_of_two(tmp_path):
    write_continuous_token_dataset(tmp_path / "robot", shards=2)
    pre = pretrained(tmp_path / "pre", domains=[], action_type="discrete", num_actions=6)
    assert finetune(tmp_path, tmp_path / "robot", "finetune.domain=robot") == 0
    weights = load_file(tmp_path / "run" / "export" / "model.safetensors")
    model = DynamicsModel.from_pretrained(tmp_path / "run" / "export")
    assert [d.name for d in model.config.domains] == ["default", "robot"]
    assert torch.equal(weights["actions.encoders.default.embed.weight"], pre.state_dict()["actions.embed.weight"])


def test_domain_fine_tunes_fail_clearly(tmp_path, capsys):
    write_continuous_token_dataset(tmp_path / "robot", shards=2)
    pretrained(tmp_path / "pre")
    assert finetune(tmp_path, tmp_path / "robot") == 2
    assert "has 2 action domains ['atari', 'video']: name the one" in capsys.readouterr().err
    assert finetune(tmp_path, tmp_path / "robot", "finetune.domain=atari") == 2
    assert "are not those of action domain 'atari'" in capsys.readouterr().err
    assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "robot"), "--out",
                 str(tmp_path / "scratch"), "--max-steps", "1", "finetune.domain=robot"]) == 2
    assert "adapt a pretrained model: name it with --init-from" in capsys.readouterr().err
