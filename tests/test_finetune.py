"""Fine-tuning a pretrained dynamics model on new token shards: weight transfer, the new action encoder, freezing,
clear errors for another tokenizer's tokens, and the held-out score before and after."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_token_dataset
from safetensors.torch import load_file

from wm_video.cli import main
from wm_video.config import load_config
from wm_video.data.reader import load_dataset_info
from wm_video.models.dynamics import DynamicsModel
from wm_video.training.finetune import finetune_model_config, freeze, transfer_weights

MOVES = [(0, 0), (0, 1), (1, 0), (0, -1), (-1, 0)]


def walker_frames(rng: np.random.Generator, t: int, grid: int, vocab: int, moves: np.ndarray) -> np.ndarray:
    """``(t, grid, grid)`` uint8: one object token on a background of 0, moved by ``moves[k] = (dy, dx)`` after
    frame ``k`` (clamped at the walls), as in conftest's ``write_token_dataset``."""
    frames = np.zeros((t, grid, grid), dtype=np.uint8)
    y, x, obj = *rng.integers(0, grid, size=2), int(rng.integers(1, vocab))
    for k in range(t):
        frames[k, y, x] = obj
        y, x = min(max(y + moves[k][0], 0), grid - 1), min(max(x + moves[k][1], 0), grid - 1)
    return frames


def write_continuous_token_dataset(root: Path, shards: int = 3, clips_per_shard: int = 4, t: int = 6, grid: int = 4,
                                   vocab: int = 16, seed: int = 0) -> None:
    """Token shards with 2-D continuous actions (a velocity with an offset and scale, so the statistics matter):
    the object moves by ``round((a - offset) / scale)`` clamped to [-1, 1] per axis."""
    from wm_video.data.schema import ActionSpace, Clip, ClipMeta
    from wm_video.data.writer import ShardWriter, finalize_dataset

    space = ActionSpace("continuous", dim=2, low=[-2.0, 3.0], high=[4.0, 7.0])
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, space, "tokens") as w:
            for i in range(clips_per_shard):
                moves = np.asarray([MOVES[m] for m in rng.integers(0, len(MOVES), size=t)])
                actions = (np.asarray([1.0, 5.0]) + 2.0 * moves + rng.uniform(-0.4, 0.4, (t, 2))).astype(np.float32)
                meta = ClipMeta(episode_id=f"ep{s:03d}{i:03d}", clip_start=0, num_frames=t, fps=15.0, source="test",
                                fields=[])
                w.write(Clip(walker_frames(rng, t, grid, vocab, moves), meta, actions, np.zeros(t, np.float32),
                             np.zeros(t, bool)))
            w.close()
        paths.append(path)
    tokens = {"vocab_size": vocab, "dtype": "uint8", "tokenizer": "synthetic", "frame_resolution": [grid * 8] * 2,
              "tokens_per_frame": grid * grid}
    finalize_dataset(root, paths, resolution=[grid, grid], fps=15.0, clip_len=t, storage="tokens",
                     action_space=space, source={"kind": "test"}, tokens=tokens)


def train_cfg():
    return load_config("train_dynamics", preset_name="debug")


def pretrained_model(path: Path, vocab: int = 16, grid: int = 4, steps: int = 0, perturb: bool = True,
                     **fields) -> DynamicsModel:
    """A debug-sized dynamics export at ``path``, action-free unless ``fields`` say otherwise: trained ``steps``
    Adam steps on action-free walker clips, and/or with every weight moved off its initialisation (``perturb``:
    the zero-initialised modulations would otherwise hide whether actions reach the blocks)."""
    fields = {"action_type": "none", **fields}
    torch.manual_seed(0)
    model = DynamicsModel(dataclasses.replace(train_cfg().model, vocab_size=vocab, token_h=grid, token_w=grid,
                                              **fields))
    if perturb:
        with torch.no_grad():
            for p in model.parameters():
                p.add_(0.05 * torch.randn_like(p))
    if steps:
        rng = np.random.default_rng(123)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        for _ in range(steps):
            clips = [walker_frames(rng, 4, grid, vocab, [MOVES[m] for m in rng.integers(0, 5, 4)]) for _ in range(8)]
            loss, _ = model.compute_loss({"tokens": torch.from_numpy(np.stack(clips)).long()})
            opt.zero_grad()
            loss.backward()
            opt.step()
    model.save_pretrained(path)
    return model.eval()


