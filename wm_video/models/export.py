"""What every part's export shares: a folder with ``config.json`` + ``model.safetensors`` (huggingface_hub's
``PyTorchModelHubMixin`` writes and reads them), checked before loading so a wrong folder gets a clear error; and,
when the part came out of ``wm-video train``, ``quality.json``: its held-out metrics and quality-gate verdicts
(:mod:`wm_video.training.quality`), which later stages read (a failed reward head's captions are left out)."""

from __future__ import annotations

import importlib
import json
from dataclasses import MISSING, fields
from pathlib import Path
from typing import Any

import torch

WEIGHTS = "model.safetensors"
CONFIG = "config.json"
QUALITY = "quality.json"
JSON_TYPES = ((bool, "true or false"), ((int, float), "a number"), (str, "a string"), (list, "a list"),
              (dict, "an object"))
# kind -> the model class whose weights an export holds; built on the meta device (no memory, no init) to check
# the weights' names and shapes against config.json before the mixin loads them.
PART_CLASSES = {
    "tokenizer": "wm_video.models.tokenizer.model:VQTokenizer",
    "dynamics": "wm_video.models.dynamics.model:DynamicsModel",
    "decoder": "wm_video.models.decoder.model:DiffusionDecoder",
}


def one_line(e: BaseException, limit: int = 200) -> str:
    """An exception's message on one line (torch and safetensors write several, and long ones: those are cut after
    their first sentence), for ``wm-video: error: ...``."""
    text = " ".join(str(e).split()) or type(e).__name__
    if len(text) > limit:
        end = text.find(". ")
        text = text[: end + 1] if 0 < end < limit else text[:limit] + "..."
    return text


def read_json_object(file: Path) -> dict[str, Any]:
    """The JSON object (``{...}``) in ``file``; ValueError naming the file when it is unreadable, not JSON or another
    JSON value (a list, a number)."""
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{file}: not a readable JSON file ({one_line(e)})") from e
    if not isinstance(data, dict):
        raise ValueError(f"{file}: expected a JSON object {{...}}, got {type(data).__name__} {json.dumps(data)[:40]}")
    return data


def check_export(path: Path, config_cls: type, kind: str, required: set[str]) -> None:
    """Clear errors for a folder that is not a ``kind`` export: what is missing, which config fields are off, a
    weights file that is truncated or not safetensors, or weights whose names or shapes ``config.json`` does not
    build.

    Fields added to ``config_cls`` after an export was made take their defaults; unknown fields, or missing
    ``required`` ones, mean another kind of model."""
    if not path.is_dir():
        raise FileNotFoundError(f"{path} is not a folder; a {kind} export holds {CONFIG} and {WEIGHTS}")
    missing = [name for name in (CONFIG, WEIGHTS) if not (path / name).exists()]
    if missing:
        raise FileNotFoundError(f"{path} is not a {kind} export: missing {', '.join(missing)}")
    read_config(path, config_cls, kind, required)
    check_weights(path, kind, read_json_object(path / CONFIG))


def read_config(path: Path, config_cls: type, kind: str, required: set[str]) -> Any:
    """The ``config_cls`` built from ``path/config.json`` (no weights read); ValueError naming the file and the field
    when it is not a ``kind`` config or fails the config's own checks."""
    config = read_json_object(path / CONFIG)
    known = {f.name for f in fields(config_cls)}
    unknown, absent = sorted(set(config) - known), sorted(required - set(config))
    if unknown or absent:
        raise ValueError(f"{path / CONFIG} is not a {kind} config: unknown fields {unknown}, missing {absent}")
    try:
        return config_cls(**config)  # the config's own checks (sizes >= 1, ...) name the field
    except Exception as e:  # also TypeError and the like from a value of the wrong type
        raise ValueError(f"{path / CONFIG}: {mistyped(config_cls, config) or one_line(e)}") from e


def mistyped(config_cls: type, config: dict[str, Any]) -> str | None:
    """The first field of ``config`` whose JSON type differs from its default's (``"width": "wide"``), if any."""
    for f in fields(config_cls):
        if f.name not in config:
            continue
        default = f.default_factory() if f.default_factory is not MISSING else f.default
        value = config[f.name]
        for types, name in JSON_TYPES:
            if isinstance(default, types):
                if not isinstance(value, types) or isinstance(value, bool) is not isinstance(default, bool):
                    return f"field '{f.name}' must be {name}, got {value!r}"
                break
    return None


def weight_shapes(file: Path) -> dict[str, list[int]]:
    """``{name: shape}`` from a safetensors file's header (no tensor is read); ValueError naming the file when it
    is truncated or not safetensors (the library checks the header and that the data covers it exactly)."""
    from safetensors import safe_open

    try:
        with safe_open(str(file), framework="pt") as f:
            return {name: list(f.get_slice(name).get_shape()) for name in f.keys()}
    except Exception as e:  # SafetensorError for a torn or foreign file, OSError
        raise ValueError(f"{file}: not a readable safetensors file; truncated or not safetensors ({one_line(e)})"
                         ) from e


def check_weights(path: Path, kind: str, config: dict[str, Any]) -> None:
    """Refuse ``path/model.safetensors`` unless it holds exactly the weights, with the shapes, that ``config``
    builds: the mixin loads non-strictly, so a missing weight would otherwise keep its random initialisation."""
    have = weight_shapes(path / WEIGHTS)
    target = PART_CLASSES.get(kind)
    if target is None:
        return
    module, name = target.split(":")
    try:
        with torch.device("meta"):
            model = getattr(importlib.import_module(module), name)(config)
    except Exception as e:
        raise ValueError(f"{path / CONFIG}: does not build a {kind} ({one_line(e)})") from e
    state = model.state_dict(keep_vars=True)
    groups: dict[int, list[str]] = {}  # tied weights are saved once, under one of their names
    for key, tensor in state.items():
        groups.setdefault(id(tensor), []).append(key)
    expected = {key: list(tensor.shape) for key, tensor in state.items()}
    wrong = [f"{k} is {have[k]}, {CONFIG} builds {v}" for k, v in expected.items() if have.get(k, v) != v]
    lacking = [keys[0] for keys in groups.values() if not any(k in have for k in keys)]
    extra = sorted(set(have) - set(expected))
    problems = [f"{len(items)} {what} (first: {items[0]})" for what, items in (
        ("weights of another shape", wrong), ("weights missing", lacking), ("unknown weights", extra)) if items]
    if problems:
        raise ValueError(f"{path / WEIGHTS}: does not fit {path / CONFIG}: " + "; ".join(problems))


def read_quality(path: str | Path) -> dict[str, Any] | None:
    """The ``quality.json`` of an export folder, or None when there is none (a part not made by ``wm-video train``,
    or made before the gates existed) or it is unreadable or not a JSON object."""
    file = Path(path) / QUALITY
    try:
        data = json.loads(file.read_text()) if file.is_file() else None
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None
