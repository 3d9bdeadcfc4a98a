"""Write episode-clip shards atomically, with a sidecar that marks each shard complete, and ``dataset.json``.

A shard is written under a temporary name and renamed when whole, then its sidecar ``<shard>.json`` (record
plus mergeable statistics) is written the same way: a shard counts as done only when its sidecar exists, so
an interrupted or failed write leaves nothing a reader or a rerun would mistake for data.
"""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.codecs import encode_frames
from wm_video.data.reader import DATASET_FILE
from wm_video.data.schema import ActionSpace, Clip, DatasetInfo, HeldOut, ShardRecord, fields_of
from wm_video.data.split import VAL_FRACTION, choose_heldout, split_dataset
from wm_video.data.stats import ClipStats
from wm_video.utils.atomic import AtomicFile, DataWriteError, atomic_write_json, why_not_written

log = logging.getLogger(__name__)


def ensure_writable_dir(path: str | os.PathLike) -> Path:
    """Create ``path`` if needed and check a file can be created in it; clear error otherwise."""
    path = Path(path)
    try:
        path.mkdir(parents=True, exist_ok=True)
        probe = path / f".write-test-{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataWriteError(e.errno, f"output folder {path} is not writable: {why_not_written(e)}") from e
    return path


class ShardWriter:
    """Write clips into one webdataset tar shard; use as a context manager (an exception removes the temp file).

    Args:
        path: final shard path, e.g. ``out/shard-000003.tar``.
        action_space: every clip's actions are validated against it.
        storage: frame storage, ``raw`` | ``png`` | ``mp4``.
        fps: frame rate recorded in mp4 streams.
        crf: H.264 quality for ``mp4`` (0 lossless).
    """

    def __init__(self, path: str | os.PathLike, action_space: ActionSpace, storage: str = "raw", fps: float = 15.0,
                 crf: int = 10) -> None:
        self.path = Path(path)
        self.action_space, self.storage, self.fps, self.crf = action_space, storage, fps, crf
        self.stats = ClipStats()
        self.samples = 0
        self.episodes: dict[str, int] = {}  # episode id -> clips, in write order
        try:
            self._out = AtomicFile(self.path)  # .NAME.tmp-PID until close()
        except OSError as e:
            raise DataWriteError(e.errno, f"could not create shard {self.path}: {why_not_written(e)}") from e
        self._file = self._out.file

    def write(self, clip: Clip) -> None:
        clip.validate(self.action_space, where=f"{self.path.name}: clip {clip.key}")
        clip.meta.fields = fields_of(clip)
        name, data = encode_frames(clip.frames, self.storage, self.fps, self.crf)
        members = {name: data, "meta.json": json.dumps(vars(clip.meta)).encode()}
        for field in clip.meta.fields:
            members[f"{field}.npy"] = npy_bytes(getattr(clip, field))
        try:
            self._file.write(tar_sample(clip.key, members))
        except OSError as e:
            self.abort()
            raise DataWriteError(e.errno, f"could not write shard {self.path}: {why_not_written(e)}") from e
        self.stats.update(clip.actions, clip.rewards, clip.terminations, len(clip.frames))
        self.samples += 1
        self.episodes[clip.meta.episode_id] = self.episodes.get(clip.meta.episode_id, 0) + 1

    def close(self, extra: dict[str, Any] | None = None) -> ShardRecord:
        """Finish the tar, rename it into place, then write the sidecar that marks it complete."""
        try:
            self._file.write(b"\0" * (2 * tarfile.BLOCKSIZE))  # end-of-archive marker
            self._out.commit()
        except OSError as e:
            self.abort()
            raise DataWriteError(e.errno, f"could not finish shard {self.path}: {why_not_written(e)}") from e
        record = ShardRecord(self.path.name, self.samples, self.stats.frames, len(self.episodes), dict(self.episodes))
        atomic_write_json(sidecar_path(self.path), {"record": vars(record), "stats": self.stats.to_dict(),
                                                    "extra": extra or {}})
        return record

    def abort(self) -> None:
        self._out.abort()

    def __enter__(self) -> ShardWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.abort()


