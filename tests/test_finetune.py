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


# ---- LoRA adapters (peft) ---------------------------------------------------------------------------------------

def lora_model(tmp_path: Path, **options) -> tuple[DynamicsModel, DynamicsModel, list[str]]:
    """A pretrained (perturbed) action-free export, and a copy fine-tuned for 2-D continuous actions with LoRA
    adapters applied; returns (pretrained, fine-tuned, adapted layer names)."""
    from wm_video.training.lora import LoraOptions, apply_lora

    write_continuous_token_dataset(tmp_path / "robot", shards=2, clips_per_shard=2)
    pre = pretrained_model(tmp_path / "pre")
    model = DynamicsModel(finetune_model_config(train_cfg(), pre.config, load_dataset_info(tmp_path / "robot"),
                                                "robot"))
    transfer_weights(pre, model)
    return pre, model, apply_lora(model, LoraOptions(**options))


def continuous_batch(seed: int = 0, b: int = 4) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {"tokens": torch.randint(0, 16, (b, 4, 4, 4), generator=g),
            "actions": torch.randn(b, 4, 2, generator=g) * 2 + torch.tensor([1.0, 5.0])}


def test_lora_trains_only_the_adapters_and_the_listed_extras(tmp_path):
    pre, model, adapted = lora_model(tmp_path, rank=4)
    c = model.config
    blocks = [f"backbone.blocks.{i}.{m}" for i in range(c.depth)
              for m in ("spatial.qkv", "spatial.proj", "temporal.qkv", "temporal.proj", "mlp.0", "mlp.2", "modulation")]
    assert adapted == [*blocks, "backbone.out_modulation"]  # the default targets; never the action encoder's MLP
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    extras = {n for n in trainable if ".lora_" not in n}
    assert extras == {"actions.null", "actions.mlp.0.weight", "actions.mlp.0.bias", "actions.mlp.2.weight",
                      "actions.mlp.2.bias"}
    assert {n.rsplit(".lora_", 1)[0] for n in trainable - extras} == set(adapted)
    # r * (in + out) per adapted layer, plus the whole action encoder
    layers = dict(pre.named_modules())
    want = sum(4 * (layers[n].in_features + layers[n].out_features) for n in adapted)
    want += sum(p.numel() for p in model.actions.parameters())
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == want
    # B starts at zero: with adapters and a fresh action encoder the model is still the pretrained one
    batch = continuous_batch()
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(batch["tokens"], batch["actions"], mask_ratio=1.0).logits,
                                   pre(batch["tokens"], None, mask_ratio=1.0).logits)

    _, heads, _ = lora_model(tmp_path / "heads", rank=2, targets=["backbone.blocks.*.temporal"],
                             train=["actions", "token_head", "outcome"])
    names = {n for n, p in heads.named_parameters() if p.requires_grad and ".lora_" not in n}
    assert {"token_head.weight", "token_head.bias", "outcome.reward.weight"} <= names
    assert not any(".spatial." in n for n, p in heads.named_parameters() if p.requires_grad)


def test_lora_steps_change_the_merged_model_and_its_export_loads_without_peft(tmp_path, monkeypatch):
    import sys

    from peft.tuners.tuners_utils import BaseTunerLayer

    from wm_video.training.lora import merge_lora

    pre, model, adapted = lora_model(tmp_path, rank=4, alpha=8)
    batch, probe = continuous_batch(0, b=8), continuous_batch(1)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-2)
    model.train()
    for _ in range(5):
        loss, _ = model.compute_loss(batch, mask_ratio=1.0)
        opt.zero_grad()
        loss.backward()
        opt.step()
    for name, p in model.named_parameters():  # only trainable tensors moved
        assert torch.equal(p, before[name]) != p.requires_grad or ".lora_A." in name, name
    model.eval()
    with torch.no_grad():
        adapter_logits = model(probe["tokens"], probe["actions"], mask_ratio=1.0).logits

    assert merge_lora(model) == len(adapted)
    assert not any(isinstance(m, BaseTunerLayer) for m in model.modules())
    plain = DynamicsModel(model.config)
    assert set(model.state_dict()) == set(plain.state_dict())
    with torch.no_grad():
        merged_logits = model(probe["tokens"], probe["actions"], mask_ratio=1.0).logits
        start_logits = pre(probe["tokens"], None, mask_ratio=1.0).logits
    torch.testing.assert_close(merged_logits, adapter_logits, rtol=1e-4, atol=1e-5)
    assert (merged_logits - start_logits).abs().max() > 1e-3  # the steps changed what the model predicts
    merged = model.state_dict()
    assert not torch.equal(merged["backbone.blocks.0.temporal.qkv.weight"],
                           pre.state_dict()["backbone.blocks.0.temporal.qkv.weight"])
    for name in ("token_embed.weight", "token_head.weight", "backbone.blocks.1.mlp.0.bias"):  # not adapted
        assert torch.equal(merged[name], pre.state_dict()[name]), name

    model.save_pretrained(tmp_path / "export")
    assert not any("lora" in k or "base_layer" in k for k in load_file(tmp_path / "export" / "model.safetensors"))
    monkeypatch.setitem(sys.modules, "peft", None)  # any import of peft while loading would fail
    loaded = DynamicsModel.from_pretrained(tmp_path / "export").eval()
    with torch.no_grad():
        torch.testing.assert_close(loaded(probe["tokens"], probe["actions"], mask_ratio=1.0).logits, merged_logits,
                                   rtol=0, atol=0)


