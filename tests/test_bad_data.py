"""No silent wrong data: every way a dataset can be broken ends in an error naming the file and field, or in a
skip that is counted (in clips, against dataset.json) and named. One tiny real dataset per case, broken one way."""

from __future__ import annotations

import io
import json
import logging
import re
import tarfile

import numpy as np
import pytest
from conftest import action_space, write_dataset

from wm_video.cli import _user_errors
from wm_video.data.bad_clips import DataError
from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.reader import (
    ClipChecks,
    DatasetMismatchError,
    iter_clips,
    iter_raw_samples,
    load_dataset_info,
    shard_paths,
)
from wm_video.data.schema import SchemaError
from wm_video.data.writer import ShardWriter, npy_bytes, tar_sample

SHARDS, CLIPS = 3, 4  # clips per shard
TOTAL = SHARDS * CLIPS
BROKEN = "shard-000001.tar"


@pytest.fixture
def ds(tmp_path):
    """Continuous actions in [-1, 1] (the action space's bounds), rewards, terminations; 8x8 frames, 4 per clip."""
    write_dataset(tmp_path, shards=SHARDS, clips_per_shard=CLIPS, kind="continuous")
    return tmp_path


def user_error(exc: BaseException) -> str:
    """The CLI prints these as one line: the type must be one it catches, the message one line."""
    assert isinstance(exc, _user_errors()), f"{type(exc).__name__} is not among cli._user_errors()"
    assert "\n" not in str(exc)
    return str(exc)


def load(root, **kw) -> tuple[list[str], ClipLoader]:
    loader = ClipLoader(root, LoaderConfig(**{"batch_size": 2, "num_workers": 0, "shuffle_buffer": 0,
                                              "drop_last": False, **kw}))
    return [k for batch in loader for k in batch["key"]], loader


def edit_json(root, edit) -> None:
    """``edit(d)`` changes ``d`` in place (returns None) or returns what to write instead: an object, text, bytes."""
    d = json.loads((root / "dataset.json").read_text())
    out = edit(d)
    if isinstance(out, bytes):
        (root / "dataset.json").write_bytes(out)
    else:
        (root / "dataset.json").write_text(out if isinstance(out, str) else json.dumps(d if out is None else out))


DELETE = object()


def put(path: str, value):
    """An edit setting ``d[a][b]...`` (dotted path, integer parts index lists) to ``value``."""
    def edit(d):
        *parents, last = [int(p) if p.isdigit() else p for p in path.split(".")]
        for p in parents:
            d = d[p]
        if value is DELETE:
            del d[last]
        else:
            d[last] = value
    return edit

