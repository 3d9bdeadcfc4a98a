"""Typed configs: dataclasses are the source of truth, presets live in a registry, YAML and dotted overrides refine.

The registry is filled by the packages that own the configs: each keeps its presets beside its configs
(``training/presets.py``, ``data/presets.py``, ...) and registers them with :func:`register_kind` and
:func:`register_preset` when imported; :mod:`wm_video.registry` imports them all. This module imports nothing of
the project, so every floor may use it.

Precedence, lowest first: the dataclass defaults, a named preset (``debug`` for CPU tests, ``small``, ``base``,
``large``), a YAML file from ``configs/`` (``kind:`` names the config type, ``preset:`` the starting preset, every
other key overrides a field), command-line flags, then dotted overrides such as ``loader.batch_size=4``.
Unknown fields and wrongly typed values are errors that name the field and where it came from.
"""

from __future__ import annotations

import dataclasses
import difflib
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, Union

import yaml

T = TypeVar("T")


class ConfigError(ValueError):
    """A config value, file or preset is wrong; the message names the field and the source."""


_KINDS: dict[str, type] = {}
_PRESETS: dict[str, dict[str, Callable[[], Any]]] = {}


def register_kind(kind: str, cls: type) -> None:
    """Name config class ``cls`` ``kind`` (the ``kind:`` of YAML files, the first word of ``wm-video config``)."""
    _KINDS[kind] = cls
    _PRESETS.setdefault(kind, {})


def register_preset(kind: str, name: str) -> Callable[[Callable[[], T]], Callable[[], T]]:
    """Decorator: ``@register_preset("collect", "debug")`` over a function returning the config."""

    def wrap(fn: Callable[[], T]) -> Callable[[], T]:
        _PRESETS.setdefault(kind, {})[name] = fn
        return fn

    return wrap


def kinds() -> list[str]:
    """The registered config kinds (after ``import wm_video.registry``: all of them)."""
    return sorted(_KINDS)


def presets(kind: str) -> list[str]:
    """The preset names registered for ``kind``."""
    return sorted(_PRESETS.get(kind, {}))


def preset(kind: str, name: str) -> Any:
    """A fresh config of ``kind`` from its preset ``name``."""
    if kind not in _KINDS:
        hint = "" if _KINDS else " (none is registered: import wm_video.registry first, which registers them all)"
        raise ConfigError(f"unknown config kind {kind!r}; known: {sorted(_KINDS)}{hint}")
    table = _PRESETS[kind]
    if name not in table:
        raise ConfigError(f"unknown preset {name!r} for {kind!r}; known: {sorted(table)}")
    return table[name]()


