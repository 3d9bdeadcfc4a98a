"""The held-out split: whole episodes recorded in dataset.json whatever the shard count, the old last-shards rule
for a dataset.json written before, a loud warning and a refused eval when nothing is held out, and one tokenizer
trained on two datasets mixed at weights."""

from __future__ import annotations

import json
import logging
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from conftest import action_space, write_dataset
from lerobot_fixtures import textured_frames, write_video

from wm_video.cli import main
from wm_video.data.loader import ClipLoader, LoaderConfig, heldout_loader
from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import Clip, ClipMeta
from wm_video.data.split import NoHeldOutError, split_dataset
from wm_video.data.writer import ShardWriter, finalize_dataset
from wm_video.training.run import DataMix, make_loaders

FAST = ["--preset", "debug", "--max-steps", "3", "model.resolution=16", "trainer.logger=none",
        "loader.num_workers=0", "trainer.val_check_interval=3"]


def keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def episode(key: str) -> str:
    return key.rsplit("_", 1)[0]


def write_named(root: Path, prefix: str, episodes: int, clips: int = 3, size: int = 16, t: int = 4, shards: int = 1,
                kind: str = "none") -> None:
    """A dataset whose episode ids start with ``prefix`` (so a mix's clips tell where they came from)."""
    rng = np.random.default_rng(len(prefix) + episodes)
    root.mkdir(parents=True)
    paths = [root / f"shard-{s:06d}.tar" for s in range(shards)]
    for s, path in enumerate(paths):
        with ShardWriter(path, action_space(kind)) as w:
            for e in range(s, episodes, shards):
                for c in range(clips):
                    meta = ClipMeta(episode_id=f"{prefix}{e:03d}", clip_start=c * t, num_frames=t, fps=15.0,
                                    source="test", fields=[])
                    actions = rng.uniform(-1, 1, (t, 3)).astype(np.float32) if kind == "continuous" else None
                    w.write(Clip(rng.integers(0, 256, (t, size, size, 3), dtype=np.uint8), meta, actions))
            w.close()
    finalize_dataset(root, paths, resolution=[size, size], fps=15.0, clip_len=t, storage="raw",
                     action_space=action_space(kind), source={"kind": "test"})


def test_sixteen_videos_in_one_shard_hold_out_whole_episodes_and_train_with_validation(tmp_path, caplog, capsys):
    for i in range(16):
        write_video(tmp_path / "videos" / f"v{i:02d}.mp4", textured_frames(12, h=24, w=24, seed=i))
    ds = tmp_path / "ds"
    assert main(["data", "videos", "--data", str(tmp_path / "videos"), "--out", str(ds), "--size", "16",
                 "--clip-len", "4", "--workers", "1", "--no-progress"]) == 0
    info = load_dataset_info(ds)
    assert len(info.shards) == 1 and len(info.episode_order()) == 16
    recorded = json.loads((ds / "dataset.json").read_text())["heldout"]
    assert recorded["val_fraction"] == 0.1 and len(recorded["episodes"]) == 2  # round(16 * 0.1)
    capsys.readouterr()
    assert main(["data", "inspect", str(ds)]) == 0
    assert "held out: 2 of 16 episodes, as" in capsys.readouterr().out

    split = split_dataset(ds)
    cfg = LoaderConfig(batch_size=4, num_workers=0, shuffle_buffer=0, drop_last=False)
    train, held = keys(ClipLoader(split.train, cfg)), keys(ClipLoader(split.heldout, cfg))
    assert {episode(k) for k in held} == set(recorded["episodes"])  # whole episodes, nothing else
    assert not {episode(k) for k in train} & set(recorded["episodes"])
    assert sorted(train + held) == sorted(keys(ClipLoader(ds, cfg)))  # every clip on exactly one side
    assert len(held) == split.heldout_clips

    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "tokenizer", "--data", str(ds), "--out", str(out), *FAST]) == 0
    assert "held-out split of " + str(ds) + ": 2 of 16 episodes, as" in caplog.text
    summary = json.loads((out / "train_summary.json").read_text())
    assert summary["metrics"]["frames"] == len(held) * 4  # the held-out clips were scored
    # token shards hold out the same episodes, so dynamics validates where the tokenizer never trained
    assert main(["data", "tokenize", "--tokenizer", str(out / "export"), "--data", str(ds), "--out",
                 str(tmp_path / "tokens"), "--device", "cpu", "--no-progress"]) == 0
    assert load_dataset_info(tmp_path / "tokens").heldout == info.heldout


