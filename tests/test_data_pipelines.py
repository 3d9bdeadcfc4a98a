"""Video-folder pipeline end to end, on tiny videos made with PyAV: bad files marked and counted while the run
goes on, every input accounted for, idempotent stages, filters, shard ranges, the CLI verb and the SLURM array."""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest
from lerobot_fixtures import marker, textured_frames, write_audio_only, write_video
from slurm_cluster import Cluster, missing

from wm_video.cli import main
from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.pipeline import PipelineConfig, VideoSource, run_pipeline
from wm_video.data.pipeline.clip import SquareResizer, resample, square_geometry
from wm_video.data.pipeline.filter import _NearIndex
from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.schema import SchemaError

ROOT = Path(__file__).resolve().parent.parent
CFG = dict(size=32, clip_len=8, workers=1)
# input -> (status, code) after the whole pipeline
EXPECTED = {
    "a.mp4": ("ok", None),
    "b.webm": ("ok", None),
    "c.mkv": ("ok", None),
    "d.avi": ("ok", None),
    "sub/a_copy.mp4": ("filtered", "all_duplicate"),  # byte copy of a.mp4
    "a_reencoded.mp4": ("filtered", "all_duplicate"),  # a.mp4's frames at another quality: near duplicates
    "static.mp4": ("filtered", "all_static"),
    "short.mp4": ("filtered", "too_short"),
    "empty.mp4": ("broken", "zero_length"),
    "corrupt.mp4": ("broken", "corrupt"),
    "audio_only.mp4": ("broken", "no_video_stream"),
    "truncated.mkv": ("broken", "truncated"),
}