# case -> (edit of dataset.json, field the error names (None: the file as a whole), message pattern)
INFO_CASES = {
    "top-level list": (lambda d: [d], None, r"expected a JSON object \{\.\.\.\} at the top level, got a list"),
    "top-level number": (lambda d: 3, None, r"expected a JSON object .* got a number"),
    "top-level string": (lambda d: '"dataset"', None, r"expected a JSON object .* got a string"),
    "invalid json": (lambda d: '{"format": ', None, r"not valid JSON"),
    "not utf-8": (lambda d: b'{"format": "\xff"}', None, r"not valid JSON"),
    "resolution zero": (put("resolution", [0, 8]), "resolution", r"two integers > 0, got \[0, 8\]"),
    "resolution negative": (put("resolution", [8, -8]), "resolution", r"two integers > 0"),
    "resolution one value": (put("resolution", [8]), "resolution", r"must be \[h, w\]"),
    "resolution float": (put("resolution", [8.5, 8]), "resolution", r"two integers > 0"),
    "clip_len zero": (put("clip_len", 0), "clip_len", r"must be >= 1, got 0"),
    "clip_len negative": (put("clip_len", -4), "clip_len", r"integer >= 0, got -4"),
    "clip_len missing": (put("clip_len", DELETE), "clip_len", r"missing"),
    "fps nan": (put("fps", float("nan")), "fps", r"finite number > 0, got nan"),
    "fps inf": (put("fps", float("inf")), "fps", r"finite number > 0, got inf"),
    "fps zero": (put("fps", 0), "fps", r"finite number > 0"),
    "fps text": (put("fps", "15"), "fps", r"finite number > 0, got '15'"),
    "negative action std": (put("stats.actions.std.1", -0.5), r"stats.actions.std[1]", r"cannot be negative"),
    "negative reward std": (put("stats.rewards.std.0", -1.0), r"stats.rewards.std[0]", r"cannot be negative"),
    "nan action mean": (put("stats.actions.mean.0", float("nan")), "stats.actions.mean", r"finite numbers"),
    "action stats of another dim": (put("stats.actions.std", [1.0, 1.0]), "stats.actions", r"different lengths"),
    "action min above max": (put("stats.actions.min.2", 5.0), "stats.actions.min[2]", r"exceeds"),
    "negative shard samples": (put("shards.1.samples", -4), "shards[1].samples", r"integer >= 0, got -4"),
    "negative shard episodes": (put("shards.0.episodes", -1), "shards[0].episodes", r"integer >= 0"),
    "shard without counts": (put("shards.0.frames", DELETE), "shards[0]", r"path, samples, frames and episodes"),
    "negative stats frames": (put("stats.frames", -16), "stats.frames", r"integer >= 0"),
    "negative terminations": (put("stats.terminations", -1), "stats.terminations", r"integer >= 0"),
    "negative stats count": (put("stats.rewards.count", -48), "stats.rewards.count", r"integer >= 0"),
    "negative num_samples": (put("num_samples", -12), "num_samples", r"integer >= 0"),
    "num_samples not the shards' sum": (put("num_samples", 99), "num_samples", r"add up to 12"),
    "shard path ../": (put("shards.0.path", "../shard-000000.tar"), "shards[0].path", r"outside the dataset folder"),
    "shard path a/../../": (put("shards.2.path", "a/../../x.tar"), "shards[2].path", r"outside the dataset folder"),
    "shard path absolute": (put("shards.0.path", "/etc/passwd"), "shards[0].path", r"outside the dataset folder"),
    "shard path windows drive": (put("shards.0.path", "C:\\data\\x.tar"), "shards[0].path", r"outside the"),
    "shard path windows ..": (put("shards.0.path", "..\\x.tar"), "shards[0].path", r"outside the dataset folder"),
    "shard path empty": (put("shards.0.path", ""), "shards[0].path", r"non-empty string"),
    "shard listed twice": (put("shards.1.path", "shard-000000.tar"), "shards[1].path", r"listed twice"),
    "shards not a list": (put("shards", {"path": "x.tar"}), "shards", r"must be a list, got an object"),
    "action space dim zero": (put("action_space.dim", 0), "action_space", r"dim >= 1, got dim=0"),
    "action space unknown key": (put("action_space.size", 3), "action_space", r"unexpected keyword"),
    "action low above high": (put("action_space.low", [2.0] * 3), "action_space", r"'low' .* exceeds 'high'"),
    "stats not an object": (put("stats", [1, 2]), "stats", r"must be an object, got a list"),
    "schema_version text": (put("schema_version", "1"), "schema_version", r"integer >= 0"),
}


@pytest.mark.parametrize("case", list(INFO_CASES))
def test_bad_dataset_json_is_refused_naming_file_and_field(ds, case):
    edit, field, pattern = INFO_CASES[case]
    edit_json(ds, edit)
    with pytest.raises(SchemaError) as e:
        load_dataset_info(ds)
    msg = user_error(e.value)
    assert msg.startswith(f"{ds / 'dataset.json'}: ")
    if field is not None:
        assert f"field '{field}'" in msg
    assert re.search(pattern, msg), msg