def test_weights_carry_over_and_a_new_continuous_action_encoder_starts_as_the_null_action(tmp_path):
    write_continuous_token_dataset(tmp_path / "robot")
    pre = pretrained_model(tmp_path / "pre")
    info = load_dataset_info(tmp_path / "robot")
    cfg = train_cfg()
    cfg = dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, width=64, dropout=0.25))
    config = finetune_model_config(cfg, pre.config, info, "robot")
    # architecture from the pretrained export, training-time fields from the run, action space from the data
    assert (config.width, config.depth, config.cond_dim) == (pre.config.width, pre.config.depth, pre.config.cond_dim)
    assert config.dropout == 0.25
    assert (config.action_type, config.action_dim) == ("continuous", 2)
    assert config.action_mean == pytest.approx(info.stats["actions"]["mean"])
    assert config.action_std == pytest.approx(info.stats["actions"]["std"])
    assert config.action_mean[1] == pytest.approx(5.0, abs=0.5)  # the offset, taken out inside the model

    model = DynamicsModel(config)
    report = transfer_weights(pre, model)
    new, old = model.state_dict(), pre.state_dict()
    for name, value in old.items():
        assert torch.equal(new[name], value), name
    assert "actions.null" in report.kept
    assert sorted(report.fresh) == ["actions.mlp.0.bias", "actions.mlp.0.weight", "actions.mlp.2.bias",
                                    "actions.mlp.2.weight"]
    assert model.actions.mlp[0].weight.shape == (config.cond_dim, 2)
    assert model.actions.mlp[2].weight.shape == (config.cond_dim, config.cond_dim)
    assert report.dropped == []

    # every real action starts as the pretrained null action: the fine-tuned model starts as the pretrained one
    model.eval()
    tokens = torch.randint(0, 16, (2, 4, 4, 4))
    actions = torch.randn(2, 4, 2) * 3 + torch.tensor([1.0, 5.0])
    with torch.no_grad():
        got = model(tokens, actions, mask_ratio=1.0)
        want = pre(tokens, None, mask_ratio=1.0)
    torch.testing.assert_close(got.logits, want.logits)
    torch.testing.assert_close(got.reward_logits, want.reward_logits)


def test_action_encoder_kept_only_for_the_same_action_space(tmp_path):
    write_token_dataset(tmp_path / "tok", shards=2, clips_per_shard=2)  # discrete, 6 actions
    info = load_dataset_info(tmp_path / "tok")
    for num_actions, fresh_actions, kept in ((6, False, True), (6, True, False), (4, False, False)):
        pre = pretrained_model(tmp_path / f"pre{num_actions}", action_type="discrete", num_actions=num_actions)
        model = DynamicsModel(finetune_model_config(train_cfg(), pre.config, info, "tok"))
        report = transfer_weights(pre, model, fresh_actions=fresh_actions)
        assert ("actions.embed.weight" in report.kept) is kept
        assert torch.equal(model.actions.null, pre.actions.null)
        if kept:
            assert torch.equal(model.actions.embed.weight, pre.actions.embed.weight)
        else:
            assert model.actions.embed.weight.shape == (6, pre.config.cond_dim)
            assert not model.actions.embed.weight.any()  # fresh: zero, i.e. the null action


def test_mismatched_vocab_or_grid_is_a_clear_error(tmp_path, capsys):
    write_token_dataset(tmp_path / "tok", shards=2, clips_per_shard=2, grid=4, vocab=16)
    pretrained_model(tmp_path / "pre32", vocab=32)
    assert main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre32"),
                 "--data", str(tmp_path / "tok"), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"vocab_size: 32 in {tmp_path / 'pre32'}, 16 in {tmp_path / 'tok'}" in err
    assert "tokenizer the pretrained model was trained on" in err
    assert not (tmp_path / "run" / "export").exists()

    pre = pretrained_model(tmp_path / "pre_grid", grid=2)
    with pytest.raises(ValueError, match=r"token_h: 2 in .*, 4 in tok; token_w: 2 in .*, 4 in tok"):
        finetune_model_config(train_cfg(), pre.config, load_dataset_info(tmp_path / "tok"), "tok")


