"""What training shows and keeps besides its losses: the dynamics rollout video in TensorBoard (decoded with the data's
tokenizer, or token ids without one), and the EMA of the tokenizer's weights (exported, and resumed exactly)."""

from __future__ import annotations

import importlib.util
import json
import logging
import os
import signal

import lightning as L
import pytest
import torch
from conftest import write_dataset, write_token_dataset

from wm_video.cli import main
from wm_video.config import load_config
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.consolidate import export_part, part_state_dict
from wm_video.training.ema import ema_decay_at
from wm_video.training.visuals import VIDEO_TAG, rollout_video, shuffled_in_time

pytestmark = pytest.mark.usefixtures("one_thread")


def _images(run):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    return events.Images(VIDEO_TAG) if VIDEO_TAG in events.Tags()["images"] else []


def _expected_size(clips: int, t: int, h: int, w: int) -> tuple[int, int]:
    """(height, width) of the logged frames: a video (moviepy) puts the 3 panels side by side, one clip per row;
    the image grid stacks each clip's 3 panels and runs time left to right."""
    if importlib.util.find_spec("moviepy") is not None:
        return clips * h, 3 * w
    return clips * 3 * h, t * w


def test_rollout_video_panels_and_modes():
    torch.manual_seed(0)
    model = DynamicsModel(DynamicsConfig(vocab_size=16, token_h=2, token_w=2, context_frames=4, width=16, depth=1,
                                         heads=2, cond_dim=8, action_type="discrete", num_actions=3)).train()
    tokens = torch.randint(0, 16, (2, 5, 2, 2))
    actions = torch.randint(0, 3, (2, 5))
    panels = rollout_video(model, None, tokens, actions, context=2)
    assert model.training  # the training mode is restored
    assert panels.shape == (3, 2, 5, 3, 16, 16) and 0 <= panels.min() and panels.max() <= 1  # token ids, 8 px each
    assert torch.equal(panels[1, :, :2], panels[0, :, :2]) and torch.equal(panels[2, :, :2], panels[0, :, :2])
    shuffled = shuffled_in_time(actions, 1, torch.Generator().manual_seed(0))
    assert torch.equal(shuffled[:, :1], actions[:, :1])  # the context's actions stay
    assert all(sorted(shuffled[i, 1:].tolist()) == sorted(actions[i, 1:].tolist()) for i in range(2))


def test_dynamics_logs_rollout_videos_decoded_with_the_data_tokenizer(tmp_path):
    tok = VQTokenizer(load_config("tokenizer", preset_name="debug"))  # 32x32 frames, 8x8 tokens, 32 codes
    tok.save_pretrained(tmp_path / "tokenizer")
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=4, t=6, grid=8, vocab=32)
    info_path = tmp_path / "tok" / "dataset.json"
    info = json.loads(info_path.read_text())
    info["tokens"]["tokenizer"] = str(tmp_path / "tokenizer")
    info_path.write_text(json.dumps(info))
    assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out",
                 str(tmp_path / "run"), "--max-steps", "4", "val_fraction=0.34", "video_every_n_steps=2",
                 "video_clips=2", "video_context_frames=2"]) == 0
    images = _images(tmp_path / "run")
    assert [e.step for e in images] == [2, 4]
    # clips cut to the model's 4-frame window, decoded to 32x32 frames
    assert (images[0].height, images[0].width) == _expected_size(2, 4, 32, 32)


def test_dynamics_without_its_tokenizer_draws_token_ids_and_says_so(tmp_path, caplog):
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=4, t=6, grid=4, vocab=16)  # tokenizer "synthetic"
    with caplog.at_level(logging.WARNING):
        assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out",
                     str(tmp_path / "run"), "--max-steps", "2", "video_every_n_steps=2", "video_clips=2",
                     "val_fraction=0.34"]) == 0
    assert caplog.text.count("dynamics videos draw token ids") == 1
    images = _images(tmp_path / "run")
    assert [e.step for e in images] == [2]
    assert (images[0].height, images[0].width) == _expected_size(2, 4, 4 * 8, 4 * 8)
    # off: no video, no tokenizer looked up
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out",
                     str(tmp_path / "off"), "--max-steps", "2", "video_every_n_steps=0"]) == 0
    assert not _images(tmp_path / "off") and "dynamics videos" not in caplog.text


def test_ema_decay_warms_up():
    assert ema_decay_at(0.999, 0) == pytest.approx(0.1) and ema_decay_at(0.999, 90) == pytest.approx(0.91)
    assert ema_decay_at(0.99, 10_000) == 0.99


