"""Read episode-clip shards: ``dataset.json`` and raw webdataset samples decoded into :class:`Clip`."""

from __future__ import annotations

import io
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from webdataset.tariterators import group_by_keys, tar_file_expander

from wm_video.data.codecs import decode_frames, frame_field
from wm_video.data.schema import ActionSpace, Clip, ClipMeta, DatasetInfo, SchemaError
from wm_video.data.writer import DATASET_FILE


def load_dataset_info(path: str | os.PathLike) -> DatasetInfo:
    """Read ``dataset.json`` from a dataset folder (or the file itself); clear errors name the file and field."""
    path = Path(path)
    file = path / DATASET_FILE if path.is_dir() else path
    if not file.exists():
        raise FileNotFoundError(f"{file} not found: is {path} a wm-video dataset folder (made by 'wm-video data ...')?")
    try:
        d = json.loads(file.read_text())
    except json.JSONDecodeError as e:
        raise SchemaError(f"{file}: not valid JSON ({e})") from e
    return DatasetInfo.from_dict(d, where=str(file))


def shard_paths(root: str | os.PathLike, info: DatasetInfo) -> list[str]:
    return [str(Path(root) / s.path) for s in info.shards]


def _npy(data: bytes) -> np.ndarray:
    return np.load(io.BytesIO(data), allow_pickle=False)


def _decode_field(where: str, name: str, decode) -> np.ndarray:
    try:
        return decode()
    except SchemaError as e:
        raise SchemaError(f"{where}: {e}") from e
    except Exception as e:  # codecs raise their own types on corrupt bytes (ValueError, av errors, PIL errors)
        raise SchemaError(f"{where}: field '{name}' could not be decoded ({type(e).__name__}: {e})") from e


def decode_sample(sample: dict[str, Any], action_space: ActionSpace | None = None) -> Clip:
    """Turn one raw webdataset sample (field name -> bytes) into a validated :class:`Clip`.

    Raises :class:`SchemaError` naming the sample key and field on anything malformed.
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


def iter_clips(url: str, action_space: ActionSpace | None = None) -> Iterator[Clip]:
    """Every clip of one shard in stored order; raises on the first error (for tools and tests)."""

    def raise_error(u: str, e: Exception) -> None:
        raise SchemaError(f"{u}: shard could not be read ({type(e).__name__}: {e})") from e

    for sample in iter_raw_samples(url, raise_error):
        yield decode_sample(sample, action_space)
