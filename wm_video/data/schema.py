"""Episode shard schema: the typed records behind ``dataset.json`` and each clip's ``meta.json``.

The format is documented for users in ``docs/data-format.md``; bump :data:`SCHEMA_VERSION` whenever a
field changes meaning, and keep :func:`DatasetInfo.from_dict` reading every older version it can.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from dataclasses import dataclass, field
from pathlib import PurePosixPath, PureWindowsPath
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "wm-video/episode-clips"
FrameStorage = Literal["raw", "png", "mp4", "tokens"]
FRAME_STORAGES: tuple[str, ...] = ("raw", "png", "mp4", "tokens")  # "tokens": a token-shard dataset
TOKEN_DTYPES = (np.uint8, np.uint16, np.uint32)
ARRAY_FIELDS: tuple[str, ...] = ("actions", "rewards", "terminations")  # optional per-clip arrays, in order
# Largest magnitude a stored action or reward may have. No simulator, robot or game gets near it (raw joint
# positions, encoder ticks and Atari scores are all far below); finite values past it are garbage (1e30 from an
# uninitialised buffer, a unit bug) that would otherwise train silently. Writers and readers refuse them.
MAX_ABS_VALUE = 1e6


class SchemaError(ValueError):
    """A clip or dataset record does not follow the episode shard schema."""


@dataclass
class ActionSpace:
    """What an agent can do: ``discrete`` (``n`` choices, int64 ``(t,)``), ``continuous`` (``dim`` floats,
    float32 ``(t, a)``, optional ``low``/``high`` bounds) or ``none`` (plain video, action-free)."""

    kind: Literal["discrete", "continuous", "none"] = "none"
    n: int | None = None
    dim: int | None = None
    low: list[float] | None = None
    high: list[float] | None = None

    def __post_init__(self) -> None:
        if self.kind == "discrete" and not (_is_int(self.n) and self.n >= 1):
            raise SchemaError(f"discrete action space needs n >= 1, got n={self.n!r}")
        if self.kind == "continuous":
            if not (_is_int(self.dim) and self.dim >= 1):
                raise SchemaError(f"continuous action space needs dim >= 1, got dim={self.dim!r}")
            for name in ("low", "high"):
                bound = getattr(self, name)
                if bound is None:
                    continue
                if not isinstance(bound, (list, tuple)) or not all(_is_finite(x) for x in bound):
                    raise SchemaError(f"action space '{name}' must be a list of finite numbers, got {bound!r}")
                if len(bound) != self.dim:
                    raise SchemaError(f"action space '{name}' has {len(bound)} values, expected dim={self.dim}")
            if self.low is not None and self.high is not None and any(
                    lo > hi for lo, hi in zip(self.low, self.high, strict=True)):
                raise SchemaError(f"action space 'low' {self.low} exceeds 'high' {self.high}")
        if self.kind not in ("discrete", "continuous", "none"):
            raise SchemaError(f"unknown action space kind '{self.kind}'")

    def validate(self, actions: np.ndarray | None, t: int, where: str = "clip") -> None:
        """Check an action array against this space; raise :class:`SchemaError` naming ``where``."""
        if self.kind == "none":
            if actions is not None:
                raise SchemaError(f"{where}: field 'actions' given but the action space is 'none'")
            return
        if actions is None:
            raise SchemaError(f"{where}: field 'actions' missing for a {self.kind} action space")
        if self.kind == "discrete":
            if actions.shape != (t,) or actions.dtype != np.int64:
                raise SchemaError(f"{where}: field 'actions' must be int64 ({t},), got {actions.dtype} {actions.shape}")
            if t and (actions.min() < 0 or actions.max() >= self.n):
                raise SchemaError(f"{where}: field 'actions' has values outside [0, {self.n})")
        else:
            if actions.shape != (t, self.dim) or actions.dtype != np.float32:
                raise SchemaError(
                    f"{where}: field 'actions' must be float32 ({t}, {self.dim}), got {actions.dtype} {actions.shape}"
                )
            if not np.isfinite(actions).all():
                raise SchemaError(f"{where}: field 'actions' holds NaN or inf")
            check_magnitude(actions, "actions", where)

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class ClipMeta:
    """Per-clip ``meta.json``. ``clip_start`` is the index of the clip's first frame in its episode; ``extra`` is
    free-form, but its ``task`` (the clip's task text, :attr:`task`) is read by text-conditioned training."""

    episode_id: str
    clip_start: int
    num_frames: int
    fps: float
    source: str
    fields: list[str]
    schema_version: int = SCHEMA_VERSION
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "meta.json") -> ClipMeta:
        missing = [k for k in ("episode_id", "clip_start", "num_frames", "fps", "source", "fields") if k not in d]
        if missing:
            raise SchemaError(f"{where}: missing field(s) {missing}")
        if int(d.get("schema_version", 0)) > SCHEMA_VERSION:
            raise SchemaError(
                f"{where}: schema_version {d['schema_version']} is newer than this wm-video reads ({SCHEMA_VERSION})"
            )
        unknown = [f for f in d["fields"] if f not in ARRAY_FIELDS]
        if unknown:
            raise SchemaError(f"{where}: field 'fields' names {unknown}; known array fields are {ARRAY_FIELDS}")
        known = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @property
    def task(self) -> str | None:
        """The clip's task text (``extra["task"]``: a LeRobot episode's task, a Meta-World task's name), or None."""
        task = self.extra.get("task")
        return task if isinstance(task, str) and task.strip() else None