def tar_sample(key: str, members: dict[str, bytes]) -> bytes:
    """One webdataset sample as tar bytes: a USTAR header per member ``<key>.<name>``, its data, padding.

    Built in one buffer and written with one call: webdataset's ``TarWriter`` goes through ``tarfile.addfile``
    (PAX headers, a copy through a 16 KB buffer, a write per block), twice the cost per clip, which showed as
    4% of an Atari collection step. Headers come from the standard library; mtime is fixed so the same clips
    give byte-identical shards.
    """
    parts = []
    for name, data in members.items():
        info = tarfile.TarInfo(f"{key}.{name}")
        info.size, info.mtime, info.mode = len(data), 0, 0o444
        parts += [info.tobuf(tarfile.USTAR_FORMAT), data, b"\0" * (-len(data) % tarfile.BLOCKSIZE)]
    return b"".join(parts)


def npy_bytes(arr) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr, allow_pickle=False)
    return buf.getvalue()


def shard_name(k: int) -> str:
    """File name of shard ``k`` of a dataset (``shard-000003.tar``): collection and the pipeline name shards alike."""
    return f"shard-{k:06d}.tar"


def clip_starts(n: int, clip_len: int, stride: int) -> list[int]:
    """Start indices of the clips of an ``n``-step episode; the last clip ends with the episode."""
    if n < clip_len:
        return []
    starts = list(range(0, n - clip_len + 1, stride))
    if starts[-1] != n - clip_len:
        starts.append(n - clip_len)
    return starts


def sidecar_path(shard: str | os.PathLike) -> Path:
    return Path(f"{shard}.json")


def read_sidecar(shard: str | os.PathLike) -> dict[str, Any] | None:
    """The sidecar of a complete shard, or None when the shard is missing or unfinished."""
    side = sidecar_path(shard)
    if not side.exists() or not Path(shard).exists():
        return None
    try:
        return json.loads(side.read_text())
    except (OSError, json.JSONDecodeError):
        return None


def finalize_dataset(out_dir: str | os.PathLike, shard_paths: list[Path], *, resolution: list[int], fps: float,
                     clip_len: int, storage: str, action_space: ActionSpace, source: dict[str, Any],
                     tokens: dict[str, Any] | None = None, val_fraction: float | None = VAL_FRACTION,
                     heldout: list[str] | None = None) -> DatasetInfo:
    """Merge the sidecars of complete shards into ``dataset.json`` (written atomically) and return it.

    ``dataset.json`` records the held-out split (:mod:`wm_video.data.split`): the episodes ``heldout`` when given
    (a token dataset keeps its source's), else the last ``val_fraction`` of the episodes in write order; none is
    recorded with ``val_fraction=None``, or when a shard was written before shards recorded their episodes (the
    dataset then keeps the old rule: its last shards are held out).
    """
    stats, records, returns, lengths, successes = ClipStats(), [], [], [], []
    for shard in shard_paths:
        side = read_sidecar(shard)
        if side is None:
            raise DataWriteError(errno.ENOENT, f"shard {shard} is incomplete (no sidecar); rerun to finish it")
        records.append(ShardRecord(**side["record"]))
        stats = stats.merge(ClipStats.from_dict(side["stats"]))
        extra = side.get("extra", {})
        returns += extra.get("episode_returns", [])
        lengths += extra.get("episode_lengths", [])
        successes += [s for s in extra.get("successes", []) if s is not None]
    summary = stats.summary()
    if returns:  # whole-episode figures, where the writer knew them (simulator collection)
        summary["episodes"] = {"count": len(returns), "return_mean": float(np.mean(returns)),
                               "return_std": float(np.std(returns)), "length_mean": float(np.mean(lengths)),
                               "success_rate": float(np.mean(successes)) if successes else None}
    info = DatasetInfo(resolution=resolution, fps=fps, clip_len=clip_len, frame_storage=storage,  # type: ignore[arg-type]
                       action_space=action_space, shards=records, stats=summary, source=source, tokens=tokens)
    order = info.episode_order()
    if val_fraction is not None and order is None:
        log.info("%s: shards written by an older wm-video do not record their episodes: no held-out split recorded "
                 "(the last shards are held out, as before)", out_dir)
    elif val_fraction is not None:
        known = set(order)
        info.heldout = HeldOut(val_fraction, choose_heldout(order, val_fraction) if heldout is None else
                               [e for e in heldout if e in known])
    atomic_write_json(Path(out_dir) / DATASET_FILE, info.to_dict())
    if info.heldout is not None:
        split_dataset(out_dir, info=info).log("dataset written")
    return info
