"""Episode-clip shard format: what is written is what is read, for every storage and action kind."""

from __future__ import annotations

import errno
import json

import numpy as np
import pytest
from conftest import action_space, make_clip, write_dataset

from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.schema import SCHEMA_VERSION, SchemaError
from wm_video.data.writer import ShardWriter, read_sidecar
from wm_video.utils.atomic import DataWriteError


@pytest.mark.parametrize("storage", ["raw", "png", "mp4"])
@pytest.mark.parametrize("kind", ["discrete", "continuous", "none"])
def test_round_trip(tmp_path, storage, kind):
    written = write_dataset(tmp_path, shards=2, clips_per_shard=3, storage=storage, kind=kind, t=4, size=16)
    info = load_dataset_info(tmp_path)
    assert info.num_samples == 6 and info.frame_storage == storage and info.schema_version == SCHEMA_VERSION
    read = [c for url in shard_paths(tmp_path, info) for c in iter_clips(url, info.action_space)]
    assert [c.key for c in read] == [c.key for c in written]
    for a, b in zip(written, read, strict=True):
        if storage == "mp4":  # yuv444p H.264 at crf 10: close, not exact (random noise is its worst case)
            assert np.abs(a.frames.astype(int) - b.frames.astype(int)).mean() < 8
        else:
            np.testing.assert_array_equal(a.frames, b.frames)
        for name in ("actions", "rewards", "terminations"):
            x, y = getattr(a, name), getattr(b, name)
            assert (x is None) == (y is None)
            if x is not None:
                assert x.dtype == y.dtype
                np.testing.assert_array_equal(x, y)
        assert b.meta.fps == 15.0 and b.meta.schema_version == SCHEMA_VERSION
    if kind == "none":
        assert read[0].meta.fields == []  # action-free clips carry frames only


def test_mp4_crf0_is_near_lossless(tmp_path):
    from wm_video.data.codecs import decode_frames, encode_frames

    frames = make_clip(0, 0, t=6, size=32).frames
    name, data = encode_frames(frames, "mp4", crf=0)
    assert np.abs(decode_frames(name, data).astype(int) - frames.astype(int)).max() <= 2  # rgb<->yuv rounding


def test_dataset_stats_merge_across_shards(tmp_path):
    clips = write_dataset(tmp_path, shards=3, clips_per_shard=2, kind="continuous")
    stats = load_dataset_info(tmp_path).stats
    acts = np.concatenate([c.actions for c in clips])
    np.testing.assert_allclose(stats["actions"]["mean"], acts.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["actions"]["std"], acts.std(0), rtol=1e-4, atol=1e-6)
    assert stats["terminations"] == sum(int(c.terminations.sum()) for c in clips)


def test_writer_rejects_bad_clips_and_names_field(tmp_path):
    clip = make_clip(0, 0, kind="continuous")
    clip.actions[1, 0] = np.nan
    with pytest.raises(SchemaError, match=r"actions.*NaN"):
        with ShardWriter(tmp_path / "s.tar", action_space("continuous")) as w:
            w.write(clip)
    assert list(tmp_path.iterdir()) == []  # the temp file went with the error
    clip = make_clip(0, 0, kind="discrete")
    clip.rewards = clip.rewards[:2]
    with pytest.raises(SchemaError, match="'rewards'"):
        with ShardWriter(tmp_path / "s.tar", action_space("discrete")) as w:
            w.write(clip)
    assert list(tmp_path.iterdir()) == []


def test_shard_is_complete_only_after_close(tmp_path):
    w = ShardWriter(tmp_path / "s.tar", action_space("discrete"))
    w.write(make_clip(0, 0))
    assert not (tmp_path / "s.tar").exists() and read_sidecar(tmp_path / "s.tar") is None
    w.close()
    assert read_sidecar(tmp_path / "s.tar")["record"]["samples"] == 1


def test_full_disk_leaves_no_partial_shard(tmp_path, monkeypatch):
    w = ShardWriter(tmp_path / "s.tar", action_space("discrete"))

    def full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(w, "_file", type("Full", (), {"write": full, "close": lambda self: None})())
    with pytest.raises(DataWriteError, match="no space left"):
        w.write(make_clip(0, 0))
    assert list(tmp_path.iterdir()) == []


def test_unwritable_output_is_a_clear_error(tmp_path):
    import os

    if os.geteuid() == 0:  # root ignores permissions: use a path under a regular file instead
        (tmp_path / "file").write_text("x")
        target = tmp_path / "file" / "out"
    else:
        (tmp_path / "ro").mkdir(mode=0o500)
        target = tmp_path / "ro" / "out"
    from wm_video.data.writer import ensure_writable_dir

    with pytest.raises(DataWriteError, match="not writable"):
        ensure_writable_dir(target)


def test_dataset_json_errors_name_file_and_field(tmp_path):
    write_dataset(tmp_path, shards=1, clips_per_shard=1)
    d = json.loads((tmp_path / "dataset.json").read_text())
    d["frame_storage"] = "jpeg"
    (tmp_path / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(SchemaError, match=r"dataset.json.*frame_storage"):
        load_dataset_info(tmp_path)
    d["frame_storage"], d["schema_version"] = "raw", SCHEMA_VERSION + 1
    (tmp_path / "dataset.json").write_text(json.dumps(d))
    with pytest.raises(SchemaError, match="newer"):
        load_dataset_info(tmp_path)
    with pytest.raises(FileNotFoundError, match="wm-video dataset"):
        load_dataset_info(tmp_path / "nothing")


def test_shards_are_standard_tars_that_webdataset_reads(tmp_path):
    import tarfile

    import webdataset as wds

    written = write_dataset(tmp_path, shards=1, clips_per_shard=3)
    with tarfile.open(tmp_path / "shard-000000.tar") as tar:
        names = tar.getnames()
    assert names[:5] == [f"{written[0].key}.{m}" for m in ("frames.npy", "meta.json", "actions.npy", "rewards.npy",
                                                            "terminations.npy")]
    samples = list(wds.WebDataset(str(tmp_path / "shard-000000.tar"), shardshuffle=False))
    assert [s["__key__"] for s in samples] == [c.key for c in written]
    assert json.loads(samples[0]["meta.json"])["episode_id"] == written[0].meta.episode_id


def test_malformed_samples_name_the_field(tmp_path):
    from wm_video.data.reader import decode_sample
    from wm_video.data.writer import npy_bytes

    clip = make_clip(0, 0)
    meta = {**vars(clip.meta), "fields": ["actions", "velocity"]}
    sample = {"__key__": clip.key, "__url__": "s.tar", "frames.npy": npy_bytes(clip.frames),
              "meta.json": json.dumps(meta).encode(), "actions.npy": npy_bytes(clip.actions)}
    with pytest.raises(SchemaError, match=r"s.tar: sample ep0000_000000.*'fields'.*velocity"):
        decode_sample(sample)
    meta["fields"] = ["actions", "rewards"]
    sample["meta.json"] = json.dumps(meta).encode()
    with pytest.raises(SchemaError, match=r"'rewards.npy' listed in meta.json but missing"):
        decode_sample(sample)
    sample["rewards.npy"] = b"\x93NUMPY garbage"
    with pytest.raises(SchemaError, match=r"field 'rewards.npy' could not be decoded"):
        decode_sample(sample)