def test_lora_finetune_through_the_cli_exports_a_plain_model(tmp_path):
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=8, t=6, grid=4, vocab=16)
    pre = pretrained_model(tmp_path / "pre", steps=40, perturb=False)
    run = tmp_path / "run"
    assert main(["train", "dynamics", "--preset", "debug", "--init-from", str(tmp_path / "pre"),
                 "--data", str(tmp_path / "tok"), "--out", str(run), "--max-steps", "60", "val_fraction=0.34",
                 "loader.batch_size=8", "optim.lr=0.01", "trainer.logger=none", "trainer.val_check_interval=1000",
                 "finetune.lora.rank=4", "finetune.lora.train=[actions, token_head]"]) == 0

    weights, old = load_file(run / "export" / "model.safetensors"), pre.state_dict()
    assert set(weights) == set(DynamicsModel(DynamicsModel.from_pretrained(run / "export").config).state_dict())
    assert torch.equal(weights["token_embed.weight"], old["token_embed.weight"])  # neither adapted nor trained
    for name in ("backbone.blocks.0.spatial.qkv.weight", "backbone.blocks.1.modulation.weight", "token_head.weight"):
        assert not torch.equal(weights[name], old[name]), name
    for name in ("backbone.blocks.0.spatial.qkv.bias", "outcome.reward.weight"):  # LoRA adds no bias; heads frozen
        assert torch.equal(weights[name], old[name]), name

    result = json.loads((run / "finetune_eval.json").read_text())
    assert result["lora"]["rank"] == 4 and result["lora"]["alpha"] == 8.0 and result["lora"]["adapted_layers"] == 15
    assert result["trainable_parameters"] < result["parameters"] / 2
    before, after = result["before"], result["after"]
    assert after["token_ce_true_actions"] < before["token_ce_true_actions"]
    assert before["token_ce_shuffled_actions"] == pytest.approx(before["token_ce_true_actions"])  # actions unused yet

    # the checkpoint holds the adapter form; `wm-video export` folds it in the same way
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)
    assert any(".lora_A.default." in k for k in ckpt["state_dict"])
    assert main(["export", "--checkpoint", str(run / "checkpoints" / "last.ckpt"), "--out", str(tmp_path / "re")]) == 0
    again = load_file(tmp_path / "re" / "model.safetensors")
    assert set(again) == set(weights)
    for name, value in weights.items():
        torch.testing.assert_close(again[name], value, rtol=1e-6, atol=1e-7, msg=name)


def test_lora_bad_options_are_clear_errors(tmp_path, capsys):
    from wm_video.training.lora import LoraOptions, apply_lora

    model = pretrained_model(tmp_path / "pre", perturb=False)
    with pytest.raises(ValueError, match=r"'backbone.blocks.\*.attn' matches no Linear layer; the model's Linear "
                                         r"layers \(block indices as \*\): \['backbone.blocks.\*.spatial.qkv'"):
        apply_lora(model, LoraOptions(targets=["backbone.blocks.*.temporal", "backbone.blocks.*.attn"]))
    with pytest.raises(ValueError, match=r"finetune.lora.train: 'head' matches no parameter name"):
        apply_lora(model, LoraOptions(train=["head"]))

    write_token_dataset(tmp_path / "tok", shards=2, clips_per_shard=2)
    common = ["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out",
              str(tmp_path / "run"), "--max-steps", "1"]
    pretrained = ["--init-from", str(tmp_path / "pre"), "trainer.logger=none"]
    assert main([*common, *pretrained, "finetune.lora.targets=[token_embed]"]) == 2
    err = capsys.readouterr().err
    assert "'token_embed' matches no Linear layer" in err and "backbone.out_modulation" in err
    assert main([*common, "trainer.logger=none", "finetune.lora.rank=4"]) == 2  # nothing pretrained to adapt
    assert "finetune.lora and finetune.domain adapt a pretrained model" in capsys.readouterr().err
    assert main([*common, *pretrained, "finetune.lora.rank=0"]) == 2
    assert "'rank' must be >= 1" in capsys.readouterr().err
    assert not (tmp_path / "run" / "export").exists()