def parse_dotted(items: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """``["a.b=1", "c=x"]`` -> nested dict with YAML-typed values (``1`` int, ``true`` bool, ``[1, 2]`` list)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"override {item!r} is not of the form field.path=value")
        path, raw = item.split("=", 1)
        try:
            value = yaml.safe_load(raw) if raw != "" else ""
        except yaml.YAMLError as e:
            raise ConfigError(f"override {item!r}: value is not valid YAML ({e})") from e
        node = out
        keys = path.strip().split(".")
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {item!r} conflicts with another override of {k!r}")
        node[keys[-1]] = value
    return out


def apply(cfg: T, values: dict[str, Any], source: str = "overrides", prefix: str = "") -> T:
    """Return a copy of dataclass ``cfg`` with ``values`` (nested dict) applied, type-checked field by field."""
    if not dataclasses.is_dataclass(cfg):
        raise ConfigError(f"{source}: {prefix or 'config'} is not a config section")
    hints = typing.get_type_hints(type(cfg))
    names = [f.name for f in dataclasses.fields(cfg)]
    changes = {}
    for key, value in values.items():
        path = f"{prefix}{key}"
        if key not in names:
            close = difflib.get_close_matches(key, names, n=3)
            hint = f"; did you mean {close}?" if close else f"; fields: {names}"
            raise ConfigError(f"{source}: unknown field {path!r} in {type(cfg).__name__}{hint}")
        current = getattr(cfg, key)
        if dataclasses.is_dataclass(current) and isinstance(value, dict):
            changes[key] = apply(current, value, source, f"{path}.")
        else:
            changes[key] = _coerce(value, hints[key], path, source)
    try:
        return dataclasses.replace(cfg, **changes)  # runs the config's own checks (__post_init__)
    except ConfigError:
        raise
    except (TypeError, ValueError, ArithmeticError) as e:
        raise ConfigError(f"{source}: {prefix.rstrip('.') or type(cfg).__name__}: {e}") from e


def _coerce(value: Any, tp: Any, path: str, source: str) -> Any:
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    err = ConfigError(f"{source}: field {path!r} expects {_name(tp)}, got {value!r}")
    if tp is Any:
        return value
    if origin in (Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        options = [arg for arg in args if arg is not type(None)]
        if len(options) == 1:  # X | None: X's own error (a field's check) says more than "expects X | None"
            return _coerce(value, options[0], path, source)
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, path, source)
            except ConfigError:
                pass
        raise err
    if origin is typing.Literal:
        if value in args:
            return value
        raise ConfigError(f"{source}: field {path!r} must be one of {list(args)}, got {value!r}")
    if origin in (list, tuple):
        if not isinstance(value, (list, tuple)):
            raise err
        inner = args[0] if args else Any
        return [_coerce(v, inner, f"{path}[{i}]", source) for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise err
        return dict(value)
    if dataclasses.is_dataclass(tp):
        if isinstance(value, dict):
            return apply(tp(), value, source, f"{path}.")
        raise err
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise err
    if tp is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise err
    if tp is float:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
        if isinstance(value, str):  # YAML 1.1 reads '1e-3' (no dot) as a string
            try:
                return float(value)
            except ValueError:
                raise err from None
        raise err
    if tp is str:
        if isinstance(value, str):
            return value
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return str(value)
        raise err
    if isinstance(tp, type) and isinstance(value, tp):
        return value
    raise err


def _name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def read_yaml(path: str | Path) -> dict[str, Any]:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"config file {path} not found")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping of fields")
    return data


def load_config(kind: str | None = None, *, preset_name: str | None = None, yaml_path: str | Path | None = None,
                flags: dict[str, Any] | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Any:
    """Resolve a config: preset -> YAML -> flags -> dotted overrides. ``kind`` may come from the YAML's ``kind:``."""
    data = read_yaml(yaml_path) if yaml_path else {}
    file_kind = data.pop("kind", None)
    if kind and file_kind and file_kind != kind:
        raise ConfigError(f"{yaml_path}: field 'kind' is {file_kind!r} but this command needs {kind!r}")
    kind = kind or file_kind
    if not kind:
        raise ConfigError(f"{yaml_path or 'config'}: say which config it is with a top-level 'kind:' field")
    name = data.pop("preset", None) or preset_name or "debug"
    cfg = preset(kind, name)
    if data:
        cfg = apply(cfg, data, source=str(yaml_path))
    if flags:
        cfg = apply(cfg, {k: v for k, v in flags.items() if v is not None}, source="command-line flags")
    if overrides:
        cfg = apply(cfg, parse_dotted(list(overrides)), source="command-line overrides")
    if hasattr(cfg, "validate"):
        cfg.validate()
    return cfg


def to_dict(cfg: Any) -> dict[str, Any]:
    """Plain values only: what goes in checkpoints (``weights_only=True`` safe) and ``config.yaml`` copies."""
    return dataclasses.asdict(cfg)


def dump_yaml(cfg: Any, kind: str | None = None) -> str:
    d = to_dict(cfg)
    if kind:
        d = {"kind": kind, **d}
    return yaml.safe_dump(d, sort_keys=False)
