"""LeRobot datasets (v2.1 and v3.0 layouts, written in tmp_path) into episode-clip shards: actions, rewards, done
flags, state, tasks and frames land on the right rows; bad datasets give errors that list what is there."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import CAMERAS, TASKS, level, marker, video_row, write_lerobot

from wm_video.cli import main
from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.pipeline import LeRobotSource, PipelineConfig, run_pipeline
from wm_video.data.pipeline.lerobot import LeRobotFormatError
from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths

LENGTHS = (24, 18, 30)
CFG = dict(size=32, clip_len=8, workers=1, min_motion=0.0, dedup="none")


def convert(src: Path, out: Path, **kw):
    source_kw = {k: kw.pop(k) for k in ("camera", "action_key", "state_key", "reward_key", "done_key") if k in kw}
    return run_pipeline(LeRobotSource(str(src), **{"camera": "top", **source_kw}), PipelineConfig(**{**CFG, **kw}),
                        out, show_progress=False)


def all_clips(out: Path, info) -> list:
    return [c for url in shard_paths(out, info) for c in iter_clips(url, info.action_space)]


@pytest.mark.parametrize("version, codec", [("v2.1", "libx264"), ("v3.0", "libx264"), ("v3.0", "libsvtav1")])
def test_shards_hold_the_parquet_values_and_the_right_frames(tmp_path, version, codec):
    size = (64, 64) if codec == "libsvtav1" else (48, 64)  # SVT-AV1 wants at least 64 pixels a side
    rows = write_lerobot(tmp_path / "ds", version, LENGTHS, codec=codec, size=size)
    info = convert(tmp_path / "ds", tmp_path / "out")
    assert info.action_space.kind == "continuous" and info.action_space.dim == 3
    assert info.num_episodes == 3 and info.num_samples == 3 + 3 + 4  # 24, 18, 30 frames; last clip ends with it
    clips = all_clips(tmp_path / "out", info)
    for c in clips:
        ep, fi = c.meta.extra["episode_index"], c.meta.extra["frame_index"]
        assert fi == c.meta.clip_start
        r, window = rows[ep], slice(fi, fi + 8)
        np.testing.assert_array_equal(c.actions, r["action"][window])
        np.testing.assert_array_equal(c.rewards, r["next.reward"][window])
        np.testing.assert_array_equal(c.terminations, r["next.done"][window])
        np.testing.assert_array_equal(np.asarray(c.meta.extra["state"], np.float32), r["observation.state"][window])
        assert c.meta.extra["task"] == TASKS[ep % len(TASKS)] and c.meta.extra["task_index"] == ep % len(TASKS)
        # the frames are those of the clip's rows (v3.0: found by the episode's offset in the shared video)
        first = video_row(r, version, LENGTHS, ep, fi)
        assert np.abs(marker(c.frames) - [level(first + i) for i in range(8)]).max() < 6
    assert sum(c.terminations.sum() for c in clips) == 3  # each episode's last clip ends with its done flag
    # normalisation statistics: the merged mean is the mean over the clips' actions; quantiles over the frames
    stats = info.stats["actions"]
    np.testing.assert_allclose(stats["mean"], np.concatenate([c.actions for c in clips]).mean(0), atol=1e-6)
    every = np.concatenate([rows[e]["action"] for e in rows])
    np.testing.assert_allclose(stats["quantiles"]["q50"], np.quantile(every, 0.5, axis=0), atol=1e-6)
    assert info.stats["state"]["frames"] == sum(LENGTHS) and len(info.stats["state"]["mean"]) == 4
    assert info.source["camera"] == "observation.images.top" and info.source["action_names"] == ["dx", "dy", "dz"]
    batch = next(iter(ClipLoader(tmp_path / "out", LoaderConfig(batch_size=2, num_workers=0, shuffle_buffer=0))))
    assert tuple(batch["actions"].shape) == (2, 8, 3) and tuple(batch["frames"].shape) == (2, 8, 3, 32, 32)


def test_nan_actions_reject_the_episode_and_are_counted(tmp_path):
    write_lerobot(tmp_path / "ds", "v3.0", LENGTHS, nan_episode=1)
    info = convert(tmp_path / "ds", tmp_path / "out")
    assert info.source["counts"]["rejected"] == {"nonfinite_actions": 1} and info.source["counts"]["ok"] == 2
    final = {r["input"]: r for r in map(json.loads, (tmp_path / "out/manifest.jsonl").read_text().splitlines())}
    assert final["episode 1"]["status"] == "rejected"
    assert "'action' holds 1 NaN" in final["episode 1"]["reason"] and "row 5" in final["episode 1"]["reason"]
    assert {c.meta.extra["episode_index"] for c in all_clips(tmp_path / "out", info)} == {0, 2}
    assert all(np.isfinite(c.actions).all() for c in all_clips(tmp_path / "out", info))


def test_lower_fps_sums_rewards_over_the_steps_it_spans(tmp_path):
    rows = write_lerobot(tmp_path / "ds", "v2.1", LENGTHS)
    info = convert(tmp_path / "ds", tmp_path / "out", fps=5, clip_len=4)
    assert info.fps == 5 and info.num_samples == 3 + 3 + 4  # 12, 9, 15 steps at 5 fps, clips of 4
    for c in all_clips(tmp_path / "out", info):
        r, s = rows[c.meta.extra["episode_index"]], c.meta.clip_start
        kept = slice(2 * s, 2 * s + 8, 2)  # every other row
        np.testing.assert_array_equal(c.actions, r["action"][kept])
        n = len(r["next.reward"])
        sums = [r["next.reward"][i:min(i + 2, n)].sum() for i in range(2 * s, 2 * s + 8, 2)]
        np.testing.assert_array_equal(c.rewards, np.asarray(sums, np.float32))
        assert c.terminations.sum() == (2 * s + 8 >= n)  # an odd-length episode's done row is in the last step
        assert np.abs(marker(c.frames) - [level(2 * s + 2 * i) for i in range(4)]).max() < 6


def test_camera_and_field_errors_list_what_is_available(tmp_path):
    write_lerobot(tmp_path / "ds", "v3.0", LENGTHS)
    with pytest.raises(LeRobotFormatError, match="camera key 'front' not found") as e:
        convert(tmp_path / "ds", tmp_path / "o1", camera="front")
    assert all(cam in str(e.value) for cam in CAMERAS)
    with pytest.raises(LeRobotFormatError, match="choose a camera with --camera") as e:
        convert(tmp_path / "ds", tmp_path / "o2", camera=None)
    assert all(cam in str(e.value) for cam in CAMERAS)
    with pytest.raises(LeRobotFormatError, match=r"field 'act' \(the actions\).*available: action, episode_index"):
        convert(tmp_path / "ds", tmp_path / "o3", action_key="act")
    with pytest.raises(LeRobotFormatError, match=r"field 'obs.joints' \(--state-key\)"):
        convert(tmp_path / "ds", tmp_path / "o4", state_key="obs.joints")
    # the short camera name, a full key and leaving out state, reward and done all work
    info = convert(tmp_path / "ds", tmp_path / "o5", camera="observation.images.wrist", state_key="none",
                   reward_key="none", done_key="none")
    clip = all_clips(tmp_path / "o5", info)[0]
    assert clip.rewards is None and clip.terminations is None and "state" not in clip.meta.extra


def test_a_missing_column_or_metadata_field_is_named(tmp_path):
    write_lerobot(tmp_path / "ds", "v2.1", LENGTHS, drop_columns=("next.reward",))
    with pytest.raises(LeRobotFormatError, match=r"episode_000000.parquet: column\(s\) \['next.reward'\] missing; "
                                                 r"columns: action, observation.state"):
        convert(tmp_path / "ds", tmp_path / "o1")
    info = json.loads((tmp_path / "ds/meta/info.json").read_text())
    del info["features"]
    (tmp_path / "ds/meta/info.json").write_text(json.dumps(info))
    with pytest.raises(LeRobotFormatError, match=r"info.json: field 'features' missing \(fields: .*'fps'"):
        convert(tmp_path / "ds", tmp_path / "o2")
    with pytest.raises(LeRobotFormatError, match="not a LeRobot dataset folder"):
        convert(tmp_path / "nothing", tmp_path / "o3")


def test_a_missing_video_marks_its_episode_broken(tmp_path):
    write_lerobot(tmp_path / "ds", "v2.1", LENGTHS)
    (tmp_path / "ds/videos/chunk-000/observation.images.top/episode_000002.mp4").unlink()
    info = convert(tmp_path / "ds", tmp_path / "out")
    assert info.source["counts"]["broken"] == {"missing_video": 1} and info.num_episodes == 2


def test_rerun_is_idempotent_and_the_cli_output_tokenizes(tmp_path, capsys):
    import torch

    from wm_video.config import load_config
    from wm_video.models.tokenizer import VQTokenizer

    write_lerobot(tmp_path / "ds", "v3.0", LENGTHS, nan_episode=2)
    args = ["data", "lerobot", "--src", str(tmp_path / "ds"), "--out", str(tmp_path / "out"), "--camera", "top",
            "--size", "32", "--clip-len", "8", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    assert "rejected 1 (nonfinite_actions 1)" in capsys.readouterr().out

    def snapshot() -> dict[str, tuple[str, int]]:
        return {p.name: (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
                for p in sorted((tmp_path / "out").rglob("*")) if p.is_file()}

    before = snapshot()
    assert main(args) == 0
    after = snapshot()
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    assert [k for k in after if after[k][1] != before[k][1]] == ["dataset.json"]  # rewritten, same bytes
    torch.manual_seed(0)
    VQTokenizer(load_config("tokenizer", preset_name="debug")).save_pretrained(tmp_path / "tok")  # 32x32 frames
    assert main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--src", str(tmp_path / "out"),
                 "--out", str(tmp_path / "tokens"), "--device", "cpu", "--no-progress"]) == 0
    src, tok = load_dataset_info(tmp_path / "out"), load_dataset_info(tmp_path / "tokens")
    assert tok.frame_storage == "tokens" and tok.num_samples == src.num_samples and tok.action_space == src.action_space
    for a, b in zip(all_clips(tmp_path / "out", src), all_clips(tmp_path / "tokens", tok), strict=True):
        assert a.key == b.key and b.frames.shape == (8, 8, 8)
        np.testing.assert_array_equal(a.actions, b.actions)
        assert a.meta.extra == b.meta.extra
    # the loader hands each clip's task text on (text-conditioned training reads batch["task"])
    loader = ClipLoader(tmp_path / "tokens", LoaderConfig(batch_size=4, num_workers=0, shuffle_buffer=0))
    for batch in loader:
        assert [t in TASKS for t in batch["task"]] == [True] * len(batch["key"])
        assert batch["task"] == [TASKS[int(k.rsplit("-ep", 1)[1][:6]) % len(TASKS)] for k in batch["key"]]
