"""Read episode-clip shards: ``dataset.json`` and raw webdataset samples decoded into :class:`Clip`.

Besides the schema, every decoded clip can be held to what its ``dataset.json`` promises (:class:`ClipChecks`):
the frame grid and clip length (a mismatch means the file describes other data: an error, never a skip) and
values within the recorded ranges (an out-of-range clip is refused like a NaN one: the loader skips and counts it).
"""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from wm_video.data.codecs import decode_frames, frame_field
from wm_video.data.schema import ActionSpace, Clip, ClipMeta, DatasetInfo, SchemaError

DATASET_FILE = "dataset.json"  # a dataset folder's description: shards, schema, statistics, held-out split


def load_dataset_info(path: str | os.PathLike) -> DatasetInfo:
    """Read ``dataset.json`` from a dataset folder (or the file itself); clear errors name the file and field."""
    path = Path(path)
    file = path / DATASET_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: is {path} a wm-video dataset folder (made by 'wm-video data ...')?")
    try:
        d = json.loads(file.read_bytes())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{file}: not valid JSON ({e})") from e
    except OSError as e:
        raise SchemaError(f"{file}: could not be read ({e.strerror or e})") from e
    return DatasetInfo.from_dict(d, where=str(file))


def shard_paths(root: str | os.PathLike, info: DatasetInfo) -> list[str]:
    """Shard files; :meth:`DatasetInfo.from_dict` has confined every path to the dataset folder."""
    return [str(Path(root) / s.path) for s in info.shards]


class DatasetMismatchError(SchemaError):
    """A clip's frame grid or length is not what ``dataset.json`` says: the file describes other data."""


@dataclass(frozen=True)
class ClipChecks:
    """What ``dataset.json`` (``source``, named in messages) promises about each clip of its dataset.

    ``ranges`` maps a field to per-dimension ``(lo, hi)`` arrays: the recorded ``stats`` min/max, widened to the
    action space's ``low``/``high``. A value may sit beyond them by at most the range's own width ("far outside"
    is refused, float rounding and slightly different subsets are not); a unit or scaling bug lands far outside.
    """

    source: str
    resolution: tuple[int, int]
    clip_len: int
    ranges: dict[str, tuple[np.ndarray, np.ndarray]]

    @classmethod
    def from_info(cls, info: DatasetInfo, source: str | os.PathLike) -> ClipChecks:
        ranges = {}
        for name in ("actions", "rewards"):
            if name == "actions" and info.action_space.kind != "continuous":
                continue  # discrete actions are checked against [0, n) by the schema
            stats = info.stats.get(name) or {}
            lows, highs = [stats.get("min")], [stats.get("max")]
            if name == "actions":
                lows.append(info.action_space.low)
                highs.append(info.action_space.high)
            lows, highs = [x for x in lows if x], [x for x in highs if x]
            if lows and highs:
                ranges[name] = (np.min(lows, axis=0), np.max(highs, axis=0))
        h, w = info.resolution
        return cls(str(source), (h, w), info.clip_len, ranges)

    def check(self, clip: Clip, where: str) -> None:
        t, h, w = clip.frames.shape[:3]
        if (h, w) != self.resolution:
            raise DatasetMismatchError(f"{self.source}: field 'resolution' is {list(self.resolution)} but {where} "
                                       f"has frames of {h}x{w}")
        if t != self.clip_len:
            raise DatasetMismatchError(f"{self.source}: field 'clip_len' is {self.clip_len} but {where} has {t} "
                                       f"frames")
        for name, (lo, hi) in self.ranges.items():
            arr = getattr(clip, name)
            if arr is None:
                continue
            values = arr.reshape(len(arr), -1).astype(np.float64)  # (t, a)
            slack = (hi - lo) + 1e-6 * np.maximum(1.0, np.maximum(np.abs(lo), np.abs(hi)))
            outside = (values < lo - slack) | (values > hi + slack)
            if outside.any():
                i, j = (int(x) for x in np.argwhere(outside)[0])
                raise SchemaError(f"{where}: field '{name}' holds {values[i, j]:g} (step {i}, dimension {j}), far "
                                  f"outside the range [{lo[j]:g}, {hi[j]:g}] recorded in {self.source}")


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _decode_field(where: str, name: str, decode) -> np.ndarray:
    try:
        return decode()
    except SchemaError as e:
        raise SchemaError(f"{where}: {e}") from e
    except Exception as e:  # codecs raise their own types on corrupt bytes (ValueError, av errors, PIL errors)
        raise SchemaError(f"{where}: field '{name}' could not be decoded ({type(e).__name__}: {e})") from e


def decode_sample(sample: dict[str, Any], action_space: ActionSpace | None = None,
                  checks: ClipChecks | None = None) -> Clip:
    """Turn one raw webdataset sample (field name -> bytes) into a validated :class:`Clip`.

    Raises :class:`SchemaError` naming the shard, the sample key and the field on anything malformed or, with
    ``checks``, out of range; :class:`DatasetMismatchError` when the clip's shape contradicts ``dataset.json``.
    """
    key = sample.get("__key__", "?")
    where = f"{sample.get('__url__', '?')}: sample {key}"
    if "meta.json" not in sample:
        raise SchemaError(f"{where}: field 'meta.json' missing")
    try:
        meta = ClipMeta.from_dict(json.loads(sample["meta.json"]), where=f"{where} meta.json")
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SchemaError(f"{where}: field 'meta.json' is not valid JSON ({e})") from e
    name = frame_field(sample)
    if name is None:
        raise SchemaError(f"{where}: no frames field (frames.npy, frames.png or frames.mp4)")
    frames = _decode_field(where, name, lambda: decode_frames(name, sample[name], meta.num_frames))
    arrays = {}
    for f in meta.fields:
        if f"{f}.npy" not in sample:
            raise SchemaError(f"{where}: field '{f}.npy' listed in meta.json but missing")
        arrays[f] = _decode_field(where, f"{f}.npy", lambda f=f: _npy(sample[f"{f}.npy"]))
    clip = Clip(frames=frames, meta=meta, **arrays)
    clip.validate(action_space, where=where)
    if checks is not None:
        checks.check(clip, where)
    return clip


def iter_raw_samples(url: str, on_error) -> Iterator[dict[str, Any]]:
    """Raw samples of one tar shard; a read error (truncated or corrupt tar) calls ``on_error(url, exc)``
    and ends this shard, so the stream goes on with the next one."""
    try:
        stream = open(url, "rb")
    except OSError as e:
        on_error(url, e)
        return

    def handler(exn: Exception) -> bool:
        on_error(url, exn)
        return True

    with stream:
        source = [{"url": url, "stream": stream}]
        yield from group_by_keys(tar_file_expander(source, handler=handler), handler=handler)


def iter_clips(url: str, action_space: ActionSpace | None = None, checks: ClipChecks | None = None) -> Iterator[Clip]:
    """Every clip of one shard in stored order; raises on the first error (for tools and tests)."""

    def raise_error(u: str, e: Exception) -> None:
        raise SchemaError(f"{u}: shard could not be read ({type(e).__name__}: {e})") from e

    for sample in iter_raw_samples(url, raise_error):
        yield decode_sample(sample, action_space, checks)
