"""Clip features (motion, exact and perceptual hashes) and the filter stage that drops clips by them.

The clip stage computes the features of every clip window once, while its frames are in the page cache;
the filter stage then decides from the manifest alone, so changing a threshold never decodes video again.

- **Too short**: an input that gave no clip (fewer resampled frames than ``clip_len``).
- **Static**: ``motion`` below ``min_motion``; motion is the mean absolute difference between consecutive
  frames in 0-255 levels (over all channels, on at most 64x64 sampled pixels). A still image with codec
  noise scores about 0.1-0.3; a slow pan about 2; game or robot footage 1-20.
- **Exact duplicate**: the same frames (SHA-1 of the bytes) as a clip kept earlier, from any input.
- **Near duplicate**: a clip of *another* input whose perceptual hash differs in at most ``near_dup_bits``
  of 192 bits (a difference hash of the first, middle and last frame: 8x9 block means of the grey image,
  one bit per horizontal neighbour pair). This catches re-encodes and re-uploads; overlapping clips of one
  video are left alone (their likeness is the user's stride choice). Candidates are found by splitting the
  hash into ``near_dup_bits + 1`` bands: two hashes within that distance share at least one band exactly, so
  the search is exact without comparing every pair.

Inputs are visited in input order, so the first copy of a duplicate is the one kept.
"""

from __future__ import annotations

import hashlib
import itertools
from collections import Counter
from dataclasses import dataclass
from typing import Any

import numpy as np

from wm_video.data.pipeline.manifest import record

DEDUP_MODES = ("none", "exact", "near")
_HASH_FRAMES = 3
_HASH_BITS = 64 * _HASH_FRAMES


@dataclass
class FilterConfig:
    """What the filter stage drops.

    Args:
        min_motion: clips whose motion score is below this are static (0 keeps every clip).
        dedup: ``none``, ``exact`` (identical frames) or ``near`` (exact, plus perceptual near duplicates
            across inputs).
        near_dup_bits: hash bits (of 192) two clips may differ in and still count as near duplicates.
    """

    min_motion: float = 0.5
    dedup: str = "near"
    near_dup_bits: int = 8

    def validate(self) -> None:
        if self.dedup not in DEDUP_MODES:
            raise ValueError(f"filter: field 'dedup' must be one of {DEDUP_MODES}, got {self.dedup!r}")
        if not 0 <= self.near_dup_bits < _HASH_BITS // 4:
            raise ValueError(f"filter: field 'near_dup_bits' must be in [0, {_HASH_BITS // 4}), got "
                             f"{self.near_dup_bits}")


