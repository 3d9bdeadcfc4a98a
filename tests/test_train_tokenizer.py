"""`wm-video train tokenizer` end to end on a tiny dataset: held-out validation, grids, export, resume."""

from __future__ import annotations

import torch
from conftest import write_dataset

from wm_video.cli import main
from wm_video.data.split import split_shards
from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.training.tokenizer_module import recon_grid, sample_frames


def test_split_holds_out_the_last_shards():
    assert split_shards(10, 0.1) == (list(range(9)), [9])
    assert split_shards(3, 0.5) == ([0], [1, 2])
    assert split_shards(1, 0.1) == ([0], [])
    assert split_shards(4, 0.0) == ([0, 1, 2, 3], [])


def test_sample_frames_and_grid_shapes():
    x = torch.arange(2 * 6).view(2, 6, 1, 1, 1).expand(2, 6, 3, 4, 4).float()
    picked = sample_frames(x, 3, generator=torch.Generator().manual_seed(0))
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


def test_tokenize_writes_resumable_token_shards(tmp_path, capsys):
    import numpy as np

    from wm_video.data.loader import ClipLoader, LoaderConfig
    from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
    from wm_video.data.tokenize import token_dtype

    clips = write_dataset(tmp_path / "ds", shards=2, clips_per_shard=3, t=4, size=32)
    model = VQTokenizer(TokenizerConfig(
        resolution=32, downsample=4, base_channels=8, norm_groups=4, latent_channels=8, codebook_size=32,
        codebook_dim=4)).eval()
    model.save_pretrained(tmp_path / "tok")
    args = ["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--src", str(tmp_path / "ds"),
            "--out", str(tmp_path / "tokens"), "--batch-frames", "8", "--no-progress"]
    assert main(args) == 0
    info = load_dataset_info(tmp_path / "tokens")
    assert info.frame_storage == "tokens" and info.resolution == [8, 8]
    assert info.tokens["vocab_size"] == 32 and info.tokens["dtype"] == "uint8" and info.num_samples == 6
    got = [c for url in shard_paths(tmp_path / "tokens", info) for c in iter_clips(url, info.action_space)]
    assert [c.key for c in got] == [c.key for c in clips]  # same clips, same order
    for src, tok in zip(clips, got, strict=True):
        assert tok.frames.dtype == np.uint8 and tok.frames.shape == (4, 8, 8)
        np.testing.assert_array_equal(tok.actions, src.actions)
        np.testing.assert_array_equal(tok.rewards, src.rewards)
        expected = model.tokenize(torch.from_numpy(src.frames).permute(0, 3, 1, 2)[None].float() / 127.5 - 1)
        np.testing.assert_array_equal(tok.frames, expected[0].numpy())
    batch = next(iter(ClipLoader(tmp_path / "tokens", LoaderConfig(batch_size=2, num_workers=0))))
    assert batch["tokens"].shape == (2, 4, 8, 8) and batch["tokens"].dtype == torch.int64 and "frames" not in batch
    # a rerun skips finished shards
    first = (tmp_path / "tokens" / "shard-000000.tar").stat().st_mtime_ns
    (tmp_path / "tokens" / "shard-000001.tar.json").unlink()
    assert main(args) == 0
    assert (tmp_path / "tokens" / "shard-000000.tar").stat().st_mtime_ns == first
    assert token_dtype(256) == np.uint8 and token_dtype(257) == np.uint16 and token_dtype(70_000) == np.uint32


def test_adversarial_training_starts_late_and_stays_out_of_the_export(tmp_path):
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=4, t=4, size=32)
    out = tmp_path / "run"
    # 5 steps with checkpoints every 2: last.ckpt must still hold step 5 when training ends
    assert main(["train", "tokenizer", "--preset", "debug", "--data", str(tmp_path / "ds"), "--out", str(out),
                 "--max-steps", "5", "model.disc_weight=0.5", "model.disc_start=3", "model.disc_channels=8",
                 "model.disc_layers=2", "trainer.val_check_interval=5"]) == 0
    state = torch.load(out / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 5
    assert any(k.startswith("disc.") for k in state["state_dict"])
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(out / "tb")).Reload()
    gan_steps = [e.step for e in events.Scalars("train/gan_d")]
    assert gan_steps and min(gan_steps) >= 3  # delayed start
    from safetensors.torch import load_file

    assert not any("disc" in k for k in load_file(str(out / "export" / "model.safetensors")))
    assert VQTokenizer.from_pretrained(out / "export").config.disc_weight == 0.5