@pytest.fixture(scope="module")
def videos(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("videos")
    a = textured_frames(40, seed=1)
    write_video(d / "a.mp4", a)
    write_video(d / "b.webm", textured_frames(30, seed=2), codec="libvpx-vp9")
    write_video(d / "c.mkv", textured_frames(30, seed=3))
    write_video(d / "d.avi", textured_frames(30, seed=4), codec="mpeg4")
    (d / "sub").mkdir()
    shutil.copy(d / "a.mp4", d / "sub/a_copy.mp4")
    write_video(d / "a_reencoded.mp4", a, crf=23)  # close enough that every clip stays within the hash radius
    write_video(d / "static.mp4", textured_frames(30, seed=5, speed=0))
    write_video(d / "short.mp4", textured_frames(5, seed=6))
    (d / "empty.mp4").write_bytes(b"")
    (d / "corrupt.mp4").write_bytes(np.random.default_rng(0).integers(0, 256, 4000, dtype=np.uint8).tobytes())
    write_audio_only(d / "audio_only.mp4")
    whole = write_video(tmp_path_factory.mktemp("full") / "long.mkv", textured_frames(60, seed=7)).read_bytes()
    (d / "truncated.mkv").write_bytes(whole[: len(whole) // 2])
    (d / "notes.txt").write_text("not a video: ignored, not an input")
    return d


def files(root: Path) -> dict[str, tuple[str, int]]:
    """Every file under ``root``: (SHA-1 of its bytes, mtime in ns)."""
    return {p.relative_to(root).as_posix(): (hashlib.sha1(p.read_bytes()).hexdigest(), p.stat().st_mtime_ns)
            for p in sorted(root.rglob("*")) if p.is_file()}


def jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_every_input_is_accounted_for_and_bad_files_do_not_stop_the_run(videos, tmp_path):
    info = run_pipeline(VideoSource(str(videos)), PipelineConfig(**CFG), tmp_path, show_progress=False)
    final = {r["input"]: r for r in jsonl(tmp_path / "manifest.jsonl")}
    assert set(final) == set(EXPECTED)  # notes.txt is not a video input
    for name, (status, code) in EXPECTED.items():
        assert (final[name]["status"], final[name].get("code")) == (status, code), final[name]
        assert status == "ok" or final[name]["reason"]
    assert "streams: audio" in final["audio_only.mp4"]["reason"]
    assert final["sub/a_copy.mp4"]["clips_dropped"] == {"duplicate": 5}
    # each stage's own manifest accounts for every input too
    for stage in ("probe", "clips", "filter"):
        assert {r["input"] for r in jsonl(tmp_path / f"manifest/{stage}.jsonl")} == set(EXPECTED)
    filt = {r["input"]: r for r in jsonl(tmp_path / "manifest/filter.jsonl")}
    a_id = filt["a.mp4"]["id"]
    assert all(c["of"] == f"{a_id}@{c['start']}" for c in filt["sub/a_copy.mp4"]["clips"])
    assert all(c["near"] and c["of"].startswith(a_id) for c in filt["a_reencoded.mp4"]["clips"])
    counts = info.source["counts"]
    assert counts["inputs"] == len(EXPECTED) and counts["ok"] == 4
    assert counts["broken"] == {"corrupt": 1, "no_video_stream": 1, "truncated": 1, "zero_length": 1}
    assert counts["filtered"] == {"all_duplicate": 2, "all_static": 1, "too_short": 1}
    # 40 frames -> 5 clips of 8; 30 -> 4 (the last aligned to the end)
    assert counts["clips"]["kept"] == info.num_samples == 5 + 4 + 4 + 4
    assert info.action_space.kind == "none" and info.num_episodes == 4 and info.resolution == [32, 32]
    clips = [c for url in shard_paths(tmp_path, info) for c in iter_clips(url, info.action_space)]
    assert len(clips) == info.num_samples
    for c in clips:
        assert c.frames.shape == (8, 32, 32, 3) and c.actions is None and c.meta.source in EXPECTED
    # frames come out in order: the marker patch steps by one level per source frame (10 fps in, 10 out)
    first = next(c for c in clips if c.meta.source == "a.mp4" and c.meta.clip_start == 8)
    assert np.abs(marker(first.frames) - [20 + 10 * (8 + i) for i in range(8)]).max() < 6
    batch = next(iter(ClipLoader(tmp_path, LoaderConfig(batch_size=4, num_workers=0, shuffle_buffer=0))))
    assert tuple(batch["frames"].shape) == (4, 8, 3, 32, 32)


def test_stages_run_one_by_one_rerun_idempotently_and_match_a_parallel_one_shot_run(videos, tmp_path):
    staged = tmp_path / "staged"
    for stage in ("probe", "clip", "filter", "shard", "stats"):
        run_pipeline(VideoSource(str(videos)), PipelineConfig(**CFG), staged, [stage], show_progress=False)
        before = files(staged)
        run_pipeline(VideoSource(str(videos)), PipelineConfig(**CFG), staged, [stage], show_progress=False)
        after = files(staged)
        # same bytes; nothing but dataset.json rewritten (its writer always writes, with the same content)
        assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}, stage
        assert [k for k in after if after[k][1] != before[k][1]] in ([], ["dataset.json"]), stage
    parallel = tmp_path / "parallel"
    run_pipeline(VideoSource(str(videos)), PipelineConfig(**{**CFG, "workers": 2}), parallel, show_progress=False)
    assert {k: v[0] for k, v in files(parallel).items()} == {k: v[0] for k, v in files(staged).items()}


def small_folder(root: Path, n: int = 3) -> Path:
    root.mkdir()
    for i in range(n):
        write_video(root / f"v{i}.mp4", textured_frames(24, seed=20 + i))
    return root


def test_a_rerun_redoes_only_missing_work(tmp_path):
    src = small_folder(tmp_path / "src")
    cfg = PipelineConfig(**CFG, clips_per_shard=4)
    info = run_pipeline(VideoSource(str(src)), cfg, tmp_path / "out", show_progress=False)
    assert len(info.shards) == 3  # 3 videos x 3 clips, 4 per shard
    before = files(tmp_path / "out")
    work = sorted((tmp_path / "out/work").glob("*.frames"))[1]
    work.unlink()
    stale = work.with_name(f".{work.name}.tmp-99999")  # what a killed clip worker leaves
    stale.write_bytes(b"partial")
    (tmp_path / "out/shard-000001.tar.json").unlink()  # an unfinished shard: no sidecar
    run_pipeline(VideoSource(str(src)), cfg, tmp_path / "out", show_progress=False)
    assert not stale.exists()
    after = files(tmp_path / "out")
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}
    redone = {k for k in after if after[k][1] != before[k][1]}
    assert redone == {f"work/{work.name}", "shard-000001.tar", "shard-000001.tar.json", "dataset.json"}


def test_shard_ranges_make_one_dataset_and_a_changed_plan_is_refused(tmp_path):
    src = small_folder(tmp_path / "src")
    cfg = dict(**CFG, clips_per_shard=2)
    out = tmp_path / "out"
    run_pipeline(VideoSource(str(src)), PipelineConfig(**cfg), out, ["probe", "clip", "filter"], show_progress=False)
    assert run_pipeline(VideoSource(str(src)), PipelineConfig(**cfg, shard_range=[0, 2]), out, ["shard", "stats"],
                        show_progress=False) is None  # other shards left to other tasks: no dataset.json yet
    assert sorted(p.name for p in out.glob("*.tar")) == ["shard-000000.tar", "shard-000001.tar"]
    assert not (out / "dataset.json").exists()
    info = run_pipeline(VideoSource(str(src)), PipelineConfig(**cfg, shard_range=[2, 99]), out, ["shard", "stats"],
                        show_progress=False)
    assert len(info.shards) == 5 and info.num_samples == 9
    write_video(src / "a_new.mp4", textured_frames(24, seed=99))  # sorts first: every shard would change
    with pytest.raises(SchemaError, match="other clips than the current plan"):
        run_pipeline(VideoSource(str(src)), PipelineConfig(**cfg), out, show_progress=False)


def test_changed_settings_are_refused_and_a_list_file_marks_missing_files(tmp_path):
    small_folder(tmp_path / "src", n=1)
    listing = tmp_path / "list.txt"
    listing.write_text(f"# videos\nsrc/v0.mp4\n\n{tmp_path / 'gone.mp4'}\n")
    run_pipeline(VideoSource(str(listing)), PipelineConfig(**CFG), tmp_path / "out", show_progress=False)
    final = {r["input"]: r for r in jsonl(tmp_path / "out/manifest.jsonl")}
    assert final["src/v0.mp4"]["status"] == "ok"
    assert (final[str(tmp_path / "gone.mp4")]["status"], final[str(tmp_path / "gone.mp4")]["code"]) == ("broken",
                                                                                                          "missing")
    with pytest.raises(SchemaError, match="size: 32 there vs 48 now"):
        run_pipeline(VideoSource(str(listing)), PipelineConfig(**{**CFG, "size": 48}), tmp_path / "out",
                     show_progress=False)


def test_resampling_picks_the_nearest_frame():
    def pick(n: int, src: float, dst: float) -> list[int]:
        return list(resample(((i / src, i) for i in range(n)), dst, 1 / src))

    assert pick(30, 30, 15) == list(range(0, 30, 2))  # every other frame
    assert pick(3, 10, 20) == [0, 0, 1, 1, 2, 2]  # going up repeats frames; ties keep the earlier one
    assert pick(50, 25, 10) == [round(k * 2.5 - 1e-9) for k in range(20)]  # 2 s at 25 fps -> 20 frames at 10
    assert pick(0, 30, 15) == []


def test_resize_keeps_the_centre_square():
    import av

    assert square_geometry(80, 40, 20) == (40, 20, 10, 0)
    assert square_geometry(40, 80, 20) == (20, 40, 0, 10)
    wide = np.zeros((40, 80, 3), np.uint8)
    wide[:, :20] = (255, 0, 0)  # left quarter red, middle half green, right quarter blue
    wide[:, 20:60] = (0, 255, 0)
    wide[:, 60:] = (0, 0, 255)
    out = SquareResizer(20)(av.VideoFrame.from_ndarray(wide, format="rgb24"))
    assert out.shape == (20, 20, 3) and out.dtype == np.uint8
    assert out[..., 1].min() > 200 and out[..., 0].max() < 60 and out[..., 2].max() < 60  # only the green middle


def test_near_duplicate_search_is_exact_within_the_radius():
    rng = np.random.default_rng(0)
    index = _NearIndex(max_bits=8)
    base = int(rng.integers(0, 2**62)) << 130 | int(rng.integers(0, 2**62)) << 64 | int(rng.integers(0, 2**62))
    index.add(base, "x", "x@0")
    for flips in (0, 1, 5, 8, 9, 20):
        h = base
        for bit in rng.choice(192, size=flips, replace=False):
            h ^= 1 << int(bit)
        assert (index.find(h, "y") == "x@0") == (flips <= 8), flips
        assert index.find(h, "x") is None  # the same input's clips are never near duplicates of each other


def test_cli_verb_and_its_errors(videos, tmp_path, capsys):
    src = small_folder(tmp_path / "src", n=2)
    out = tmp_path / "out"
    args = ["data", "videos", "--src", str(src), "--out", str(out), "--size", "32", "--clip-len", "8", "--stride", "4",
            "--storage", "mp4", "--workers", "1", "--no-progress"]
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "inputs 2: ok 2" in text and "samples 10" in text  # 24 frames, clips of 8 every 4: 5 per video
    info = load_dataset_info(out)
    assert info.frame_storage == "mp4" and info.source["settings"]["stride"] == 4
    assert main(["data", "inspect", str(out)]) == 0
    assert main(["data", "videos", "--src", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o2")]) == 2
    assert "no such folder or list file" in capsys.readouterr().err


def test_both_verbs_document_every_flag(capsys):
    from wm_video.cli import build_parser

    parser = build_parser()
    for verb, flags in (("videos", ["--src", "--fps", "--dedup {none,exact,near}", "--stages", "--shard-range"]),
                        ("lerobot", ["--camera", "--action-key", "--state-key", "--reward-key", "--done-key"])):
        with pytest.raises(SystemExit):
            parser.parse_args(["data", verb, "--help"])
        text = capsys.readouterr().out
        assert all(f in text for f in flags), verb
        assert f"wm-video data {verb} --data" in text  # the example from the docstring


@pytest.mark.skipif(missing() is not None, reason=missing() or "")
def test_shard_stage_as_a_slurm_array(tmp_path):
    src = small_folder(tmp_path / "src")
    out = tmp_path / "out"
    flags = ["--size", "32", "--clip-len", "8", "--clips-per-shard", "2", "--workers", "1", "--no-progress"]
    assert main(["data", "videos", "--src", str(src), "--out", str(out), *flags, "--stages", "probe", "clip",
                 "filter"]) == 0
    (tmp_path / "logs").mkdir()
    cluster = Cluster(tmp_path / "slurm")
    cluster.start()
    try:
        job = cluster.sbatch("--array=0-2", "--cpus-per-task=1", "--mem=1000", str(ROOT / "slurm/data_shards.sbatch"),
                             "videos", str(src), str(out), "2", *flags, cwd=tmp_path,
                             env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
        cluster.wait(job, timeout=120)
        logs = "\n".join(p.read_text() for p in sorted((tmp_path / "logs").glob("*.out")))
        assert set(cluster.job_states(job)) == {"COMPLETED"}, logs
    finally:
        cluster.stop()
    info = load_dataset_info(out)  # written by the task that completed the last shard
    assert len(info.shards) == 5 and info.num_samples == 9
