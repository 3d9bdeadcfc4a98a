"""The on-disk LeRobot format, read without ``lerobot``: ``meta/info.json``, the chosen features, tasks and the
episode list, for the v2.x and v3.0 layouts.

Both layouts keep ``meta/info.json`` (``codebase_version``, ``fps``, ``features``, ``data_path`` and
``video_path`` templates). v2.x has one parquet and one video per episode and JSONL metadata
(``meta/episodes.jsonl``, ``meta/tasks.jsonl``); v3.0 packs many episodes per parquet and per video
(``meta/episodes/chunk-*/file-*.parquet`` says where each episode's rows are and where it starts in the video,
``videos/<key>/from_timestamp``; ``meta/tasks.parquet`` maps task indices to text).

Every problem is a :class:`LeRobotFormatError` naming the file and the field, and listing what is there.
"""

from __future__ import annotations

import json
import math
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from wm_video.data.schema import SchemaError

V2_PATHS = ("data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
            "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4")
V3_PATHS = ("data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet",
            "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4")
AUTO, NONE = "auto", "none"
DEFAULT_KEYS = {"state": "observation.state", "reward": "next.reward", "done": "next.done"}
OPTIONAL_COLUMNS = ("timestamp", "task_index", "frame_index")  # used when present


class LeRobotFormatError(SchemaError):
    """The dataset lacks a field, file or layout the pipeline needs."""


def fill_template(template: str, where: str, **values: Any) -> str:
    """``template.format(**values)``, allowing only plain named fields (the template comes from a data file)."""
    for _, name, _, _ in string.Formatter().parse(template):
        if name is not None and name not in values:
            raise LeRobotFormatError(f"{where}: path template {template!r} uses field {{{name}}}; known fields are "
                                     f"{sorted(values)}")
    return template.format(**values)


