"""The stats stage: ``dataset.json`` (merged shard statistics plus quantiles and counts) and the final manifest.

Means, standard deviations, minima, maxima and counts come from the shard sidecars through the existing
:func:`finalize_dataset` (exact merges; a frame inside two overlapping clips counts twice there, as it is
seen twice in training). Quantiles cannot be merged exactly, so they are computed here from the work arrays,
over each distinct frame covered by a kept clip, on at most ``max_rows`` evenly spaced frames.

``dataset.json`` gains, beside the usual blocks: ``stats.actions.quantiles`` (and ``stats.state`` for
LeRobot sources) and ``source.counts``: inputs by fate and reason, and clips made, kept and dropped.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.pipeline.clip import WORK_DIR, read_arrays
from wm_video.data.pipeline.filter import clip_counts
from wm_video.data.pipeline.manifest import FINAL_MANIFEST, count, write_jsonl
from wm_video.data.pipeline.shard import Entry
from wm_video.data.pipeline.source import ClipParams, Source
from wm_video.data.reader import DATASET_FILE
from wm_video.data.schema import DatasetInfo
from wm_video.data.stats import RunningStats
from wm_video.data.writer import finalize_dataset
from wm_video.utils.atomic import atomic_write_json

QUANTILES = (0.01, 0.05, 0.25, 0.5, 0.75, 0.95, 0.99)


def _covered_rows(starts: list[int], clip_len: int, n: int) -> np.ndarray:
    mask = np.zeros(n, dtype=bool)
    for s in starts:
        mask[s:s + clip_len] = True
    return mask


def array_stats(out: Path, plan: list[list[Entry]], clip_len: int, names: tuple[str, ...],
                max_rows: int = 1_000_000) -> dict[str, dict[str, Any]]:
    """Per-dimension statistics with quantiles of the per-frame work arrays ``names`` (e.g. actions, state),
    over the distinct frames of kept clips."""
    starts: dict[str, list[int]] = {}
    frames: dict[str, int] = {}
    for shard in plan:
        for rec, s in shard:
            starts.setdefault(rec["id"], []).append(s)
            frames[rec["id"]] = rec["frames"]
    upper = sum(min(len(v) * clip_len, frames[k]) for k, v in starts.items())
    step = max(1, -(-upper // max_rows))  # keep at most max_rows frames, evenly spaced
    rows: dict[str, list[np.ndarray]] = {n: [] for n in names}
    for key, ss in starts.items():
        arrays = read_arrays(out / WORK_DIR, key)
        mask = _covered_rows(ss, clip_len, frames[key])
        for name in names:
            if name in arrays:
                rows[name].append(arrays[name][mask][::step])
    result = {}
    for name, parts in rows.items():
        if not parts:
            continue
        x = np.concatenate(parts).astype(np.float64).reshape(sum(len(p) for p in parts), -1)  # (n, a)
        running = RunningStats()
        running.update(x)
        q = np.quantile(x, QUANTILES, axis=0)  # (len(QUANTILES), a)
        result[name] = {**running.summary(), "frames": len(x), "sampled_every": step,
                        "quantiles": {f"q{round(p * 100):02d}": q[i].tolist() for i, p in enumerate(QUANTILES)}}
    return result


def final_manifest(filter_recs: list[dict[str, Any]], plan: list[list[Entry]], shard_names: list[str]
                   ) -> list[dict[str, Any]]:
    """One line per input: its fate, the stage that decided it, clips kept and dropped, shards it went to."""
    where: dict[str, set[str]] = {}
    for name, shard in zip(shard_names, plan, strict=True):
        for rec, _ in shard:
            where.setdefault(rec["id"], set()).add(name)
    lines = []
    for rec in filter_recs:
        line = {k: rec[k] for k in ("id", "input", "status", "code", "reason", "stage") if k in rec}
        clips = rec.get("clips", [])
        if clips or rec["status"] == "ok":
            line["clips_kept"] = sum(c["fate"] == "ok" for c in clips)
            dropped: dict[str, int] = {}
            for c in clips:
                if c["fate"] != "ok":
                    dropped[c["fate"]] = dropped.get(c["fate"], 0) + 1
            line["clips_dropped"] = dropped
            line["shards"] = sorted(where.get(rec["id"], ()))
        lines.append(line)
    return lines


def write_stats(out: Path, source: Source, params: ClipParams, storage: str, filter_recs: list[dict[str, Any]],
                plan: list[list[Entry]], shard_names: list[str], settings: dict[str, Any]) -> DatasetInfo:
    """Write ``dataset.json`` and ``manifest.jsonl`` for complete shards; returns the dataset info."""
    counts = {**count(filter_recs), "clips": clip_counts(filter_recs)}
    described = {**source.describe(), "settings": settings, "counts": counts}
    info = finalize_dataset(out, [out / n for n in shard_names], resolution=[params.size, params.size],
                            fps=params.fps, clip_len=params.clip_len, storage=storage,
                            action_space=source.action_space(), source=described)
    if source.has_arrays:
        extra = array_stats(out, plan, params.clip_len, ("actions", "state"))
        if "actions" in extra and "actions" in info.stats:
            info.stats["actions"]["quantiles"] = extra["actions"]["quantiles"]
            info.stats["actions"]["distinct_frames"] = extra["actions"]["frames"]
        if "state" in extra:
            info.stats["state"] = extra["state"]
        atomic_write_json(out / DATASET_FILE, info.to_dict())
    write_jsonl(out / FINAL_MANIFEST, final_manifest(filter_recs, plan, shard_names))
    return info
