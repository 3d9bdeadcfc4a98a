"""``wm-video VERB ...``: one command line whose verbs are plain functions.

Each verb's ``--help`` is made from its function's signature and docstring (Google style ``Args:``), so the
function is the documentation. Parameters without a default are positional, keyword-only parameters without a
default (after ``*`` or ``*overrides``) are required ``--flags``, the rest are optional ``--flags``; ``bool`` gets
``--flag/--no-flag``; a ``*overrides`` parameter takes trailing ``field.path=value`` items. ``FLAG_ALIASES`` keeps
old flag spellings working in every verb, ``PRESET_KINDS`` makes a verb's ``--preset`` help list the registry's
presets. A mistyped verb, flag or choice gets a "did you mean" suggestion.
Verb modules import heavy libraries inside the functions, so ``wm-video --help`` stays fast.
"""

from __future__ import annotations

import argparse
import copy
import difflib
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


# parameter -> old flag spellings that still work in every verb having it, named in its help as aliases. The dataset
# folder was --src in 'data tokenize/videos/lerobot' and --data everywhere else; --data is the one spelling now.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"data": ("--src",)}

# verb -> the config kind whose registered presets its --preset takes (None: any kind's). The list is read from the
# registry when help is printed, so it never goes stale; not before, as loading the registry imports torch.
PRESET_KINDS: dict[str, str | None] = {
    "data collect": "collect",
    "config show": None,
    "train tokenizer": "train_tokenizer",
    "train dynamics": "train_dynamics",
    "train decoder": "train_decoder",
}
_PRESETS = "{presets}"  # where the registry's list goes in a --preset help text


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps docstring layout; names a flag's aliases in its help rather than beside it, and fills in a --preset's
    list from the config registry only when help is printed."""

    def _format_action_invocation(self, action: argparse.Action) -> str:
        aliases = getattr(action, "aliases", ())
        if aliases:
            action = copy.copy(action)
            action.option_strings = [s for s in action.option_strings if s not in aliases]
        return super()._format_action_invocation(action)

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if _PRESETS in text:
            import wm_video.registry  # noqa: F401  (registers every config kind)
            from wm_video.config import kinds, presets

            kind = getattr(action, "preset_kind", None)
            names = presets(kind) if kind else sorted({n for k in kinds() for n in presets(k)})
            text = text.replace(_PRESETS, ", ".join(names))
        return text


class ArgumentParser(argparse.ArgumentParser):
    """argparse with one-line errors and "did you mean" suggestions for mistyped verbs, choices and flags."""

    def _check_value(self, action: argparse.Action, value: Any) -> None:
        try:
            super()._check_value(action, value)
        except argparse.ArgumentError as e:
            close = difflib.get_close_matches(str(value), [str(c) for c in action.choices or ()], n=1)
            if not close:
                raise
            raise argparse.ArgumentError(action, f"{e.message}; did you mean {close[0]!r}?") from None

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> tuple[argparse.Namespace, list[str]]:
        self._given = list(sys.argv[1:] if args is None else args)  # for suggestions when a required flag is missing
        return super().parse_known_args(args, namespace)

    def parse_args(self, args: Any = None, namespace: Any = None) -> argparse.Namespace:
        ns, extras = self.parse_known_args(args, namespace)
        leaf = getattr(ns, "_parser", self)
        rest = getattr(leaf, "_rest", None)  # the verb's *overrides
        if rest and extras and not any(e.startswith("-") for e in extras):
            # argparse gives a nargs="*" positional only the run of items before the first flag
            # ('config show train_dynamics --preset tiny a=1'); the later items are overrides too, in order
            setattr(ns, rest, [*getattr(ns, rest), *extras])
            extras = []
        if extras:  # reported by the verb's parser, which knows the verb's flags
            leaf.error(f"unrecognized arguments: {' '.join(extras)}{_did_you_mean(extras, leaf)}")
        return ns

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("the following arguments are required"):  # perhaps because one was mistyped
            message += _did_you_mean(getattr(self, "_given", []), self)
        self.exit(2, f"{self.prog}: error: {message}  ('{self.prog} --help' for usage)\n")


def _did_you_mean(items: list[str], parser: argparse.ArgumentParser) -> str:
    """``; did you mean --flag?`` for each of ``items`` that looks like a flag ``parser`` does not know."""
    flags = [s for a in parser._actions for s in a.option_strings]
    hints = []
    for item in items:
        name = item.split("=", 1)[0]
        if not name.startswith("--") or any(f.startswith(name) for f in flags):  # known, or a known abbreviation
            continue
        close = difflib.get_close_matches(name, flags, n=1)
        if close:
            hints.append(f"{close[0]!r} for {name!r}")
    return f"; did you mean {', '.join(hints)}?" if hints else ""


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


def add_function(parser: argparse.ArgumentParser, fn: Callable[..., Any], verb: str = "") -> None:
    """Add ``fn``'s parameters to ``parser`` and remember ``fn`` as the verb to call (``verb``: its path, e.g.
    ``"data collect"``, for ``PRESET_KINDS``)."""
    description, helps = parse_docstring(fn.__doc__)
    parser.description = description
    parser.formatter_class = HelpFormatter
    hints = typing.get_type_hints(fn)
    for p in inspect.signature(fn).parameters.values():
        tp = _unwrap_optional(hints.get(p.name, str))
        text = helps.get(p.name, "").replace("%", "%%")  # argparse %-formats help strings
        if p.kind is p.VAR_POSITIONAL:
            parser.add_argument(p.name, nargs="*", metavar="FIELD=VALUE", help=text or "dotted config overrides")
            parser._rest = p.name  # type: ignore[attr-defined]  # read by ArgumentParser.parse_args
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
        if p.default is inspect.Parameter.empty and p.kind is not p.KEYWORD_ONLY:
            parser.add_argument(p.name, **kwargs)
            continue
        aliases = FLAG_ALIASES.get(p.name, ())
        notes = [f"also {', '.join(aliases)}"] if aliases else []
        if p.name == "preset" and verb in PRESET_KINDS:
            text = f"{text} One of: {_PRESETS}.".strip()
        if p.default is inspect.Parameter.empty:
            kwargs["required"] = True
            notes.insert(0, "required")
        else:
            kwargs["default"] = p.default
            if p.default is not None and "action" not in kwargs:
                notes.insert(0, f"default: {p.default}")
        kwargs["help"] = f"{text} ({'; '.join(notes)})".strip() if notes else text
        action = parser.add_argument(f"--{p.name.replace('_', '-')}", *aliases, dest=p.name, **kwargs)
        action.aliases = aliases  # type: ignore[attr-defined]  # read by HelpFormatter
        if p.name == "preset":
            action.preset_kind = PRESET_KINDS.get(verb)  # type: ignore[attr-defined]
    parser.set_defaults(_fn=fn, _parser=parser)


def build_parser(verbs: dict[str, Any] | None = None) -> argparse.ArgumentParser:
    from wm_video import __version__

    parser = ArgumentParser(prog="wm-video", description="wm-video: video-prediction world models.")
    parser.add_argument("--version", action="version", version=f"wm-video {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")

    def fill(p: argparse.ArgumentParser, table: dict[str, Any], path: str = "") -> None:
        sub = p.add_subparsers(dest=f"verb_{id(table)}", metavar="VERB", required=True)
        for name, target in table.items():
            if isinstance(target, dict):
                child = sub.add_parser(name, help=GROUP_HELP.get(name, ""), description=GROUP_HELP.get(name))
                fill(child, target, f"{path}{name} ")
            else:
                fn = _resolve(target)
                child = sub.add_parser(name, help=parse_docstring(fn.__doc__)[0].split("\n")[0].replace("%", "%%"))
                add_function(child, fn, f"{path}{name}")

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
    from wm_video.data.bad_clips import DataError
    from wm_video.data.schema import SchemaError
    from wm_video.envs.base import UnknownEnvError
    from wm_video.utils.atomic import DataWriteError
    from wm_video.utils.extras import MissingExtraError

    return (ConfigError, SchemaError, DataWriteError, DataError, MissingExtraError, UnknownEnvError,
            FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    ns = parser.parse_args(argv)
    from wm_video.utils.logs import setup_logging

    setup_logging(logging.DEBUG if ns.verbose else logging.INFO)  # ours at INFO, libraries' at WARNING
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