def test_the_untouched_dataset_loads(ds):
    info = load_dataset_info(ds)
    assert info.num_samples == TOTAL and info.resolution == [8, 8]


@pytest.mark.parametrize("field, value, shown", [("resolution", [16, 16], "has frames of 8x8"),
                                                 ("resolution", [8, 4], "has frames of 8x8"),
                                                 ("clip_len", 8, "has 4 frames")])
@pytest.mark.parametrize("num_workers", [0, 2])
def test_dataset_json_that_describes_other_data_stops_at_the_first_clip(ds, field, value, shown, num_workers):
    edit_json(ds, put(field, value))
    with pytest.raises(DatasetMismatchError) as e:  # an error, not a skip: every clip would be skipped
        load(ds, num_workers=num_workers)
    msg = user_error(e.value)
    assert re.search(rf"{re.escape(str(ds / 'dataset.json'))}: field '{field}' is .* but .*shard-00000\d\.tar: "
                     rf"sample ep000\d_\d+ {shown}", msg), msg


def _cut_mid_member(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 + 100])


def _cut_at_sample(path):  # a tar cut between samples reads as a clean, shorter archive
    with tarfile.open(path) as tar:
        starts = [m.offset for m in tar.getmembers() if m.name.endswith("frames.npy")]
    path.write_bytes(path.read_bytes()[: starts[2]])


def _cut_to_zero(path):
    path.write_bytes(b"")


DAMAGE = {  # how -> (damage, clips of the shard lost, reason in the warning)
    "truncated mid-member": (_cut_mid_member, None, r"shard read error \(ReadError"),
    "truncated between samples": (_cut_at_sample, 2, r"shard ended early; read 2 of the 4 clips dataset.json records"),
    "empty file": (_cut_to_zero, 4, r"read 0 of the 4 clips"),
    "not a tar": (lambda p: p.write_bytes(b"not a tar file at all" * 50), 4, r"read 0 of the 4 clips"),
    "missing file": (lambda p: p.unlink(), 4, r"FileNotFoundError: No such file or directory\); read 0 of the 4"),
}


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_shard_loses_the_clips_dataset_json_records(ds, caplog, how):
    damage, lost, reason = DAMAGE[how]
    damage(ds / BROKEN)
    with caplog.at_level(logging.WARNING):
        got, loader = load(ds, max_bad_fraction=1.0)
    assert len(set(got)) == len(got)
    bad = sum(loader.bad_samples.values())
    assert len(got) + bad == TOTAL  # every clip dataset.json records is delivered or counted as lost
    from_broken = sum(k.startswith("ep0001") for k in got)
    assert bad == CLIPS - from_broken and (lost is None or bad == lost)
    assert re.search(rf"skipping {bad} clips? of \S*{BROKEN}: .*{reason}", caplog.text), caplog.text


@pytest.mark.parametrize("how", list(DAMAGE))
def test_a_damaged_shard_past_max_bad_fraction_stops_naming_shards_and_counts(ds, how):
    damage, lost, _ = DAMAGE[how]
    damage(ds / BROKEN)
    with pytest.raises(DataError) as e:  # >= 1 of 12 clips lost is past 5%
        load(ds, max_bad_fraction=0.05)
    msg = user_error(e.value)
    n = lost or int(re.search(r"(\d+) of 12 clips", msg).group(1))
    assert re.search(rf"^{n} of {TOTAL} clips unreadable \(> max_bad_fraction=0.05\) in 1 shard: \S*{BROKEN}: "
                     rf"{n} lost \(", msg), msg


def test_losses_from_several_shards_are_each_named_through_workers(ds):
    (ds / "shard-000000.tar").unlink()
    _cut_at_sample(ds / BROKEN)
    with pytest.raises(DataError) as e:
        load(ds, num_workers=1, max_bad_fraction=0.25)  # worker errors come back in one line
    msg = user_error(e.value)
    assert msg.startswith(f"6 of {TOTAL} clips unreadable") and "in 2 shards" in msg
    assert re.search(r"shard-000000.tar: 4 lost .*FileNotFoundError", msg) and f"{BROKEN}: 2 lost" in msg