def test_a_dataset_json_without_a_recorded_split_keeps_the_last_shards_rule(tmp_path, caplog):
    write_dataset(tmp_path, shards=4, clips_per_shard=2)
    d = json.loads((tmp_path / "dataset.json").read_text())
    del d["heldout"]
    for shard in d["shards"]:
        del shard["episode_clips"]
    (tmp_path / "dataset.json").write_text(json.dumps(d))  # as an older wm-video wrote it

    assert split_dataset(tmp_path).heldout.shards == (3,)
    assert split_dataset(tmp_path, 0.5).heldout.shards == (2, 3)
    cfg = LoaderConfig(batch_size=2, num_workers=0, shuffle_buffer=0, drop_last=False)
    with caplog.at_level(logging.INFO):
        train, val, _ = make_loaders(tmp_path, cfg)
    assert "the last 1 of 4 shards (val_fraction=0.1;" in caplog.text and "records no held-out episodes" in caplog.text
    assert {episode(k) for k in keys(train)} == {"ep0000", "ep0001", "ep0002"}
    assert {episode(k) for k in keys(val)} == {"ep0003"}
    assert heldout_loader(tmp_path)[1].heldout_clips == 2


@pytest.mark.parametrize("old", [False, True])
def test_nothing_held_out_warns_loudly_and_eval_says_how_to_fix_it(tmp_path, caplog, capsys, old):
    from test_world_model import make_world_model

    ds = tmp_path / "ds"
    with caplog.at_level(logging.WARNING):
        write_dataset(ds, shards=1, clips_per_shard=3, t=6, size=32)  # one episode
    if old:  # an older wm-video's single-shard dataset: the last-shards rule holds nothing out either
        d = json.loads((ds / "dataset.json").read_text())
        del d["heldout"], d["shards"][0]["episode_clips"]
        (ds / "dataset.json").write_text(json.dumps(d))
    else:
        assert "NOTHING HELD OUT" in caplog.text  # said when the dataset is written
    caplog.clear()
    cfg = LoaderConfig(batch_size=2, num_workers=0)
    with caplog.at_level(logging.WARNING):
        _, val, _ = make_loaders(ds, cfg)
    assert val is None
    loud = [r.getMessage() for r in caplog.records if "NOTHING HELD OUT" in r.getMessage()]
    assert len(loud) == 1 and loud[0].startswith("!!!!!!!!!!") and "Fix:" in loud[0]
    with pytest.raises(NoHeldOutError, match="Fix:"):
        heldout_loader(ds)
    assert not make_loaders(ds, cfg, val_fraction=0)[2][0].problem  # asked for no validation: no warning

    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    capsys.readouterr()
    assert main(["eval", "--model", str(tmp_path / "wm"), "--data", str(ds), "--horizon", "2", "--context-frames",
                 "2", "--out", str(tmp_path / "eval")]) == 2
    err = capsys.readouterr().err
    assert "no held-out clips to evaluate on" in err and "Fix: write" in err


def test_one_tokenizer_trains_on_two_datasets_mixed_at_their_weights(tmp_path, caplog):
    write_named(tmp_path / "video", "vid", episodes=10)
    write_named(tmp_path / "robot", "bot", episodes=10, kind="continuous", t=6)
    out = tmp_path / "run"
    with caplog.at_level(logging.INFO):
        assert main(["train", "tokenizer", "--data", str(tmp_path / "video"), str(tmp_path / "robot"),
                     "--data-weights", "0.7", "0.3", "--out", str(out), *FAST]) == 0
    assert "held-out split of " + str(tmp_path / "robot") in caplog.text
    assert json.loads((out / "train_summary.json").read_text())["metrics"]["frames"] == 2 * 3 * 4  # both held out

    mix = DataMix((str(tmp_path / "video"), str(tmp_path / "robot")), (0.7, 0.3))
    cfg = LoaderConfig(batch_size=10, num_workers=0, shuffle_buffer=8, resampled=True, epoch_length=1000)
    train, val, _ = make_loaders(mix, cfg)
    batches = list(train)
    assert batches[0]["frames"].shape == (10, 4, 3, 16, 16) and "actions" not in batches[0]  # frames, cut to 4
    drawn = Counter(k[:3] for batch in batches for k in batch["key"])
    assert sum(drawn.values()) == 1000 and 0.65 < drawn["vid"] / 1000 < 0.75
    held = {episode(k) for k in keys(val)}
    assert held == {"vid009", "bot009"}  # each dataset's own held-out episode, never trained on
    assert not held & {episode(k) for k in keys(train)}


def test_datasets_of_different_resolutions_are_refused_naming_both_files(tmp_path, capsys):
    write_dataset(tmp_path / "a", shards=2, clips_per_shard=2, size=16)
    write_dataset(tmp_path / "b", shards=2, clips_per_shard=2, size=8)
    assert main(["train", "tokenizer", "--data", str(tmp_path / "a"), str(tmp_path / "b"), "--out",
                 str(tmp_path / "run"), *FAST]) == 2
    err = capsys.readouterr().err
    assert (f"{tmp_path / 'a' / 'dataset.json'} has frames of 16x16, {tmp_path / 'b' / 'dataset.json'} has frames "
            "of 8x8") in err
