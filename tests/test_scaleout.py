"""Scale-out set-up in one CPU process: strategy and launch checks, switches applied from training/, fused AdamW,
atomic and complete checkpoints, config-mismatch errors, and a preemption -> resume that ends exactly where the
uninterrupted run ends."""

from __future__ import annotations

import copy
import json
import logging
import os
import signal

import lightning as L
import pytest
import torch
from conftest import write_dataset

from wm_video.config import load_config, preset
from wm_video.training import build_trainer
from wm_video.training.checkpointing import (
    EXIT_PREEMPTED,
    CheckpointError,
    atomic_torch_save,
    check_resume_compatible,
    find_resume_checkpoint,
)
from wm_video.training.consolidate import export_part
from wm_video.training.optim import OptimConfig, build_optimizer
from wm_video.training.parallelize import apply_activation_checkpointing, apply_compile, repeated_blocks
from wm_video.training.strategy import LaunchError, check_launch


def trainer_cfg(tmp_path, *overrides):
    return load_config("trainer", preset_name="debug", overrides=[f"run_dir={tmp_path / 'run'}", "logger=none",
                                                                  *overrides])


@pytest.mark.parametrize("name", ["deepspeed_stage_2", "deepspeed_stage_3_offload"])
def test_deepspeed_on_cpu_is_refused_with_what_to_use_instead(tmp_path, name):
    cfg = trainer_cfg(tmp_path, f"strategy={name}")  # a config stays loadable anywhere
    with pytest.raises(LaunchError, match=rf"trainer.strategy={name}.*CUDA.*trainer.strategy=ddp"):
        build_trainer(cfg)
    with pytest.raises(ValueError, match="field 'strategy' must be one of"):
        trainer_cfg(tmp_path, "strategy=zero9")


def test_launcher_and_trainer_mismatch_is_an_error_not_a_hang(tmp_path, monkeypatch):
    for k in ("TORCHELASTIC_RUN_ID", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(k, raising=False)
    monkeypatch.setenv("SLURM_NTASKS", "4")
    monkeypatch.setenv("SLURM_NTASKS_PER_NODE", "2")
    monkeypatch.setenv("SLURM_JOB_NUM_NODES", "2")
    monkeypatch.setenv("SLURM_JOB_NAME", "wm-pretrain")
    with pytest.raises(LaunchError, match=r"--ntasks-per-node=2 but trainer.devices=4.*--nodes=2 but trainer"
                                          r".num_nodes=1"):
        check_launch(trainer_cfg(tmp_path, "devices=4", "strategy=ddp"))
    check_launch(trainer_cfg(tmp_path, "devices=2", "num_nodes=2", "strategy=ddp"))  # matching: fine
    check_launch(trainer_cfg(tmp_path, "devices=auto", "num_nodes=2", "strategy=ddp"))  # auto: one per task
    for k in ("SLURM_NTASKS", "SLURM_NTASKS_PER_NODE", "SLURM_JOB_NUM_NODES"):
        monkeypatch.delenv(k)
    monkeypatch.setenv("TORCHELASTIC_RUN_ID", "x")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "1")
    monkeypatch.setenv("WORLD_SIZE", "2")
    for k, v in (("RANK", "0"), ("LOCAL_RANK", "0"), ("GROUP_RANK", "0"), ("MASTER_ADDR", "127.0.0.1"),
                 ("MASTER_PORT", "29999")):
        monkeypatch.setenv(k, v)
    with pytest.raises(LaunchError, match=r"torchrun --nnodes=2 but trainer.num_nodes=1"):
        check_launch(trainer_cfg(tmp_path, "devices=1", "strategy=ddp"))


def _grads(model, loss_fn):
    torch.manual_seed(1)  # the quantizer draws random numbers in training forwards
    model.zero_grad()
    loss_fn(model).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def test_activation_checkpointing_from_outside_keeps_the_gradients():
    from wm_video.models.decoder import DiffusionDecoder
    from wm_video.models.dynamics import DynamicsModel
    from wm_video.models.tokenizer import VQTokenizer

    torch.manual_seed(0)
    tok = VQTokenizer(preset("tokenizer", "debug")).train()
    frames = torch.rand(2, 2, 3, 32, 32) * 2 - 1

    def tok_loss(m):
        return m(frames).recon.square().mean()

    plain = copy.deepcopy(tok)  # the quantizer updates state in training forwards: compare twins, once each
    before = _grads(plain, tok_loss)
    switched = apply_activation_checkpointing(tok)
    assert any(s.startswith("encoder") for s in switched) and any(s.startswith("decoder") for s in switched)
    after = _grads(tok, tok_loss)
    assert before.keys() == after.keys() and all(torch.allclose(before[k], after[k], atol=1e-6) for k in before)

    dyn = DynamicsModel(preset("dynamics", "debug"))
    assert apply_activation_checkpointing(dyn) == ["DynamicsModel"] and dyn.backbone.gradient_checkpointing

    dec = DiffusionDecoder.from_tokenizer(tok, preset("decoder", "debug"))
    assert any(".unet." in s for s in apply_activation_checkpointing(dec))  # diffusers' UNet blocks
    with pytest.raises(ValueError, match=r"trainer.activation_checkpointing: Linear has no"):
        apply_activation_checkpointing(torch.nn.Linear(2, 2))


