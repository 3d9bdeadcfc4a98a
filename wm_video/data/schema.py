"""Episode shard schema: the typed records behind ``dataset.json`` and each clip's ``meta.json``.

The format is documented for users in ``docs/data-format.md``; bump :data:`SCHEMA_VERSION` whenever a
field changes meaning, and keep :func:`DatasetInfo.from_dict` reading every older version it can.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

SCHEMA_VERSION = 1
FORMAT_NAME = "wm-video/episode-clips"
FrameStorage = Literal["raw", "png", "mp4", "tokens"]
FRAME_STORAGES: tuple[str, ...] = ("raw", "png", "mp4", "tokens")  # "tokens": a token-shard dataset
TOKEN_DTYPES = (np.uint8, np.uint16, np.uint32)
ARRAY_FIELDS: tuple[str, ...] = ("actions", "rewards", "terminations")  # optional per-clip arrays, in order


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
        if self.kind == "discrete" and (self.n is None or self.n < 1):
            raise SchemaError(f"discrete action space needs n >= 1, got n={self.n}")
        if self.kind == "continuous":
            if self.dim is None or self.dim < 1:
                raise SchemaError(f"continuous action space needs dim >= 1, got dim={self.dim}")
            for name in ("low", "high"):
                bound = getattr(self, name)
                if bound is not None and len(bound) != self.dim:
                    raise SchemaError(f"action space '{name}' has {len(bound)} values, expected dim={self.dim}")
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

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in dataclasses.asdict(self).items() if v is not None}


@dataclass
class ClipMeta:
    """Per-clip ``meta.json``. ``clip_start`` is the index of the clip's first frame in its episode."""

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


@dataclass
class ShardRecord:
    """One shard in ``dataset.json``: path relative to the dataset folder and what it holds."""

    path: str
    samples: int
    frames: int
    episodes: int


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
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    @property
    def num_samples(self) -> int:
        return sum(s.samples for s in self.shards)

    @property
    def num_episodes(self) -> int:
        return sum(s.episodes for s in self.shards)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["action_space"] = self.action_space.to_dict()
        d["num_samples"] = self.num_samples
        d["num_episodes"] = self.num_episodes
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "dataset.json") -> DatasetInfo:
        if d.get("format") != FORMAT_NAME:
            raise SchemaError(f"{where}: field 'format' is {d.get('format')!r}, expected {FORMAT_NAME!r}")
        if int(d.get("schema_version", 0)) > SCHEMA_VERSION:
            raise SchemaError(
                f"{where}: schema_version {d['schema_version']} is newer than supported ({SCHEMA_VERSION})"
            )
        if d.get("frame_storage") not in FRAME_STORAGES:
            raise SchemaError(
                f"{where}: field 'frame_storage' must be one of {FRAME_STORAGES}, got {d.get('frame_storage')!r}"
            )
        try:
            return cls(
                resolution=[int(x) for x in d["resolution"]],
                fps=float(d["fps"]),
                clip_len=int(d["clip_len"]),
                frame_storage=d["frame_storage"],
                action_space=ActionSpace(**d["action_space"]),
                shards=[ShardRecord(**s) for s in d.get("shards", [])],
                stats=d.get("stats", {}),
                source=d.get("source", {}),
                tokens=d.get("tokens"),
                schema_version=int(d["schema_version"]),
            )
        except (KeyError, TypeError) as e:
            raise SchemaError(f"{where}: malformed or missing field: {e}") from e


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
            if name == "rewards" and not np.isfinite(arr).all():
                raise SchemaError(f"{where}: field 'rewards' holds NaN or inf")


def fields_of(clip: Clip) -> list[str]:
    """The optional array fields a clip carries, in schema order."""
    return [n for n in ARRAY_FIELDS if getattr(clip, n) is not None]