@dataclass
class LeRobotLayout:
    """What a dataset's metadata says, with the features chosen for the pipeline.

    ``keys`` maps ``camera``, ``action``, ``state``, ``reward``, ``done`` to feature names (None: not used).
    """

    root: Path
    info: dict[str, Any]
    keys: dict[str, str | None]
    tasks: dict[int, str]

    @property
    def v3(self) -> bool:
        return str(self.info["codebase_version"]).startswith("v3.")

    @property
    def fps(self) -> float:
        return float(self.info["fps"])

    @property
    def info_path(self) -> Path:
        return self.root / "meta" / "info.json"

    @property
    def action_dim(self) -> int:
        return math.prod(self.info["features"][self.keys["action"]].get("shape") or [1])

    def templates(self) -> tuple[str, str]:
        default = V3_PATHS if self.v3 else V2_PATHS
        return self.info.get("data_path") or default[0], self.info.get("video_path") or default[1]

    def columns(self) -> list[str]:
        """Parquet columns the pipeline reads: the chosen features (required) and :data:`OPTIONAL_COLUMNS`."""
        return ["episode_index", *[self.keys[r] for r in ("action", "state", "reward", "done") if self.keys[r]]]

    def episodes(self) -> list[dict[str, Any]]:
        """One dict per episode, sorted by index: ``episode``, ``length``, ``tasks``, ``data`` and ``video``
        (paths relative to the root) and ``from_timestamp`` (where the episode starts in its video)."""
        refs = self._v3_episodes() if self.v3 else self._v2_episodes()
        return sorted(refs, key=lambda r: r["episode"])

    def _v2_episodes(self) -> list[dict[str, Any]]:
        path = self.root / "meta" / "episodes.jsonl"
        if not path.exists():
            raise LeRobotFormatError(f"{path} not found (a {self.info['codebase_version']} dataset lists its "
                                     "episodes there)")
        chunk, (data_t, video_t) = int(self.info.get("chunks_size", 1000)), self.templates()
        refs, where = [], str(self.info_path)
        for i, line in enumerate(path.read_text().splitlines(), 1):
            if not line.strip():
                continue
            ep = json.loads(line)
            if "episode_index" not in ep or "length" not in ep:
                raise LeRobotFormatError(f"{path} line {i}: fields 'episode_index' and 'length' needed; found "
                                         f"{sorted(ep)}")
            idx = int(ep["episode_index"])
            values = {"episode_chunk": idx // chunk, "episode_index": idx}
            refs.append(_episode(idx, int(ep["length"]), list(ep.get("tasks", [])),
                                 fill_template(data_t, where, **values),
                                 fill_template(video_t, where, video_key=self.keys["camera"], **values), 0.0))
        return refs

    def _v3_episodes(self) -> list[dict[str, Any]]:
        cam, (data_t, video_t) = self.keys["camera"], self.templates()
        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise LeRobotFormatError(f"{self.root / 'meta' / 'episodes'}: no chunk-*/file-*.parquet (a v3.0 "
                                     "dataset lists its episodes there)")
        need = ["episode_index", "length", "data/chunk_index", "data/file_index", f"videos/{cam}/chunk_index",
                f"videos/{cam}/file_index", f"videos/{cam}/from_timestamp"]
        refs, where = [], str(self.info_path)
        for f in files:
            names = pq.read_schema(f).names
            missing = [c for c in need if c not in names]
            if missing:
                shown = [c for c in names if not c.startswith("stats/")]  # per-episode stats: hundreds of columns
                raise LeRobotFormatError(f"{f}: column(s) {missing} missing; columns: {', '.join(shown)}")
            for r in pq.read_table(f, columns=[*need, *(["tasks"] if "tasks" in names else [])]).to_pylist():
                data = fill_template(data_t, where, chunk_index=r["data/chunk_index"], file_index=r["data/file_index"])
                video = fill_template(video_t, where, video_key=cam, chunk_index=r[f"videos/{cam}/chunk_index"],
                                      file_index=r[f"videos/{cam}/file_index"])
                refs.append(_episode(int(r["episode_index"]), int(r["length"]), list(r.get("tasks") or []), data,
                                     video, float(r[f"videos/{cam}/from_timestamp"])))
        return refs


def _episode(idx: int, length: int, tasks: list[str], data: str, video: str, start: float) -> dict[str, Any]:
    return {"id": f"ep{idx:06d}", "input": f"episode {idx}", "episode": idx, "length": length, "tasks": tasks,
            "data": data, "video": video, "from_timestamp": start}


def read_layout(root: str | Path, camera: str | None, action_key: str, state_key: str = AUTO,
                reward_key: str = AUTO, done_key: str = AUTO) -> LeRobotLayout:
    """Read ``meta/info.json`` and the tasks, and resolve the chosen features (see :class:`LeRobotSource`)."""
    root = Path(root)
    path = root / "meta" / "info.json"
    if not path.exists():
        raise LeRobotFormatError(f"{path} not found: {root} is not a LeRobot dataset folder")
    try:
        info = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise LeRobotFormatError(f"{path}: not valid JSON ({e})") from e
    for name in ("codebase_version", "fps", "features"):
        if name not in info:
            raise LeRobotFormatError(f"{path}: field '{name}' missing (fields: {sorted(info)})")
    version = str(info["codebase_version"])
    if not version.startswith(("v2.", "v3.")):
        raise LeRobotFormatError(f"{path}: field 'codebase_version' is {version!r}; this reader knows v2.0, v2.1 "
                                 "and v3.0")
    feats: dict[str, dict] = info["features"]
    numeric = ", ".join(sorted(k for k, f in feats.items() if f.get("dtype") not in ("video", "image", "string")))
    if action_key not in feats:
        raise LeRobotFormatError(f"{path}: field '{action_key}' (the actions) is not among the features; "
                                 f"available: {numeric}")
    keys: dict[str, str | None] = {"camera": _camera(path, feats, camera), "action": action_key}
    for role, given in (("state", state_key), ("reward", reward_key), ("done", done_key)):
        if given == NONE:
            keys[role] = None
        elif given == AUTO:
            keys[role] = DEFAULT_KEYS[role] if DEFAULT_KEYS[role] in feats else None
        elif given not in feats:
            raise LeRobotFormatError(f"{path}: field '{given}' (--{role}-key) is not among the features; "
                                     f"available: {numeric}")
        else:
            keys[role] = given
    return LeRobotLayout(root, info, keys, _tasks(root, version.startswith("v3.")))


def _camera(path: Path, feats: dict[str, dict], camera: str | None) -> str:
    cameras = sorted(k for k, f in feats.items() if f.get("dtype") == "video")
    listed = ", ".join(cameras) or "(none)"
    if camera is None:
        if len(cameras) == 1:
            return cameras[0]
        raise LeRobotFormatError(f"{path}: choose a camera with --camera; available camera keys: {listed}")
    for key in (camera, f"observation.images.{camera}"):
        if key in feats and feats[key].get("dtype") == "image":
            raise LeRobotFormatError(f"{path}: camera '{key}' is stored as images inside the parquet files (dtype "
                                     f"'image'); this reader takes video features: {listed}")
        if key in cameras:
            return key
    raise LeRobotFormatError(f"{path}: camera key '{camera}' not found; available camera keys: {listed}")


def _tasks(root: Path, v3: bool) -> dict[int, str]:
    """Task index -> text; empty when the dataset keeps no task table."""
    if not v3:
        path = root / "meta" / "tasks.jsonl"
        if not path.exists():
            return {}
        rows = [json.loads(ln) for ln in path.read_text().splitlines() if ln.strip()]
        return {int(r["task_index"]): str(r["task"]) for r in rows}
    path = root / "meta" / "tasks.parquet"
    if not path.exists():
        return {}
    table = pq.read_table(path)
    # written by pandas with the task text as the index: a "task" column, or "__index_level_0__"
    text = next((c for c in ("task", "__index_level_0__") if c in table.column_names), None)
    if "task_index" not in table.column_names or text is None:
        raise LeRobotFormatError(f"{path}: expected columns 'task_index' and 'task'; found {table.column_names}")
    return dict(zip(table.column("task_index").to_pylist(), map(str, table.column(text).to_pylist()), strict=True))