def test_compile_switch_compiles_each_block_in_place_and_keeps_names():
    from wm_video.models.dynamics import DynamicsModel

    model = DynamicsModel(preset("dynamics", "debug"))
    names = list(model.state_dict())
    blocks = repeated_blocks(model)
    assert len(blocks) >= preset("dynamics", "debug").depth
    assert apply_compile(model) == len(blocks)
    assert all(b._compiled_call_impl is not None for b in blocks)
    assert list(model.state_dict()) == names  # checkpoints and exports unchanged


def test_fused_adamw_only_on_cuda():
    model = torch.nn.Linear(4, 4)
    opt, _ = build_optimizer(model, OptimConfig(), 10)
    assert not opt.defaults.get("fused")  # CPU parameters: the foreach kernel
    with pytest.raises(ValueError, match="optim: field 'fused'"):
        build_optimizer(model, OptimConfig(fused=True), 10)


def test_atomic_save_keeps_the_old_file_when_a_write_fails(tmp_path):
    path = tmp_path / "last.ckpt"
    atomic_torch_save({"global_step": 1}, path)
    with pytest.raises(Exception):  # noqa: B017 - whatever torch.save raises for an unpicklable value
        atomic_torch_save({"global_step": 2, "bad": lambda: 0}, path)
    assert torch.load(path, weights_only=True) == {"global_step": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.ckpt"]  # no temporary left behind


class SignalAt(L.Callback):
    """Sends the preemption signal to this process after optimizer step ``step``; records the steps trained."""

    def __init__(self, step: int | None) -> None:
        self.step, self.trained = step, []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        self.trained.append(trainer.global_step)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def _train(tmp_path, run, signal_at=None, overrides=()):
    from wm_video.training.run import fit_and_export
    from wm_video.training.tokenizer_module import TokenizerModule

    cfg = load_config("train_tokenizer", preset_name="debug", overrides=[
        "trainer.max_steps=12", "trainer.logger=none", "trainer.checkpoint_every_n_steps=4", "trainer.progress=log",
        "loader.shuffle_buffer=4", *overrides])
    cb = SignalAt(signal_at)
    # as train_tokenizer does: the weights' init follows trainer.seed
    torch.manual_seed(cfg.trainer.seed)
    fit_and_export(TokenizerModule(cfg), cfg.trainer, tmp_path / "ds", cfg.loader, cfg.val_fraction,
                   cfg.val_batches, tmp_path / run, "tokenizer", callbacks=[cb])
    return cb


def test_preempted_run_resumes_exactly_and_refuses_another_config(tmp_path, caplog):
    from wm_video.models.tokenizer import VQTokenizer

    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=6, size=32)  # 12 train clips: 6 batches an epoch
    _train(tmp_path, "a")  # uninterrupted
    with pytest.raises(SystemExit) as stop:
        _train(tmp_path, "b", signal_at=5)
    assert stop.value.code == EXIT_PREEMPTED
    assert not (tmp_path / "b" / "export").exists()  # no export from an unfinished run
    summary = json.loads((tmp_path / "b" / "train_summary.json").read_text())  # but a summary that says why
    assert (summary["steps_done"], summary["max_steps"], summary["stop_reason"]) == (6, 12, "preemption")
    path, meta = find_resume_checkpoint(tmp_path / "b")
    assert path.name == "last.ckpt" and meta["global_step"] == 6  # the step boundary after the signal

    with pytest.raises(CheckpointError, match=r"model.codebook_size: checkpoint 32, now 64"):
        _train(tmp_path, "b", overrides=["model.codebook_size=64"])
    with pytest.raises(CheckpointError, match=r"trainer.devices x trainer.num_nodes"):
        check_resume_compatible(path, {**meta, "rank_states": ["[]", "[]"]}, None, world_size=1)

    resumed = _train(tmp_path, "b")
    assert resumed.trained[0] == 6 and resumed.trained == list(range(6, 12))  # no step redone, none skipped
    a = VQTokenizer.from_pretrained(tmp_path / "a" / "export").state_dict()
    b = VQTokenizer.from_pretrained(tmp_path / "b" / "export").state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), "resumed weights differ from the uninterrupted run"
    last_a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    last_b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert last_a["rank_states"] == last_b["rank_states"]  # same samples seen, same stream position
    stream = json.loads(last_b["rank_states"][0])[0]
    assert (stream["rank"], stream["world"], stream["epoch"]) == (0, 1, 2)  # 12 batches: two epochs of 6

    # a torn last.ckpt is skipped for the newest complete one, with a warning naming it
    (tmp_path / "b" / "checkpoints" / "last.ckpt").write_bytes(b"PK\x03\x04 torn")
    with caplog.at_level(logging.WARNING):
        path, meta = find_resume_checkpoint(tmp_path / "b")
    assert path.name == "step-00000012.ckpt" and meta["global_step"] == 12
    assert "skipping checkpoint" in caplog.text and "last.ckpt" in caplog.text

    # the checkpoint holds what `wm-video export` needs to rebuild the part
    out = export_part(path, tmp_path / "re_export")
    c = VQTokenizer.from_pretrained(out).state_dict()
    assert all(torch.equal(c[k], b[k]) for k in b)
