"""`wm-video train decoder` end to end on a tiny dataset: sample grids, export, resume, refused tokenizers."""

from __future__ import annotations

import pytest
import torch
from conftest import write_dataset, write_token_dataset
from test_decoder import make_tokenizer

from wm_video.cli import main
from wm_video.models.decoder import DiffusionDecoder
from wm_video.training.decoder_module import consecutive_frames, sample_grid


def test_consecutive_frames_and_grid():
    x = torch.arange(2 * 6).view(2, 6, 1, 1, 1).expand(2, 6, 3, 4, 4).float()
    w = consecutive_frames(x, 3, torch.Generator().manual_seed(0))
    assert w.shape == (2, 3, 3, 4, 4)
    assert (w[:, 1:, 0, 0, 0] - w[:, :-1, 0, 0, 0] == 1).all()
    assert sample_grid([x[0] / 12, x[1] / 12], n=4).shape == (3, 8, 16)


def test_train_export_resume_and_refuse_another_tokenizer(tmp_path, capsys):
    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=4, t=4, size=32)
    tok = make_tokenizer()
    tok.save_pretrained(tmp_path / "tok")
    args = ["train", "decoder", "--preset", "debug", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"),
            "trainer.val_check_interval=2", "val_fraction=0.34", "model.prev_frame=true", "frames_per_clip=3"]
    assert main([*args, "--tokenizer", str(tmp_path / "tok"), "--max-steps", "4"]) == 0
    model = DiffusionDecoder.from_pretrained(tmp_path / "run" / "export")
    assert model.config.prev_frame and model.config.tokenizer_fingerprint == tok.fingerprint()
    model.check_tokenizer(tok)
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert "val/truth_vq_1step_nstep" in events.Tags()["images"]
    assert {"train/loss", "val/loss", "val/denoise_mse"} <= set(events.Tags()["scalars"])
    # the tokenizer is not part of the checkpoint (the decoder keeps only its own copy of the codebook and stack)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert not any(k.startswith("_tokenizer") for k in state["state_dict"])
    # a second run in the same folder resumes from last.ckpt
    assert main([*args, "--tokenizer", str(tmp_path / "tok"), "--max-steps", "6"]) == 0
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"] == 6
    # resuming with other tokenizer weights is refused, naming the field
    make_tokenizer(seed=1).save_pretrained(tmp_path / "tok2")
    capsys.readouterr()
    assert main([*args, "--tokenizer", str(tmp_path / "tok2"), "--max-steps", "8"]) == 2
    assert "model.tokenizer_fingerprint" in capsys.readouterr().err


def test_wrong_inputs_are_clear_errors(tmp_path, capsys):
    make_tokenizer().save_pretrained(tmp_path / "tok")
    write_dataset(tmp_path / "ds16", shards=2, clips_per_shard=2, t=4, size=16)
    base = ["train", "decoder", "--preset", "debug", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "r")]
    assert main([*base, "--data", str(tmp_path / "ds16")]) == 2
    assert "frames are 16x16 but the tokenizer" in capsys.readouterr().err
    write_token_dataset(tmp_path / "tokens", shards=2, clips_per_shard=2)
    assert main([*base, "--data", str(tmp_path / "tokens")]) == 2
    assert "holds tokens; the decoder trains on frames" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        main(["train", "decoder", "--preset", "debug", "--data", str(tmp_path / "ds16")])
    assert e.value.code == 2 and "--tokenizer" in capsys.readouterr().err
