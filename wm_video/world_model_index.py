"""A world-model folder's index, ``world_model.json``: what it records besides the parts (:class:`WorldModelInfo`)
and how it is read and checked without loading a weight (:func:`read_index`). :mod:`wm_video.world_model` writes it
and re-exports these names."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wm_video.models.card import DEFAULT_LICENSE
from wm_video.models.export import read_json_object
from wm_video.utils.hub import resolve_folder

INDEX = "world_model.json"
FORMAT_VERSION = 1


@dataclass
class WorldModelInfo:
    """What a world-model folder's index records besides the parts.

    Args:
        resolution: frame height and width in pixels.
        fps: frames per second of the training data (and of generated video).
        action_space: the data's ``ActionSpace`` as a dict; with several action domains ``{"kind": "domains",
            "domains": {NAME: space}}``.
        stats: normalisation statistics of the training data (``dataset.json``'s ``stats``).
        source: where the parts and data came from (free-form provenance).
        license: the license's hub id, in the model card (default apache-2.0).
        datasets: hub dataset ids the model was trained on, in the model card (those in ``source`` paths that
            point into a hub cache are found without it).
        evaluation: what the model card shows of the model's last ``wm-video eval`` report
            (:func:`wm_video.model_card.eval_summary`); empty: not evaluated.
    """

    resolution: int
    fps: float = 15.0
    action_space: dict[str, Any] = field(default_factory=lambda: {"kind": "none"})
    stats: dict[str, Any] = field(default_factory=dict)
    source: dict[str, Any] = field(default_factory=dict)
    license: str = DEFAULT_LICENSE
    datasets: list[str] = field(default_factory=list)
    evaluation: dict[str, Any] = field(default_factory=dict)


def read_index(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, Path], WorldModelInfo]:
    """A world-model folder's checked index (no weights read): the ``world_model.json`` object, its parts' folders
    (confined to ``path``: :func:`part_folders`) and the :class:`WorldModelInfo` it records. A hub repo id for
    ``path`` reads its snapshot (:func:`~wm_video.utils.hub.resolve_folder`: downloaded whole, weights included)."""
    path = resolve_folder(path)
    index_file = path / INDEX
    if not index_file.exists():
        hint = ""
        if (path / "config.json").exists():
            hint = " (this looks like a single part's export; build a world model with 'wm-video export')"
        raise FileNotFoundError(f"{path} is not a world-model folder: no {INDEX}{hint}")
    index = read_json_object(index_file)
    if index.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{index_file}: field 'format_version' is {index.get('format_version')!r}; this "
                         f"version of wm-video reads {FORMAT_VERSION}")
    resolution, fps = index.get("resolution"), index.get("fps", 15.0)
    if isinstance(resolution, bool) or not isinstance(resolution, int) or resolution < 1:
        raise ValueError(f"{index_file}: field 'resolution' must be a positive integer, got {resolution!r}")
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not fps > 0:
        raise ValueError(f"{index_file}: field 'fps' must be a positive number, got {fps!r}")
    card = {"license": DEFAULT_LICENSE, "datasets": [], "evaluation": {}}  # absent from folders made before cards
    for name, default in card.items():
        card[name] = index.get(name, default)
        if not isinstance(card[name], type(default)):
            raise ValueError(f"{index_file}: field '{name}' must be a {type(default).__name__}, got {card[name]!r}")
    info = WorldModelInfo(resolution=resolution, fps=fps, action_space=index.get("action_space", {"kind": "none"}),
                          stats=index.get("stats", {}), source=index.get("source", {}), **card)
    return index, part_folders(path, index.get("parts", {})), info


def part_folders(path: Path, parts: Any) -> dict[str, Path]:
    """``world_model.json``'s ``parts`` (``{"tokenizer": "tokenizer", ...}``) as folders, each confined to the world
    model's folder ``path``: an index that names ``../..`` or an absolute path (or a link out of the folder) is
    refused, so a downloaded world model cannot make a load read files elsewhere."""
    index_file = path / INDEX
    if not isinstance(parts, dict):
        raise ValueError(f"{index_file}: field 'parts' must be an object {{part: folder}}, got {parts!r}")
    missing = [p for p in ("tokenizer", "dynamics") if p not in parts]
    if missing:
        raise ValueError(f"{index_file}: field 'parts' lacks {missing}")
    root, folders = path.resolve(), {}
    for part, name in parts.items():
        folder = path / name if isinstance(name, str) and name else None
        if folder is None or Path(name).is_absolute() or not folder.resolve().is_relative_to(root):
            raise ValueError(f"{index_file}: field 'parts.{part}' must name a folder inside {path}, got {name!r}")
        folders[part] = folder
    return folders


def is_world_model_folder(path: Path) -> bool:
    """Whether ``path`` holds a world-model folder this project wrote (a ``world_model.json`` with its format)."""
    try:
        index = json.loads((path / INDEX).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(index, dict) and "format_version" in index
