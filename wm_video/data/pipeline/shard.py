"""The shard stage: pack the kept clips into webdataset shards with the existing :class:`ShardWriter`.

The plan is a pure function of ``manifest/filter.jsonl``: kept clips in input order, cut into shards of
``capacity`` clips (``clips_per_shard``, lowered so a shard stays under ``shard_bytes`` of raw frames). So any
process can make any shard, a SLURM array task can take a ``--shard-range``, and a rerun makes only the
shards whose completion sidecar is missing. Each sidecar records a digest of the clips its shard holds; a
rerun that would put other clips into an existing shard (inputs or filters changed since) stops with an
error instead of mixing two plans.
"""

from __future__ import annotations

import hashlib
import logging
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.pipeline.clip import WORK_DIR, read_arrays, read_frames
from wm_video.data.pipeline.source import ClipParams, Source
from wm_video.data.schema import ARRAY_FIELDS, Clip, ClipMeta, SchemaError
from wm_video.data.writer import ShardWriter, read_sidecar, shard_name

log = logging.getLogger(__name__)
Entry = tuple[dict[str, Any], int]  # (clip-stage record without its clip list, clip start)


def shard_capacity(params: ClipParams, clips_per_shard: int, shard_bytes: int, array_bytes: int = 0) -> int:
    """Clips per shard: ``clips_per_shard``, or fewer when that many raw clips would pass ``shard_bytes``
    (mp4 and png storage compress, so their shards come out smaller than the limit)."""
    clip_bytes = params.clip_len * (params.size * params.size * 3 + array_bytes) + 2048  # + tar headers, meta
    return max(1, min(clips_per_shard, shard_bytes // clip_bytes))


def plan_shards(clip_recs: dict[str, dict[str, Any]], filter_recs: list[dict[str, Any]],
                capacity: int) -> list[list[Entry]]:
    """Kept clips in input order, ``capacity`` per shard."""
    entries: list[Entry] = []
    for frec in filter_recs:
        if frec["status"] != "ok":
            continue
        crec = {k: v for k, v in clip_recs[frec["id"]].items() if k != "clips"}
        entries += [(crec, c["start"]) for c in frec["clips"] if c["fate"] == "ok"]
    return [entries[i:i + capacity] for i in range(0, len(entries), capacity)]


def plan_digest(entries: list[Entry]) -> str:
    return hashlib.sha1("\n".join(f"{rec['id']}@{s}" for rec, s in entries).encode()).hexdigest()


def check_existing(out: Path, k: int, entries: list[Entry]) -> bool:
    """True when shard ``k`` is complete and holds exactly ``entries``; raise when it holds other clips."""
    side = read_sidecar(out / shard_name(k))
    if side is None:
        return False
    if side.get("extra", {}).get("plan") != plan_digest(entries):
        raise SchemaError(f"{out / shard_name(k)} holds other clips than the current plan (inputs or filter "
                          "settings changed since it was written); remove the shards and dataset.json in "
                          f"{out} to rebuild them, or write to another --out")
    return True


def write_shard(source: Source, params: ClipParams, storage: str, crf: int, out: str, k: int,
                entries: list[Entry]) -> dict[str, Any]:
    """Write shard ``k`` from the work files; returns its sidecar record."""
    out_dir = Path(out)
    work = out_dir / WORK_DIR
    by_input: dict[str, list[int]] = defaultdict(list)
    recs: dict[str, dict[str, Any]] = {}
    for rec, start in entries:
        by_input[rec["id"]].append(start)
        recs[rec["id"]] = rec
    with ShardWriter(out_dir / shard_name(k), source.action_space(), storage, params.fps, crf) as writer:
        for key, starts in by_input.items():  # dicts keep insertion order: the plan's order
            rec = recs[key]
            frames = read_frames(work, key, params.size)  # (n, S, S, 3) memmap
            arrays = read_arrays(work, key) if source.has_arrays else {}
            if len(frames) != rec["frames"]:
                raise SchemaError(f"work file of {rec['input']} holds {len(frames)} frames, its clip record "
                                  f"{rec['frames']}: rerun the clip stage")
            for s in starts:
                window = slice(s, s + params.clip_len)
                arr = {name: a[window] for name, a in arrays.items()}
                meta_source, extra = source.clip_meta(rec, s, arr)
                meta = ClipMeta(episode_id=source.episode_id(rec), clip_start=s, num_frames=params.clip_len,
                                fps=params.fps, source=meta_source, fields=[], extra=extra)
                fields = {f: arr[f] for f in ARRAY_FIELDS if f in arr}
                writer.write(Clip(np.asarray(frames[window]), meta, **fields))
        record = writer.close({"plan": plan_digest(entries), "inputs": len(by_input)})
    return vars(record)
