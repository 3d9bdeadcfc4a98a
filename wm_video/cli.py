"""``wm-video VERB ...``: one command line whose verbs are plain functions.

Each verb's ``--help`` is made from its function's signature and docstring (Google style ``Args:``), so the
function is the documentation. Parameters without a default are positional, the rest are ``--flags``;
``bool`` gets ``--flag/--no-flag``; a ``*overrides`` parameter takes trailing ``field.path=value`` items.
Verb modules import heavy libraries inside the functions, so ``wm-video --help`` stays fast.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import logging
import os
import re
import sys
import types
import typing
from collections.abc import Callable
from typing import Any, Union

# OpenMP threads that wait for each other by sleeping, not spinning, unless the user chose otherwise. It must be set
# before torch loads its OpenMP runtime, so here, before any verb imports torch. On a shared machine spinning threads
# fight whatever else holds a core: the tiny tokenizer trained 2.4x faster with this beside other work, and a minute
# cap had starved it into drawing flat colour (eval/benchmarks/bench_threads.py, docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# verb path -> "module:function"; nested dicts are verb groups.
VERBS: dict[str, Any] = {
    "data": {
        "collect": "wm_video.commands.data:collect",
        "inspect": "wm_video.commands.data:inspect",
        "envs": "wm_video.commands.data:envs",
        "tokenize": "wm_video.commands.data:tokenize",
        "videos": "wm_video.commands.data:videos",
        "lerobot": "wm_video.commands.data:lerobot",
    },
    "config": {
        "show": "wm_video.commands.config:show",
        "presets": "wm_video.commands.config:list_presets",
    },
    "train": {
        "tokenizer": "wm_video.commands.train:tokenizer",
        "dynamics": "wm_video.commands.train:dynamics",
        "decoder": "wm_video.commands.train:decoder",
    },
    "generate": "wm_video.commands.generate:generate",
    "eval": "wm_video.commands.evaluate:evaluate",
    "export": "wm_video.commands.export:export",
    "demo": "wm_video.commands.demo:demo",
    "plan": "wm_video.commands.plan:plan",
    "imagine-train": "wm_video.commands.plan:imagine_train",
}

GROUP_HELP = {
    "data": "make and look at episode-clip datasets",
    "config": "show resolved configs and the preset registry",
    "train": "train the parts of the world model",
}


def _resolve(target: str) -> Callable[..., Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def parse_docstring(doc: str | None) -> tuple[str, dict[str, str]]:
    """Split a Google-style docstring into its description and ``{param: help}`` from the ``Args:`` block."""
    doc = inspect.cleandoc(doc or "")
    parts = re.split(r"^\s*Args:\s*$", doc, maxsplit=1, flags=re.M)
    description, params = parts[0].strip(), {}
    if len(parts) == 2:
        name = None
        for line in parts[1].splitlines():
            if re.match(r"^\S", line):  # a new section (Returns:, Raises:) ends Args
                break
            m = re.match(r"^\s{2,8}(\*{0,2}\w+)(?:\s*\([^)]*\))?:\s*(.*)$", line)
            if m:
                name = m.group(1).lstrip("*")
                params[name] = m.group(2).strip()
            elif name and line.strip():
                params[name] += " " + line.strip()
    return description, params


def _unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        if set(args) <= {int, str}:
            return _int_or_str
    return tp


def _int_or_str(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


def add_function(parser: argparse.ArgumentParser, fn: Callable[..., Any]) -> None:
    """Add ``fn``'s parameters to ``parser`` and remember ``fn`` as the verb to call."""
    description, helps = parse_docstring(fn.__doc__)
    parser.description = description
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    hints = typing.get_type_hints(fn)
    for p in inspect.signature(fn).parameters.values():
        tp = _unwrap_optional(hints.get(p.name, str))
        text = helps.get(p.name, "").replace("%", "%%")  # argparse %-formats help strings
        if p.kind is p.VAR_POSITIONAL:
            parser.add_argument(p.name, nargs="*", metavar="FIELD=VALUE", help=text or "dotted config overrides")
            continue
        kwargs: dict[str, Any] = {"help": text}
        origin = typing.get_origin(tp)
        if origin is typing.Literal:
            kwargs["choices"] = list(typing.get_args(tp))
        elif origin in (list, tuple):
            kwargs["nargs"] = "+"
            inner = typing.get_args(tp)
            kwargs["type"] = inner[0] if inner else str
        elif tp is bool:
            kwargs["action"] = argparse.BooleanOptionalAction
        elif callable(tp) and tp in (int, float, str, _int_or_str):
            kwargs["type"] = tp
        if p.default is inspect.Parameter.empty:
            parser.add_argument(p.name, **kwargs)
        else:
            kwargs["default"] = p.default
            if p.default is not None and "action" not in kwargs:
                kwargs["help"] = f"{text} (default: {p.default})".strip()
            parser.add_argument(f"--{p.name.replace('_', '-')}", dest=p.name, **kwargs)
    parser.set_defaults(_fn=fn)


def build_parser(verbs: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    from wm_video import __version__

    parser = argparse.ArgumentParser(prog="wm-video", description="wm-video: video-prediction world models.")
    parser.add_argument("--version", action="version", version=f"wm-video {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def fill(p: argparse.ArgumentParser, table: dict[str, Any]) -> None:
        sub = p.add_subparsers(dest=f"verb_{id(table)}", metavar="VERB", required=True)
        for name, target in table.items():
            if isinstance(target, dict):
                child = sub.add_parser(name, help=GROUP_HELP.get(name, ""), description=GROUP_HELP.get(name))
                fill(child, target)
            else:
                fn = _resolve(target)
                child = sub.add_parser(name, help=parse_docstring(fn.__doc__)[0].split("\n")[0].replace("%", "%%"))
                add_function(child, fn)

    fill(parser, verbs or VERBS)
    return parser


def call(fn: Callable[..., Any], ns: argparse.Namespace) -> Any:
    args, kwargs = [], {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            args += getattr(ns, p.name)
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(getattr(ns, p.name))
        else:
            kwargs[p.name] = getattr(ns, p.name)
    return fn(*args, **kwargs)


def _user_errors() -> tuple[type[BaseException], ...]:
    from wm_video.config import ConfigError
    from wm_video.data.loader import DataError
    from wm_video.data.schema import SchemaError
    from wm_video.data.writer import DataWriteError
    from wm_video.envs.base import MissingExtraError, UnknownEnvError

    return (ConfigError, SchemaError, DataWriteError, DataError, MissingExtraError, UnknownEnvError,
            FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if ns.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        call(ns._fn, ns)
    except KeyboardInterrupt:
        print("interrupted; completed work is kept and a rerun continues", file=sys.stderr)
        return 130
    except _user_errors() as e:
        if ns.verbose:
            raise
        print(f"wm-video: error: {e}  (-v for the traceback)", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