def test_freeze_by_prefix_and_wildcard(tmp_path):
    model = pretrained_model(tmp_path / "pre", perturb=False)
    frozen = freeze(model, ["token_embed", "backbone.blocks.*.spatial"])
    assert frozen[0] == "token_embed.weight"
    assert {n for n in frozen if n.startswith("backbone")} == {
        f"backbone.blocks.{i}.spatial.{p}.{w}" for i in range(2) for p in ("qkv", "proj") for w in ("weight", "bias")}
    assert all(p.requires_grad == (n not in frozen) for n, p in model.named_parameters())
    with pytest.raises(ValueError, match=r"'backbone.block' matches no parameter name; modules: .*backbone.blocks"):
        freeze(model, ["backbone.block"])  # a prefix ends at a name boundary


def test_finetune_end_to_end(tmp_path):
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=8, t=6, grid=4, vocab=16)
    pre = pretrained_model(tmp_path / "pre", steps=40, perturb=False)  # pretrained on action-free walker video
    run = tmp_path / "run"
    assert main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre"),
                 "--data", str(tmp_path / "tok"), "--out", str(run), "--max-steps", "100", "val_fraction=0.34",
                 "loader.batch_size=8", "optim.lr=0.003", "trainer.logger=none", "trainer.val_check_interval=1000",
                 "finetune.freeze=[token_embed, backbone.blocks.*.spatial]"]) == 0

    model = DynamicsModel.from_pretrained(run / "export")
    assert (model.config.action_type, model.config.num_actions) == ("discrete", 6)
    assert model.config.width == pre.config.width and model.config.vocab_size == 16
    # frozen parts are the pretrained tensors; trained parts moved; the new action embedding learned something
    weights, old = load_file(run / "export" / "model.safetensors"), pre.state_dict()
    for name in ("token_embed.weight", "backbone.blocks.0.spatial.qkv.weight", "backbone.blocks.1.spatial.proj.bias"):
        assert torch.equal(weights[name], old[name]), name
    for name in ("backbone.blocks.0.temporal.qkv.weight", "backbone.blocks.1.mlp.0.weight", "token_head.weight",
                 "actions.null"):
        assert not torch.equal(weights[name], old[name]), name
    assert weights["actions.embed.weight"].abs().sum() > 0

    result = json.loads((run / "finetune_eval.json").read_text())
    before, after = result["before"], result["after"]
    assert result["steps"] == 100 and result["init_from"] == str(tmp_path / "pre")
    assert result["transfer"]["fresh"] == ["actions.embed.weight"] and result["frozen_tensors"] == 9
    assert before["clips"] == after["clips"] == 8
    # before fine-tuning every new action is the null action (the pretrained model as it was); afterwards the
    # held-out loss on the new data is lower
    assert before["token_ce_true_actions"] == pytest.approx(before["token_ce_null_action"])
    assert after["token_ce_true_actions"] < before["token_ce_true_actions"]
    assert 0 < after["next_frame_token_acc"] <= 1


def test_finetune_on_continuous_actions_through_the_cli(tmp_path):
    write_continuous_token_dataset(tmp_path / "robot", shards=2)
    pretrained_model(tmp_path / "pre")
    run = tmp_path / "run"
    assert main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre"),
                 "--data", str(tmp_path / "robot"), "--out", str(run), "--max-steps", "3", "val_fraction=0.5",
                 "trainer.logger=none", "finetune.eval_batches=1", "finetune.eval_batch_size=2"]) == 0
    config = DynamicsModel.from_pretrained(run / "export").config
    stats = load_dataset_info(tmp_path / "robot").stats["actions"]
    assert (config.action_type, config.action_dim) == ("continuous", 2)
    assert config.action_mean == pytest.approx(stats["mean"]) and config.action_std == pytest.approx(stats["std"])
    result = json.loads((run / "finetune_eval.json").read_text())
    assert result["before"]["clips"] == result["after"]["clips"] == 2  # one batch of two held-out clips
    assert sorted(result["transfer"]["fresh"]) == ["actions.mlp.0.bias", "actions.mlp.0.weight", "actions.mlp.2.bias",
                                                   "actions.mlp.2.weight"]
