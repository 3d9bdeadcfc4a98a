"""Fine-tuning a pretrained dynamics export on a mixture (``--init-from`` with a config's ``mixture:``): each source's
domain continues the pretrained encoder of that name or is added; every other domain stays bitwise as it was; the
held-out evaluation before and after is per domain; an action space that does not match is refused naming both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_token_dataset
from safetensors.torch import load_file
from test_finetune import write_continuous_token_dataset
from test_finetune_domains import DOMAINS, pretrained

from wm_video.cli import main
from wm_video.models.dynamics import ActionDomain, DynamicsModel

CART = ActionDomain("cart", "discrete", num_actions=3)  # a domain no source names: must stay as it was


def mixture_yaml(path: Path, sources: list[tuple[Path, str]], *extra: str) -> Path:
    lines = ["kind: train_dynamics", "mixture:", *[f"  - {{path: {p}, weight: 1, domain: {d}}}" for p, d in sources],
             *extra]
    path.write_text("\n".join(lines) + "\n")
    return path


def finetune_mixture(tmp_path: Path, cfg: Path, *extra: str, steps: int = 3, out: str = "run") -> int:
    return main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre"), "--config", str(cfg),
                 "--out", str(tmp_path / out), "--max-steps", str(steps), "val_fraction=0.5", "trainer.logger=none",
                 "trainer.val_check_interval=3", "finetune.eval_batches=1", "finetune.eval_batch_size=2", *extra])


@pytest.fixture()
def two_sources(tmp_path: Path) -> Path:
    write_token_dataset(tmp_path / "atari", shards=2, clips_per_shard=4, t=6, grid=4, vocab=16)  # 6 actions
    write_continuous_token_dataset(tmp_path / "robot", shards=2)
    return mixture_yaml(tmp_path / "mix.yaml", [(tmp_path / "atari", "atari"), (tmp_path / "robot", "robot")])


def test_a_mixture_continues_one_domain_adds_another_and_leaves_the_rest(tmp_path, two_sources):
    pre = pretrained(tmp_path / "pre", domains=[*DOMAINS, CART])
    assert finetune_mixture(tmp_path, two_sources, steps=5) == 0  # batches 0-2 of the draw are atari's, 3 robot's
    export = tmp_path / "run" / "export"
    model = DynamicsModel.from_pretrained(export)
    assert [d.name for d in model.config.domains] == ["atari", "video", "cart", "robot"]
    assert model.config.domain("robot").action_type == "continuous"
    weights, old = load_file(export / "model.safetensors"), pre.state_dict()
    for key in ("actions.encoders.atari.embed.weight", "backbone.blocks.0.temporal.qkv.weight"):
        assert not torch.equal(weights[key], old[key]), key  # trained
    assert weights["actions.encoders.robot.mlp.2.weight"].abs().sum() > 0  # the new encoder learned
    untouched = [k for k in old if k.startswith(("actions.encoders.cart.", "actions.encoders.video."))]
    assert untouched and all(torch.equal(weights[k], old[k]) for k in untouched)
    record = json.loads((tmp_path / "run" / "finetune_eval.json").read_text())
    assert record["new_domains"] == ["robot"] and set(record["domains"]) == {"atari", "robot"}
    assert record["transfer"]["fresh"] == []
    robot, atari = record["domains"]["robot"], record["domains"]["atari"]
    assert robot["data"] == str(tmp_path / "robot") and robot["action_type"] == "continuous"
    # the new domain starts as the null action; the continued one starts with its pretrained encoder
    assert robot["before"]["token_ce_true_actions"] == pytest.approx(robot["before"]["token_ce_null_action"])
    assert atari["before"]["token_ce_true_actions"] != pytest.approx(atari["before"]["token_ce_null_action"])
    assert all(part["after"]["clips"] > 0 and part["split"] for part in (robot, atari))
    assert record["steps"] == 5


def test_a_single_domain_model_is_its_default_domain_and_freeze_works(tmp_path, two_sources):
    pre = pretrained(tmp_path / "pre", domains=[], action_type="discrete", num_actions=6)
    cfg = mixture_yaml(tmp_path / "mix2.yaml", [(tmp_path / "atari", "default"), (tmp_path / "robot", "robot")])
    assert finetune_mixture(tmp_path, cfg, "finetune.freeze=[token_embed]") == 0
    weights = load_file(tmp_path / "run" / "export" / "model.safetensors")
    assert [d.name for d in DynamicsModel.from_pretrained(tmp_path / "run" / "export").config.domains] == [
        "default", "robot"]
    old = pre.state_dict()
    assert not torch.equal(weights["actions.encoders.default.embed.weight"], old["actions.embed.weight"])  # continued
    assert torch.equal(weights["token_embed.weight"], old["token_embed.weight"])  # frozen


def test_mismatched_action_space_is_refused_naming_both(tmp_path, two_sources, capsys):
    pretrained(tmp_path / "pre")
    cfg = mixture_yaml(tmp_path / "bad.yaml", [(tmp_path / "robot", "atari")])
    assert finetune_mixture(tmp_path, cfg) == 2
    err = capsys.readouterr().err
    assert str(tmp_path / "robot") in err and "action domain 'atari'" in err
    assert "(continuous, 2)" in err and "(discrete, 6)" in err
    assert finetune_mixture(tmp_path, two_sources, "finetune.domain=atari") == 2
    assert "a mixture's sources name theirs" in capsys.readouterr().err


def test_a_lora_mixture_fine_tune_resumes(tmp_path, two_sources):
    pre = pretrained(tmp_path / "pre", domains=[*DOMAINS, CART])
    assert finetune_mixture(tmp_path, two_sources, "finetune.lora.rank=2", steps=2) == 0
    assert finetune_mixture(tmp_path, two_sources, "finetune.lora.rank=2", steps=4) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4
    record = json.loads((tmp_path / "run" / "finetune_eval.json").read_text())
    assert record["steps"] == 4 and record["lora"]["rank"] == 2
    weights, old = load_file(tmp_path / "run" / "export" / "model.safetensors"), pre.state_dict()  # merged: plain
    assert not any("lora" in k for k in weights)
    assert torch.equal(weights["actions.encoders.cart.embed.weight"], old["actions.encoders.cart.embed.weight"])
    qkv = "backbone.blocks.0.temporal.qkv.weight"
    assert not torch.equal(weights[qkv], old[qkv])  # the adapters, merged in