class SignalAt(L.Callback):
    """Sends the preemption signal to this process after optimizer step ``step``."""

    def __init__(self, step: int | None) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGUSR1)


def _train_tokenizer(tmp_path, run, signal_at=None):
    from wm_video.training.run import fit_and_export
    from wm_video.training.tokenizer_module import TokenizerModule

    cfg = load_config("train_tokenizer", preset_name="debug", overrides=[
        "trainer.max_steps=6", "trainer.logger=none", "trainer.checkpoint_every_n_steps=4", "trainer.progress=log",
        "loader.shuffle_buffer=4", "ema_decay=0.9"])
    torch.manual_seed(cfg.trainer.seed)  # as train_tokenizer does: the weights' init follows trainer.seed
    fit_and_export(TokenizerModule(cfg), cfg.trainer, tmp_path / "ds", cfg.loader, cfg.val_fraction,
                   cfg.val_batches, tmp_path / run, "tokenizer", callbacks=[SignalAt(signal_at)])
    return torch.load(tmp_path / run / "checkpoints" / "last.ckpt", weights_only=True)


def test_ema_is_exported_and_resumed_exactly(tmp_path):
    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=6, size=32)
    last = _train_tokenizer(tmp_path, "a")  # uninterrupted
    ema, raw = part_state_dict(last["state_dict"]), part_state_dict(last["current_model_state"])
    assert int(last["averaging_state"]["n_averaged"]) == 6  # one update per optimizer step
    params = dict(VQTokenizer(load_config("tokenizer", preset_name="debug")).named_parameters())
    assert any(not torch.equal(ema[k], raw[k]) for k in params), "the EMA equals the raw weights"
    assert all(torch.equal(ema[k], raw[k]) for k in ema if k not in params)  # buffers (the codebook) follow the model
    exported = VQTokenizer.from_pretrained(tmp_path / "a" / "export").state_dict()
    assert all(torch.equal(exported[k], ema[k]) for k in exported)  # the export holds the EMA
    again = VQTokenizer.from_pretrained(export_part(tmp_path / "a" / "checkpoints" / "last.ckpt", tmp_path / "x"))
    assert all(torch.equal(v, exported[k]) for k, v in again.state_dict().items())  # so does `wm-video export`

    # preempted at step 4 (it stops at the next step boundary, 5, between the every-4-steps checkpoints), then
    # resumed: the same EMA, update count and raw weights at the end
    with pytest.raises(SystemExit):
        _train_tokenizer(tmp_path, "b", signal_at=4)
    stopped = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert stopped["global_step"] == 5 and int(stopped["averaging_state"]["n_averaged"]) == 5
    resumed = _train_tokenizer(tmp_path, "b")
    assert torch.equal(resumed["averaging_state"]["n_averaged"], last["averaging_state"]["n_averaged"])
    for key in ("state_dict", "current_model_state"):
        a, b = last[key], resumed[key]
        assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a), f"{key} differs after the resume"
    b_export = VQTokenizer.from_pretrained(tmp_path / "b" / "export").state_dict()
    assert all(torch.allclose(b_export[k], exported[k], atol=1e-6) for k in exported)


def test_decoder_exports_its_ema_and_drops_it_when_resumed_with_it_off(tmp_path, caplog):
    from wm_video.models.decoder import DiffusionDecoder

    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=4, t=4, size=32)
    VQTokenizer(load_config("tokenizer", preset_name="debug")).save_pretrained(tmp_path / "tok")
    args = ["train", "decoder", "--preset", "debug", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"),
            "--tokenizer", str(tmp_path / "tok"), "trainer.logger=none"]
    assert main([*args, "--max-steps", "3", "ema_decay=0.9"]) == 0
    last = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    ema, raw = part_state_dict(last["state_dict"]), part_state_dict(last["current_model_state"])
    exported = DiffusionDecoder.from_pretrained(tmp_path / "run" / "export").state_dict()
    assert all(torch.equal(exported[k], ema[k]) for k in exported)
    assert any(not torch.equal(ema[k], raw[k]) for k in ema)
    # resumed with the EMA off, it goes on from the raw weights (said once), not from the average
    with caplog.at_level(logging.WARNING):
        assert main([*args, "--max-steps", "4", "ema_decay=0"]) == 0
    assert caplog.text.count("from a checkpoint written with the EMA on") == 1
    resumed = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert "current_model_state" not in resumed and resumed["global_step"] == 4
