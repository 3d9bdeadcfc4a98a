"""Collection from real simulators, end to end: every family, determinism, resume after a kill, bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from wm_video.cli import main
from wm_video.config import load_config
from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.writer import clip_starts
from wm_video.envs.collect import CollectConfig, collect


def tiny(env: str, **kw) -> CollectConfig:
    base = dict(env=env, episodes=2, episodes_per_shard=1, clip_len=8, max_episode_steps=24, workers=1, size=32)
    return CollectConfig(**{**base, **kw})


@pytest.mark.parametrize(
    "env, policy, kind",
    [
        ("ALE/Pong-v5", "random", "discrete"),
        ("CartPole-v1", "scripted", "discrete"),
        ("LunarLanderContinuous-v3", "noisy", "continuous"),
        ("Pusher-v5", "random", "continuous"),
        ("metaworld/reach-v3", "noisy", "continuous"),
    ],
)
def test_tiny_collection_from_each_simulator_family(tmp_path, env, policy, kind):
    info = collect(tiny(env, policy=policy), tmp_path, show_progress=False)
    assert info is not None and info.action_space.kind == kind
    assert info.num_episodes == 2 and info.num_samples >= 2 and info.resolution == [32, 32]
    clips = [c for url in shard_paths(tmp_path, info) for c in iter_clips(url, info.action_space)]
    assert len(clips) == info.num_samples
    for c in clips:
        assert c.frames.shape == (8, 32, 32, 3) and c.frames.dtype == np.uint8
        assert c.frames.std() > 1  # real rendered images, not blank
        assert np.abs(np.diff(c.frames.astype(int), axis=0)).sum() > 0  # something moves
        assert c.meta.source == env and c.rewards.dtype == np.float32
        assert c.meta.task == ("reach" if env.startswith("metaworld/") else None)  # task text for conditioning
    reloaded = load_dataset_info(tmp_path)
    assert reloaded.stats["frames"] == info.num_samples * 8


def test_clip_starts_cover_the_episode_end():
    assert clip_starts(20, 8, 8) == [0, 8, 12]
    assert clip_starts(16, 8, 8) == [0, 8]
    assert clip_starts(7, 8, 8) == []
    assert clip_starts(10, 4, 3) == [0, 3, 6]


def test_collection_is_deterministic_and_parallel_equals_serial(tmp_path):
    a = collect(tiny("ALE/Pong-v5", episodes=4, workers=1), tmp_path / "a", show_progress=False)
    b = collect(tiny("ALE/Pong-v5", episodes=4, workers=2), tmp_path / "b", show_progress=False)
    assert [s.path for s in a.shards] == [s.path for s in b.shards]
    for s in a.shards:
        assert (tmp_path / "a" / s.path).read_bytes() == (tmp_path / "b" / s.path).read_bytes()


def test_terminations_end_episodes(tmp_path):
    info = collect(tiny("CartPole-v1", episodes=3, max_episode_steps=200, clip_len=4), tmp_path, show_progress=False)
    clips = [c for url in shard_paths(tmp_path, info) for c in iter_clips(url)]
    assert info.stats["terminations"] == 3  # random CartPole falls well within 200 steps, once per episode
    for c in clips:
        t = np.flatnonzero(c.terminations)
        assert len(t) == 0 or t[0] == len(c.terminations) - 1  # a termination is always a clip's last step


def test_killed_collection_resumes_to_the_same_result(tmp_path):
    args = ["data", "collect", "--env", "CartPole-v1", "--policy", "scripted", "--episodes", "6",
            "--episodes-per-shard", "1", "--workers", "1", "--size", "32", "--max-episode-steps", "300",
            "--clip-len", "8", "--no-progress"]
    out = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, "-m", "wm_video", *args, "--out", str(out)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 120
    while len(list(out.glob("*.tar.json"))) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = sorted(out.glob("*.tar.json"))
    assert 2 <= len(done) < 6 and not (out / "dataset.json").exists()
    mtimes = {p: p.stat().st_mtime_ns for p in done}
    assert main([*args, "--out", str(out)]) == 0
    assert all(p.stat().st_mtime_ns == m for p, m in mtimes.items())  # finished shards were not redone
    assert not list(out.glob(".shard-*"))  # no temp files left behind
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    for shard in sorted(out.glob("shard-*.tar")):
        assert shard.read_bytes() == (tmp_path / "clean" / shard.name).read_bytes()


def test_rerun_with_other_settings_is_refused(tmp_path):
    collect(tiny("CartPole-v1"), tmp_path, show_progress=False)
    with pytest.raises(ValueError, match=r"other settings.*clip_len"):
        collect(tiny("CartPole-v1", clip_len=4), tmp_path, show_progress=False)


def test_shard_range_leaves_the_rest_for_other_tasks(tmp_path):
    assert collect(tiny("CartPole-v1", episodes=3, shard_range=[0, 2]), tmp_path, show_progress=False) is None
    assert len(list(tmp_path.glob("*.tar.json"))) == 2 and not (tmp_path / "dataset.json").exists()
    info = collect(tiny("CartPole-v1", episodes=3, shard_range=[2, 3]), tmp_path, show_progress=False)
    assert info is not None and info.num_episodes == 3


def test_unknown_env_says_how_to_list_ids(capsys):
    assert main(["data", "collect", "--env", "ALE/Pongg-v5", "--out", "/tmp/x-never"]) == 2
    err = capsys.readouterr().err
    assert "wm-video data envs" in err and "ALE/Pong-v5" in err


def test_scripted_policy_where_there_is_none_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="scripted"):
        collect(tiny("ALE/Pong-v5", policy="scripted"), tmp_path, show_progress=False)


def test_missing_sim_extra_names_the_extra(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "ale_py", None)  # as if ale-py were not installed
    with pytest.raises(ImportError, match=r"'sim' extra"):
        collect(tiny("ALE/Pong-v5"), tmp_path, show_progress=False)


def test_unwritable_output_is_refused_before_collecting(tmp_path):
    (tmp_path / "file").write_text("x")
    assert main(["data", "collect", "--env", "CartPole-v1", "--out", str(tmp_path / "file" / "out")]) == 2


def test_inspect_writes_a_contact_sheet_and_gif(tmp_path, capsys):
    collect(tiny("ALE/Pong-v5"), tmp_path / "d", show_progress=False)
    assert main(["data", "inspect", str(tmp_path / "d"), "--gif", str(tmp_path / "c.gif"), "--clips", "3"]) == 0
    out = capsys.readouterr().out
    assert "samples" in out and "action freq" in out and "contact sheet" in out
    from PIL import Image

    sheet = Image.open(tmp_path / "d" / "contact_sheet.png")
    assert sheet.size[0] > 8 * 32 and sheet.size[1] > 3 * 32
    assert Image.open(tmp_path / "c.gif").n_frames == 8


def test_every_data_yaml_is_collectable(tmp_path):
    for path in sorted(Path("configs/data").glob("*.yaml")):
        cfg = load_config(yaml_path=path, overrides=["episodes=1", "max_episode_steps=16", "clip_len=8", "size=32",
                                                     "workers=1"])
        info = collect(cfg, tmp_path / path.stem, show_progress=False)
        assert info is not None and info.num_samples >= 2, path


def test_a_task_leaves_other_tasks_temp_files_alone(tmp_path):
    # Array tasks share the output folder: task B must not delete the shard task A is writing right now,
    # but does clear the leftovers of its own shards from a killed run.
    tmp_path.mkdir(exist_ok=True)
    other = tmp_path / ".shard-000000.tar.tmp-4242"
    mine = tmp_path / ".shard-000001.tar.tmp-4242"
    other.write_bytes(b"in progress")
    mine.write_bytes(b"left by a killed run")
    collect(tiny("CartPole-v1", episodes=2, shard_range=[1, 2]), tmp_path, show_progress=False)
    assert other.exists() and not mine.exists()


def test_episode_stats_in_dataset_json(tmp_path, capsys):
    info = collect(tiny("metaworld/reach-v3", policy="scripted", max_episode_steps=150), tmp_path / "mw",
                   show_progress=False)
    eps = info.stats["episodes"]
    assert eps["count"] == 2 and eps["length_mean"] == 150 and eps["success_rate"] == 1.0  # the expert reaches
    info = collect(tiny("CartPole-v1"), tmp_path / "cp", show_progress=False)
    assert info.stats["episodes"]["success_rate"] is None  # CartPole has no success flag
    assert main(["data", "inspect", str(tmp_path / "mw")]) == 0
    assert "success rate 100%" in capsys.readouterr().out


@pytest.fixture
def small_disk(tmp_path):
    """A real 400 kB file system (tmpfs), so 'disk full' is the kernel's ENOSPC, not a mock."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=400k", "tmpfs", str(mnt)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (needs root)")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=False)


def test_full_disk_is_a_clear_error_and_leaves_no_partial_shard(small_disk, capsys):
    args = ["data", "collect", "--env", "ALE/Pong-v5", "--episodes", "4", "--episodes-per-shard", "1",
            "--max-episode-steps", "120", "--size", "32", "--clip-len", "8", "--workers", "1", "--no-progress",
            "--out", str(small_disk / "d")]
    assert main(args) == 2
    assert "no space left on device" in capsys.readouterr().err
    left = sorted(p.name for p in (small_disk / "d").iterdir())
    assert not [n for n in left if ".tmp-" in n] and "dataset.json" not in left
    for shard in (small_disk / "d").glob("shard-*.tar"):  # every shard left behind is whole and readable
        info_side = json.loads(Path(f"{shard}.json").read_text())
        assert sum(1 for _ in iter_clips(str(shard))) == info_side["record"]["samples"]
    subprocess.run(["mount", "-o", "remount,size=8m", str(small_disk)], check=True)
    assert main(args) == 0  # with room again, the rerun finishes the job
    assert load_dataset_info(small_disk / "d").num_episodes == 4
