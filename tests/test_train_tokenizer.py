"""`wm-video train tokenizer` end to end on a tiny dataset: held-out validation, grids, export, resume."""

from __future__ import annotations

import torch
from conftest import write_dataset

from wm_video.cli import main
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.tokenizer_module import recon_grid, sample_frames, split_shards


def test_split_holds_out_the_last_shards():
    assert split_shards(10, 0.1) == (list(range(9)), [9])
    assert split_shards(3, 0.5) == ([0], [1, 2])
    assert split_shards(1, 0.1) == ([0], [])
    assert split_shards(4, 0.0) == ([0, 1, 2, 3], [])


def test_sample_frames_and_grid_shapes():
    x = torch.arange(2 * 6).view(2, 6, 1, 1, 1).expand(2, 6, 3, 4, 4).float()
    picked = sample_frames(x, 3, torch.Generator().manual_seed(0))
    assert picked.shape == (2, 3, 3, 4, 4)
    assert all(set(picked[i, :, 0, 0, 0].tolist()) <= set(x[i, :, 0, 0, 0].tolist()) for i in range(2))
    assert recon_grid(x / 12, x / 12, n=5).shape == (3, 8, 20)


def test_train_export_and_resume(tmp_path):
    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=4, t=4, size=32)
    args = ["train", "tokenizer", "--preset", "debug", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / "run"),
            "trainer.val_check_interval=2", "val_fraction=0.34"]
    assert main([*args, "--max-steps", "4"]) == 0
    export = tmp_path / "run" / "export"
    model = VQTokenizer.from_pretrained(export)
    assert model.config.resolution == 32
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "run" / "tb")).Reload()
    assert "val/reconstruction" in events.Tags()["images"]
    assert {"train/loss", "val/psnr", "val/usage"} <= set(events.Tags()["scalars"])
    # a second run in the same folder resumes from last.ckpt instead of starting over
    assert main([*args, "--max-steps", "6"]) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 6
    steps = [e.step for e in EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Scalars("train/loss")]
    assert steps == sorted(set(steps))  # no step trained twice


def test_wrong_resolution_is_a_clear_error(tmp_path, capsys):
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2, t=4, size=16)
    assert main(["train", "tokenizer", "--preset", "debug", "--data", str(tmp_path / "ds"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "frames are 16x16 but the tokenizer is built for 32x32" in capsys.readouterr().err