def motion_score(frames: np.ndarray) -> float:
    """Mean absolute difference of consecutive frames, 0-255 levels, on a grid of at most 64x64 pixels."""
    if len(frames) < 2:
        return 0.0
    step = max(1, frames.shape[1] // 64)
    x = np.asarray(frames[:, ::step, ::step], dtype=np.int16)  # (t, h', w', 3)
    return float(np.abs(np.diff(x, axis=0)).mean())


def difference_hash(frames: np.ndarray) -> str:
    """192-bit perceptual hash (hex) of the first, middle and last frame of ``frames`` (t, h, w, 3)."""
    t, h, w, _ = frames.shape
    bits = []
    for i in (0, t // 2, t - 1):
        grey = np.asarray(frames[i], dtype=np.float32).mean(-1)  # (h, w)
        rows = np.linspace(0, h, 9, dtype=int)[:-1]  # 8 row bands
        cols = np.linspace(0, w, 10, dtype=int)[:-1]  # 9 column bands
        sums = np.add.reduceat(np.add.reduceat(grey, rows, axis=0), cols, axis=1)  # (8, 9)
        counts = np.outer(np.diff([*rows, h]), np.diff([*cols, w]))
        blocks = sums / counts
        bits.append((blocks[:, 1:] > blocks[:, :-1]).ravel())  # (64,)
    return np.packbits(np.concatenate(bits)).tobytes().hex()


def exact_hash(frames: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frames).tobytes()).hexdigest()[:20]


def clip_features(frames: np.ndarray) -> dict[str, Any]:
    """What the filter needs of one clip: ``motion``, ``sha1`` and ``dhash``."""
    return {"motion": round(motion_score(frames), 4), "sha1": exact_hash(frames), "dhash": difference_hash(frames)}


def window_features(frames: np.ndarray, starts: list[int], clip_len: int) -> list[dict[str, Any]]:
    """``[{"start": s, **clip_features(frames[s:s + clip_len])}, ...]``."""
    return [{"start": s, **clip_features(frames[s:s + clip_len])} for s in starts]


class _NearIndex:
    """Banded index of kept clips' perceptual hashes (192-bit ints), for exact Hamming-radius search."""

    def __init__(self, max_bits: int) -> None:
        self.max_bits = max_bits
        edges = np.linspace(0, _HASH_BITS, max_bits + 2, dtype=int).tolist()
        self.bands = [(lo, (1 << (hi - lo)) - 1) for lo, hi in itertools.pairwise(edges)]
        self.buckets: dict[tuple[int, int], list[tuple[int, str, str]]] = {}

    def _keys(self, h: int) -> list[tuple[int, int]]:
        return [(b, (h >> lo) & mask) for b, (lo, mask) in enumerate(self.bands)]

    def find(self, h: int, owner: str) -> str | None:
        for key in self._keys(h):
            for other, other_owner, label in self.buckets.get(key, ()):
                if other_owner != owner and (other ^ h).bit_count() <= self.max_bits:
                    return label
        return None

    def add(self, h: int, owner: str, label: str) -> None:
        for key in self._keys(h):
            self.buckets.setdefault(key, []).append((h, owner, label))


def hash_distance(a: str, b: str) -> int:
    """Differing bits of two perceptual hashes (hex)."""
    return (int(a, 16) ^ int(b, 16)).bit_count()


def filter_records(clip_records: list[dict[str, Any]], cfg: FilterConfig, clip_len: int) -> list[dict[str, Any]]:
    """The filter stage's records, one per clip-stage record, in the same (input) order.

    Each ``ok`` record lists its clips with their fate (``ok``, ``static``, ``duplicate`` with ``of``: the
    kept clip it repeats, as ``<id>@<start>``) and ``kept``, the number of clips that go into shards.
    """
    exact: dict[str, str] = {}
    near = _NearIndex(cfg.near_dup_bits) if cfg.dedup == "near" else None
    out = []
    for rec in clip_records:
        if rec["status"] != "ok":
            out.append({k: rec[k] for k in ("id", "input", "status", "code", "reason", "stage") if k in rec})
            continue
        if not rec["clips"]:
            out.append(record(rec, "filtered", "too_short", f"too short: {rec['frames']} frames at "
                              f"{rec['fps']:g} fps, a clip needs {clip_len}", stage="filter", kept=0, clips=[]))
            continue
        fates, why = [], Counter()
        for c in rec["clips"]:
            label = f"{rec['id']}@{c['start']}"
            fate: dict[str, Any] = {"start": c["start"], "fate": "ok"}
            if c["motion"] < cfg.min_motion:
                fate.update(fate="static", motion=c["motion"])
            elif cfg.dedup != "none" and c["sha1"] in exact:
                fate.update(fate="duplicate", of=exact[c["sha1"]])
            elif near is not None and (match := near.find(int(c["dhash"], 16), rec["id"])) is not None:
                fate.update(fate="duplicate", of=match, near=True)
            else:
                exact.setdefault(c["sha1"], label)
                if near is not None:
                    near.add(int(c["dhash"], 16), rec["id"], label)
            why[fate["fate"]] += 1
            fates.append(fate)
        kept = why.pop("ok", 0)
        if kept:
            out.append(record(rec, "ok", kept=kept, clips=fates))
            continue
        code = f"all_{next(iter(why))}" if len(why) == 1 else "all_dropped"
        detail = ", ".join(f"{k} {v}" for k, v in sorted(why.items()))
        out.append(record(rec, "filtered", code, f"all {len(fates)} clips dropped ({detail})", stage="filter", kept=0,
                          clips=fates))
    return out


def clip_counts(filter_recs: list[dict[str, Any]]) -> dict[str, int]:
    """Clips made and what became of them, over all inputs."""
    counts: Counter[str] = Counter()
    for rec in filter_recs:
        for c in rec.get("clips", ()):
            counts["made"] += 1
            counts["kept" if c["fate"] == "ok" else c["fate"]] += 1
            counts["near_duplicate"] += bool(c.get("near"))
    return {k: counts[k] for k in ("made", "kept", "static", "duplicate", "near_duplicate")}