def episode_of_key(key: str) -> str:
    """The episode id in a sample key ``<episode_id>_<clip_start:06d>`` (the inverse of :attr:`Clip.key`), read
    without decoding the sample."""
    return key.rsplit("_", 1)[0]


@dataclass
class ShardRecord:
    """One shard in ``dataset.json``: path relative to the dataset folder and what it holds. ``episode_clips``
    (clips of each episode, in write order) is what lets a split hold out whole episodes; shards written before
    it was recorded lack it."""

    path: str
    samples: int
    frames: int
    episodes: int
    episode_clips: dict[str, int] | None = None


@dataclass
class HeldOut:
    """The held-out split ``dataset.json`` records (field ``heldout``): whole episodes that training never sees
    and evaluation scores on, chosen when the dataset was written as the last ``val_fraction`` of its episodes in
    write order (at least one when there are two or more). The list may be edited by hand to hold out others."""

    val_fraction: float
    episodes: list[str]


@dataclass
class DatasetInfo:
    """The dataset-level ``dataset.json``: everything a trainer needs before reading a sample."""

    resolution: list[int]  # [h, w]
    fps: float
    clip_len: int
    frame_storage: FrameStorage
    action_space: ActionSpace
    shards: list[ShardRecord] = field(default_factory=list)
    stats: dict[str, Any] = field(default_factory=dict)  # {"actions": {...}, "rewards": {...}, "terminations": {...}}
    source: dict[str, Any] = field(default_factory=dict)  # how the data was made (env id, policy, ...)
    tokens: dict[str, Any] | None = None  # token shards: vocab_size, dtype, tokenizer, frame resolution
    heldout: HeldOut | None = None  # None: written before splits were recorded (the last shards are held out)
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_episodes(self) -> int:
        return sum(s.episodes for s in self.shards)

    def episode_order(self) -> list[str] | None:
        """Every episode id, in write order (an episode cut across shards counts once, where it first appears);
        None when a shard does not record its episodes."""
        if any(s.episode_clips is None for s in self.shards):
            return None
        return list(dict.fromkeys(e for s in self.shards for e in s.episode_clips))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        for shard in d["shards"]:
            if shard["episode_clips"] is None:  # a dataset written before episodes were recorded stays as it was
                del shard["episode_clips"]
        if d["heldout"] is None:
            del d["heldout"]
        d["action_space"] = self.action_space.to_dict()
        d["num_samples"] = self.num_samples
        d["num_episodes"] = self.num_episodes
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "dataset.json") -> DatasetInfo:
        """Build from parsed JSON, refusing what a trainer would misread; every error names ``where`` and the field."""
        if not isinstance(d, dict):
            raise SchemaError(f"{where}: expected a JSON object {{...}} at the top level, got {_json_type(d)}")
        if d.get("format") != FORMAT_NAME:
            raise SchemaError(f"{where}: field 'format' is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        version = _count(_get(d, "schema_version", where), "schema_version", where)
        if version > SCHEMA_VERSION:
            raise SchemaError(f"{where}: schema_version {version} is newer than supported ({SCHEMA_VERSION})")
        if d.get("frame_storage") not in FRAME_STORAGES:
            raise SchemaError(
                f"{where}: field 'frame_storage' must be one of {FRAME_STORAGES}, got {d.get('frame_storage')!r}"
            )
        resolution = _get(d, "resolution", where)
        pair = isinstance(resolution, list) and len(resolution) == 2
        if not (pair and all(_is_int(x) and x > 0 for x in resolution)):
            raise SchemaError(f"{where}: field 'resolution' must be [h, w], two integers > 0, got {resolution!r}")
        fps = _get(d, "fps", where)
        if not (_is_finite(fps) and fps > 0):
            raise SchemaError(f"{where}: field 'fps' must be a finite number > 0, got {fps!r}")
        clip_len = _count(_get(d, "clip_len", where), "clip_len", where)
        if clip_len < 1:
            raise SchemaError(f"{where}: field 'clip_len' must be >= 1, got {clip_len}")
        space = _get(d, "action_space", where)
        try:
            action_space = ActionSpace(**space) if isinstance(space, dict) else None
        except (SchemaError, TypeError) as e:
            raise SchemaError(f"{where}: field 'action_space': {e}") from e
        if action_space is None:
            raise SchemaError(f"{where}: field 'action_space' must be an object, got {_json_type(space)}")
        shards = _shard_records(d.get("shards", []), where)
        for name, total in (("num_samples", sum(s.samples for s in shards)),
                            ("num_episodes", sum(s.episodes for s in shards))):
            if name in d and _count(d[name], name, where) != total:
                raise SchemaError(f"{where}: field '{name}' is {d[name]} but the shards listed add up to {total}")
        for name in ("stats", "source"):
            if not isinstance(d.get(name, {}), dict):
                raise SchemaError(f"{where}: field '{name}' must be an object, got {_json_type(d[name])}")
        _check_stats(d.get("stats", {}), action_space, where)
        if d.get("tokens") is not None and not isinstance(d["tokens"], dict):
            raise SchemaError(f"{where}: field 'tokens' must be an object or null, got {_json_type(d['tokens'])}")
        heldout = _heldout(d["heldout"], shards, where) if d.get("heldout") is not None else None
        return cls(resolution=list(resolution), fps=float(fps), clip_len=clip_len, frame_storage=d["frame_storage"],
                   action_space=action_space, shards=shards, stats=d.get("stats", {}), source=d.get("source", {}),
                   tokens=d.get("tokens"), heldout=heldout, schema_version=version)


def _json_type(x: Any) -> str:
    names = {dict: "an object", list: "a list", str: "a string", bool: "a boolean", type(None): "null"}
    return names.get(type(x), "a number" if isinstance(x, (int, float)) else type(x).__name__)


def _is_int(x: Any) -> bool:
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def _is_finite(x: Any) -> bool:
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _get(d: dict[str, Any], name: str, where: str) -> Any:
    if name not in d:
        raise SchemaError(f"{where}: field '{name}' missing")
    return d[name]


def _count(x: Any, name: str, where: str) -> int:
    """A non-negative integer (a count, a size, a version)."""
    if not (_is_int(x) and x >= 0):
        raise SchemaError(f"{where}: field '{name}' must be an integer >= 0, got {x!r}")
    return int(x)


def _shard_records(shards: Any, where: str) -> list[ShardRecord]:
    """``shards`` entries with their counts checked and their paths confined to the dataset folder: a path that is
    absolute or climbs out with ``..`` would read (and train on) files the dataset does not own."""
    if not isinstance(shards, list):
        raise SchemaError(f"{where}: field 'shards' must be a list, got {_json_type(shards)}")
    records, seen = [], set()
    for i, s in enumerate(shards):
        name = f"shards[{i}]"
        if not isinstance(s, dict) or not {"path", "samples", "frames", "episodes"} <= set(s):
            raise SchemaError(f"{where}: field '{name}' must be an object with path, samples, frames and episodes, "
                              f"got {s!r}")
        path = s["path"]
        if not isinstance(path, str) or not path.strip():
            raise SchemaError(f"{where}: field '{name}.path' must be a non-empty string, got {path!r}")
        posix, win = PurePosixPath(path), PureWindowsPath(path)
        if posix.is_absolute() or win.is_absolute() or win.drive or ".." in posix.parts or ".." in win.parts:
            raise SchemaError(f"{where}: field '{name}.path' is {path!r}, outside the dataset folder; shard paths "
                              f"must be relative and stay inside it")
        key = posix.as_posix()
        if key in seen:
            raise SchemaError(f"{where}: field '{name}.path' {path!r} is listed twice (its clips would count double)")
        seen.add(key)
        record = ShardRecord(path, *(_count(s[k], f"{name}.{k}", where) for k in ("samples", "frames", "episodes")))
        if s.get("episode_clips") is not None:
            record.episode_clips = _episode_clips(s["episode_clips"], record, f"{name}.episode_clips", where)
        records.append(record)
    return records


def _episode_clips(clips: Any, record: ShardRecord, name: str, where: str) -> dict[str, int]:
    """A shard's ``{episode_id: clips}``: one entry per episode it counts, adding up to its samples."""
    if not (isinstance(clips, dict) and all(_is_int(n) and n >= 1 for n in clips.values())):
        raise SchemaError(f"{where}: field '{name}' must be an object of episode id -> clips (integers >= 1), "
                          f"got {clips!r}"[:300])
    if len(clips) != record.episodes or sum(clips.values()) != record.samples:
        raise SchemaError(f"{where}: field '{name}' lists {len(clips)} episodes of {sum(clips.values())} clips but "
                          f"the shard records {record.episodes} episodes of {record.samples} clips")
    return {str(k): int(n) for k, n in clips.items()}


def _heldout(h: Any, shards: list[ShardRecord], where: str) -> HeldOut:
    """The recorded split: a fraction in [0, 1) and held-out episodes that the shards' ``episode_clips`` know."""
    if not isinstance(h, dict) or not {"val_fraction", "episodes"} <= set(h):
        raise SchemaError(f"{where}: field 'heldout' must be an object with val_fraction and episodes, got "
                          f"{h!r}"[:300])
    fraction, episodes = h["val_fraction"], h["episodes"]
    if not (_is_finite(fraction) and 0 <= fraction < 1):
        raise SchemaError(f"{where}: field 'heldout.val_fraction' must be a number in [0, 1), got {fraction!r}")
    if not (isinstance(episodes, list) and all(isinstance(e, str) for e in episodes)):
        raise SchemaError(f"{where}: field 'heldout.episodes' must be a list of episode ids, got {episodes!r}"[:300])
    missing = [i for i, s in enumerate(shards) if s.episode_clips is None]
    if missing:
        raise SchemaError(f"{where}: field 'heldout' needs every shard's episode_clips; shards{missing[:3]} lack it")
    known = {e for s in shards for e in s.episode_clips}
    for i, e in enumerate(episodes):
        if e not in known:
            raise SchemaError(f"{where}: field 'heldout.episodes[{i}]' is {e!r}, an episode no shard holds")
    if len(set(episodes)) != len(episodes):
        raise SchemaError(f"{where}: field 'heldout.episodes' lists an episode twice")
    return HeldOut(float(fraction), list(episodes))


def _check_stats(stats: dict[str, Any], space: ActionSpace, where: str) -> None:
    """Counts are non-negative integers; mean/std/min/max lists of finite numbers with std >= 0 and min <= max. The
    continuous actions' std divides every action in the model (normalisation), so there it must be > 0."""
    for name in ("frames", "terminations"):
        if name in stats:
            _count(stats[name], f"stats.{name}", where)
    for block_name, block in stats.items():
        if not isinstance(block, dict):
            continue
        prefix = f"stats.{block_name}"
        if "count" in block:
            _count(block["count"], f"{prefix}.count", where)
        for i, c in enumerate(block.get("counts", [])):
            _count(c, f"{prefix}.counts[{i}]", where)
        lists = {}
        for stat in ("mean", "std", "min", "max"):
            if stat not in block:
                continue
            values = block[stat]
            if not (isinstance(values, list) and all(_is_finite(x) for x in values)):
                raise SchemaError(f"{where}: field '{prefix}.{stat}' must be a list of finite numbers, got {values!r}")
            lists[stat] = values
        if len({len(v) for v in lists.values()}) > 1:
            raise SchemaError(f"{where}: field '{prefix}' has lists of different lengths ("
                              + ", ".join(f"{k} {len(v)}" for k, v in lists.items()) + ")")
        normalising = block_name == "actions" and space.kind == "continuous"
        if normalising and lists and len(next(iter(lists.values()))) != space.dim:
            raise SchemaError(f"{where}: field '{prefix}' has {len(next(iter(lists.values())))} dimensions, "
                              f"the action space {space.dim}")
        for i, sd in enumerate(lists.get("std", [])):
            # 0 is a real statistic (the Meta-World expert never moves its gripper): normalisation treats it as 1
            if sd < 0:
                raise SchemaError(f"{where}: field '{prefix}.std[{i}]' is {sd}; a standard deviation cannot be "
                                  "negative")
        for i, (lo, hi) in enumerate(zip(lists.get("min", []), lists.get("max", []), strict=False)):
            if lo > hi:
                raise SchemaError(f"{where}: field '{prefix}.min[{i}]' ({lo}) exceeds '{prefix}.max[{i}]' ({hi})")


def check_magnitude(arr: np.ndarray, name: str, where: str) -> None:
    """Refuse finite values beyond :data:`MAX_ABS_VALUE` (NaN and inf are checked by the caller)."""
    if arr.size and np.abs(arr).max() > MAX_ABS_VALUE:
        at = np.unravel_index(int(np.abs(arr).argmax()), arr.shape)
        raise SchemaError(f"{where}: field '{name}' holds {float(arr[at]):g} at index {list(map(int, at))}, beyond "
                          f"the sanity limit |x| <= {MAX_ABS_VALUE:g}")


@dataclass
class Clip:
    """One sample: ``frames`` uint8 ``(t, h, w, 3)`` (or, in token shards, tokens ``(t, h, w)`` of an unsigned
    integer type); ``actions`` int64 ``(t,)`` or float32 ``(t, a)``, or None
    for action-free video; ``rewards`` float32 ``(t,)`` and ``terminations`` bool ``(t,)`` or None.

    Convention: ``actions[i]`` is taken after observing ``frames[i]``; ``rewards[i]`` and ``terminations[i]``
    are the outcome of that action (so ``frames[i + 1]`` is its result).
    """

    frames: np.ndarray
    meta: ClipMeta
    actions: np.ndarray | None = None
    rewards: np.ndarray | None = None
    terminations: np.ndarray | None = None

    @property
    def key(self) -> str:
        return f"{self.meta.episode_id}_{self.meta.clip_start:06d}"

    def validate(self, action_space: ActionSpace | None = None, where: str | None = None) -> None:
        where = where or f"clip {self.key}"
        f = self.frames
        is_tokens = f.ndim == 3 and f.dtype in TOKEN_DTYPES
        if not is_tokens and (f.dtype != np.uint8 or f.ndim != 4 or f.shape[-1] != 3):
            raise SchemaError(f"{where}: field 'frames' must be uint8 (t, h, w, 3) or tokens (t, h, w), "
                              f"got {f.dtype} {f.shape}")
        t = f.shape[0]
        if self.meta.num_frames != t:
            raise SchemaError(f"{where}: meta.num_frames={self.meta.num_frames} but 'frames' has {t}")
        if action_space is not None:
            action_space.validate(self.actions, t, where)
        for name, dtype in (("rewards", np.float32), ("terminations", np.bool_)):
            arr = getattr(self, name)
            if arr is None:
                continue
            if arr.shape != (t,) or arr.dtype != dtype:
                raise SchemaError(
                    f"{where}: field '{name}' must be {np.dtype(dtype)} ({t},), got {arr.dtype} {arr.shape}"
                )
            if name == "rewards":
                if not np.isfinite(arr).all():
                    raise SchemaError(f"{where}: field 'rewards' holds NaN or inf")
                check_magnitude(arr, "rewards", where)


def fields_of(clip: Clip) -> list[str]:
    """The optional array fields a clip carries, in schema order."""
    return [n for n in ARRAY_FIELDS if getattr(clip, n) is not None]
