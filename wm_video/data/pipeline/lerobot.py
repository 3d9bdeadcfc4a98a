"""Source: a LeRobot dataset on local disk (layouts v2.x and v3.0), read with pyarrow and PyAV (no ``lerobot``).

Each episode is one input (the format itself is read in ``lerobot_format.py``). The chosen camera's frames
become clips; the action feature becomes the continuous actions, ``next.reward`` the rewards and ``next.done``
the terminations where the dataset has them; the state (``observation.state``) and the task text go into each
clip's ``meta.extra`` (``state``: the clip's ``(t, s)`` values; ``task``, ``task_index``, ``episode_index``,
``frame_index``: the source row of the clip's first frame). Row ``i``'s frame is the decoded frame nearest to
its ``timestamp`` plus the episode's offset in the video, within half a frame; H.264, AV1 and whatever else
PyAV decodes. An episode with NaN or infinite actions, state or rewards is ``rejected`` and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from wm_video.data.pipeline.clip import DecodeError, FrameWriter, SquareResizer, frames_at, resample, write_arrays
from wm_video.data.pipeline.lerobot_format import (
    AUTO,
    OPTIONAL_COLUMNS,
    LeRobotFormatError,
    LeRobotLayout,
    read_layout,
)
from wm_video.data.pipeline.probe import probe_video
from wm_video.data.pipeline.source import ClipParams, clip_record, safe_key
from wm_video.data.schema import ActionSpace

__all__ = ["LeRobotFormatError", "LeRobotSource"]


def _column(table: Any, name: str, dtype: Any) -> np.ndarray:
    """A parquet column as ``(n,)`` or ``(n, d)``: scalar and list (fixed or variable size) columns alike."""
    col = table.column(name).combine_chunks()
    if pa.types.is_list(col.type) or pa.types.is_fixed_size_list(col.type) or pa.types.is_large_list(col.type):
        values = col.flatten().to_numpy(zero_copy_only=False)
        return values.astype(dtype).reshape(len(col), -1)
    return col.to_numpy(zero_copy_only=False).astype(dtype)


def _nonfinite(name: str, x: np.ndarray) -> str | None:
    bad = ~np.isfinite(x)
    if not bad.any():
        return None
    first = int(np.argwhere(bad.reshape(len(x), -1).any(1))[0, 0])
    return (f"'{name}' holds {int(np.isnan(x).sum())} NaN and {int(np.isinf(x).sum())} infinite values "
            f"(first at row {first})")

@dataclass
class LeRobotSource:
    """A LeRobot dataset folder and the features to take from it.

    Args:
        src: dataset root (holds ``meta/info.json``).
        camera: video feature for the frames, full (``observation.images.top``) or short (``top``); may be
            left out when the dataset has exactly one camera.
        action_key: feature holding the actions.
        state_key: feature kept as per-clip state in ``meta.extra``: ``auto`` (``observation.state`` if
            present), a key, or ``none``.
        reward_key: rewards: ``auto`` (``next.reward`` if present), a key, or ``none``.
        done_key: terminations: ``auto`` (``next.done`` if present), a key, or ``none``.
    """

    src: str
    camera: str | None = None
    action_key: str = "action"
    state_key: str = AUTO
    reward_key: str = AUTO
    done_key: str = AUTO
    kind: str = "lerobot"
    has_arrays: bool = True

    def __post_init__(self) -> None:
        self._layout: LeRobotLayout | None = None  # read once, then carried to the workers with the source
        self._refs: list[dict[str, Any]] | None = None

    def __getstate__(self) -> dict[str, Any]:
        # sent to a worker with every task: the episode list (one dict per episode) would make that quadratic
        return {**self.__dict__, "_refs": None}

    @property
    def root(self) -> Path:
        return Path(self.src)

    @property
    def layout(self) -> LeRobotLayout:
        if self._layout is None:
            self._layout = read_layout(self.root, self.camera, self.action_key, self.state_key, self.reward_key,
                                       self.done_key)
        return self._layout

    def validate(self) -> None:
        """Read the metadata, list the episodes and check the first data file has every column needed."""
        refs = self.inputs()
        if not refs:
            raise LeRobotFormatError(f"{self.root}: the episode metadata lists no episode")
        data = self.root / refs[0]["data"]
        if not data.exists():
            raise LeRobotFormatError(f"{data} not found (episode {refs[0]['episode']}'s data file)")
        names = pq.read_schema(data).names
        missing = [c for c in self.layout.columns() if c not in names]
        if missing:
            raise LeRobotFormatError(f"{data}: column(s) {missing} missing; columns: {', '.join(names)}")

    def settings(self) -> dict[str, Any]:
        return {"kind": self.kind, "src": str(self.root.resolve()),
                **{f"{k}_key": v for k, v in self.layout.keys.items()}}

    def inputs(self) -> list[dict[str, Any]]:
        if self._refs is None:
            self._refs = self.layout.episodes()
        return self._refs

    def probe(self, ref: dict[str, Any]) -> dict[str, Any]:
        for name in ("data", "video"):
            if not (self.root / ref[name]).exists():
                return {"status": "broken", "code": f"missing_{name}", "reason": f"{ref[name]} not found"}
        meta = probe_video(self.root / ref["video"])
        if meta["status"] != "ok":
            return {**meta, "reason": f"{ref['video']}: {meta['reason']}"}
        return {**meta, "length": ref["length"]}

    def default_fps(self, probes: list[dict[str, Any]]) -> float:
        return self.layout.fps

    def _read_rows(self, ref: dict[str, Any]) -> tuple[dict[str, np.ndarray], np.ndarray] | dict[str, Any]:
        """The episode's per-row arrays (in frame order) and timestamps, or the record of why not."""
        keys = self.layout.keys
        names = pq.read_schema(self.root / ref["data"]).names
        missing = [c for c in self.layout.columns() if c not in names]
        if missing:
            return {"status": "broken", "code": "missing_field",
                    "reason": f"{ref['data']}: column(s) {missing} missing; columns: {', '.join(names)}"}
        cols = self.layout.columns() + [c for c in OPTIONAL_COLUMNS if c in names]
        table = pq.read_table(self.root / ref["data"], columns=cols, filters=[("episode_index", "=", ref["episode"])])
        n = table.num_rows
        if n == 0:
            return {"status": "broken", "code": "no_rows", "reason": f"{ref['data']} holds no row of this episode"}
        index = _column(table, "frame_index", np.int64) if "frame_index" in cols else np.arange(n, dtype=np.int64)
        order = np.argsort(index, kind="stable")
        ts = _column(table, "timestamp", np.float64)[order] if "timestamp" in cols else index[order] / self.layout.fps
        arrays = {"actions": _column(table, keys["action"], np.float32)[order].reshape(n, -1),  # (n, a)
                  "frame_index": index[order]}
        if keys["state"]:
            arrays["state"] = _column(table, keys["state"], np.float32)[order].reshape(n, -1)  # (n, s)
        if keys["reward"]:
            arrays["rewards"] = _column(table, keys["reward"], np.float32)[order].reshape(n)
        if keys["done"]:
            arrays["terminations"] = _column(table, keys["done"], np.bool_)[order].reshape(n)
        arrays["task_index"] = (_column(table, "task_index", np.int64)[order] if "task_index" in cols
                                else np.zeros(n, np.int64))
        for name, key in (("actions", keys["action"]), ("state", keys["state"]), ("rewards", keys["reward"])):
            why = _nonfinite(key, arrays[name]) if name in arrays else None
            if why:
                return {"status": "rejected", "code": "nonfinite_actions" if name == "actions" else f"nonfinite_{name}",
                        "reason": why}
        return arrays, ts

    def clip(self, ref: dict[str, Any], probe: dict[str, Any], params: ClipParams, work_dir: str) -> dict[str, Any]:
        """Read the episode's rows, reject non-finite values, pick rows at ``params.fps``, decode their frames."""
        rows_or_failure = self._read_rows(ref)
        if isinstance(rows_or_failure, dict):
            return rows_or_failure
        arrays, ts = rows_or_failure
        n, src_fps = len(ts), self.layout.fps
        rows = self._select_rows(ts, src_fps, params.fps)
        arrays = self._resample_arrays(arrays, rows, n)
        targets = [ref["from_timestamp"] + float(ts[r]) for r in rows]
        resize = SquareResizer(params.size, params.interpolation)
        try:
            with FrameWriter(work_dir, ref["id"], params.size) as writer:
                item, rgb = None, None
                for frame in frames_at(self.root / ref["video"], targets, tolerance=0.5 / src_fps):
                    if frame is not item:
                        item, rgb = frame, resize(frame)
                    writer.append(rgb)
                count = writer.commit()
        except DecodeError as e:
            return {"status": "broken", "code": e.code, "reason": f"{ref['video']}: {e.reason}"}
        write_arrays(work_dir, ref["id"], arrays)
        fallback = ref["tasks"][0] if ref["tasks"] else None
        tasks = {str(t): self.layout.tasks.get(t, fallback) for t in sorted({int(t) for t in arrays["task_index"]})}
        return clip_record(ref, params, work_dir, count, episode=ref["episode"], rows=n, tasks=tasks)

    @staticmethod
    def _select_rows(ts: np.ndarray, src_fps: float, fps: float) -> list[int]:
        """Rows at the output rate (nearest in time), all rows when the rates agree."""
        if abs(fps - src_fps) < 1e-6:
            return list(range(len(ts)))
        return list(resample(((float(t), i) for i, t in enumerate(ts)), fps, 1.0 / src_fps))

    @staticmethod
    def _resample_arrays(arrays: dict[str, np.ndarray], rows: list[int], n: int) -> dict[str, np.ndarray]:
        """Values at the chosen rows; rewards are summed and terminations or-ed over the rows each output step
        spans (going down in rate keeps every reward; going up gives it to the step whose next frame shows it)."""
        if rows == list(range(n)):
            return arrays
        bounds = [*rows[1:], n]
        out = {k: v[rows] for k, v in arrays.items()}
        if "rewards" in arrays:
            out["rewards"] = np.array([arrays["rewards"][a:b].sum() for a, b in zip(rows, bounds, strict=True)],
                                      dtype=np.float32)
        if "terminations" in arrays:
            out["terminations"] = np.array([arrays["terminations"][a:b].any() for a, b in zip(rows, bounds,
                                                                                             strict=True)])
        return out

    def action_space(self) -> ActionSpace:
        return ActionSpace("continuous", dim=self.layout.action_dim)

    def episode_id(self, rec: dict[str, Any]) -> str:
        return f"{safe_key(self.root.resolve().name, 32)}-ep{rec['episode']:06d}"

    def clip_meta(self, rec: dict[str, Any], start: int, arrays: dict[str, np.ndarray]) -> tuple[str, dict]:
        task_index = int(arrays["task_index"][0])
        extra: dict[str, Any] = {"episode_index": rec["episode"], "frame_index": int(arrays["frame_index"][0]),
                                 "task_index": task_index, "task": rec["tasks"].get(str(task_index))}
        if "state" in arrays:
            extra["state"] = arrays["state"].tolist()  # (t, s)
        return self.root.resolve().name, extra

    def describe(self) -> dict[str, Any]:
        info, keys, feats = self.layout.info, self.layout.keys, self.layout.info["features"]
        return {"kind": self.kind, "src": str(self.src), "codebase_version": info["codebase_version"],
                "robot_type": info.get("robot_type"), "source_fps": info["fps"], "camera": keys["camera"],
                "action_key": keys["action"], "action_names": feats[keys["action"]].get("names"),
                "state_key": keys["state"], "state_names": feats[keys["state"]].get("names") if keys["state"] else None,
                "reward_key": keys["reward"], "done_key": keys["done"], "tasks": self.layout.tasks}