def test_max_bad_fraction_is_a_fraction():
    with pytest.raises(ValueError, match="max_bad_fraction must be in"):
        LoaderConfig(max_bad_fraction=5)


def rewrite_clip(path, index: int, name: str, value) -> str:
    """Put ``value`` at step 1 (first dimension) of clip ``index``'s ``name`` array, bypassing the writer's checks;
    returns the clip's key."""
    def fail(url, e):
        raise e

    samples, key = [], None
    for i, s in enumerate(iter_raw_samples(str(path), fail)):
        members = {k: v for k, v in s.items() if not k.startswith("__")}
        if i == index:
            arr = np.load(io.BytesIO(members[f"{name}.npy"]))
            arr.reshape(len(arr), -1)[1, 0] = value
            members[f"{name}.npy"], key = npy_bytes(arr), s["__key__"]
        samples.append(tar_sample(s["__key__"], members))
    path.write_bytes(b"".join(samples) + b"\0" * 2 * tarfile.BLOCKSIZE)
    return key


VALUE_CASES = {  # case -> (field, value, message pattern)
    "action 1e30": ("actions", 1e30, r"holds 1e\+30 at index \[1, 0\], beyond the sanity limit \|x\| <= 1e\+06"),
    "action far outside the recorded range": ("actions", 50.0, r"holds 50 \(step 1, dimension 0\), far outside the "
                                                                r"range \[-1, 1\] recorded in \S*dataset.json"),
    "action -inf": ("actions", -np.inf, r"holds NaN or inf"),
    "action nan": ("actions", np.nan, r"holds NaN or inf"),
    "reward 1e30": ("rewards", 1e30, r"holds 1e\+30 at index \[1\], beyond the sanity limit"),
    "reward far outside the recorded range": ("rewards", -1e4, r"holds -10000 .*far outside the range"),
}


@pytest.mark.parametrize("case", list(VALUE_CASES))
def test_absurd_values_are_refused_by_tools_and_skipped_and_counted_by_the_loader(ds, caplog, case):
    name, value, pattern = VALUE_CASES[case]
    key = rewrite_clip(ds / BROKEN, 2, name, value)
    info = load_dataset_info(ds)
    checks = ClipChecks.from_info(info, ds / "dataset.json")
    with pytest.raises(SchemaError) as e:
        [c for url in shard_paths(ds, info) for c in iter_clips(url, info.action_space, checks)]
    msg = user_error(e.value)
    assert re.search(rf"{BROKEN}: sample {key}: field '{name}' {pattern}", msg), msg
    with caplog.at_level(logging.WARNING):  # like a NaN action: skipped, counted, named
        got, loader = load(ds, max_bad_fraction=0.1)
    assert len(got) == TOTAL - 1 and key not in got and sum(loader.bad_samples.values()) == 1
    assert re.search(rf"skipping 1 clip of \S*{BROKEN}: .*sample {key}: field '{name}'", caplog.text)


def test_values_near_the_recorded_range_are_kept(ds):
    rewrite_clip(ds / BROKEN, 2, "actions", 1.5)  # past the bounds [-1, 1] by a quarter of their width: not absurd
    got, loader = load(ds, max_bad_fraction=0.0)
    assert len(got) == TOTAL and not any(loader.bad_samples.values())


def test_the_writer_refuses_absurd_values(tmp_path):
    from conftest import make_clip

    clip = make_clip(0, 0, kind="continuous")
    clip.actions[2, 1] = 3e30
    with pytest.raises(SchemaError, match=r"s.tar: clip ep0000_000000: field 'actions' holds 3e\+30 at index \[2, 1\]"):
        with ShardWriter(tmp_path / "s.tar", action_space("continuous")) as w:
            w.write(clip)
