"""``wm-video VERB ...``: one command line whose verbs are plain functions.

Each verb's ``--help`` is made from its function's signature and docstring (Google style ``Args:``), so the
function is the documentation. Parameters without a default are positional, keyword-only parameters without a
default (after ``*`` or ``*overrides``) are required ``--flags``, the rest are optional ``--flags``; ``bool`` gets
``--flag/--no-flag``; a ``*overrides`` parameter takes trailing ``field.path=value`` items.

A verb with a typed config (``PRESET_KINDS``) takes ``**settings``: every plain field of its config class becomes a
``--flag`` (help from the config's docstring unless the verb's own ``Args:`` says more; shown default: the verb's
default preset's value), so a setting is spelled once, in its config. Only the flags actually given reach the verb,
so one left out keeps the value of the preset or YAML (``load_config``'s precedence). ``FLAG_ALIASES`` keeps old
flag spellings working in every verb, ``PRESET_KINDS`` also makes a verb's ``--preset`` help list the registry's
presets. A mistyped verb, flag or choice gets a "did you mean" suggestion.
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import importlib
import importlib.util
import inspect
import logging
import os
import sys
import typing
from collections.abc import Callable
from typing import Any

# OpenMP threads that wait for each other by sleeping, not spinning, unless the user chose otherwise. It must be set
# before torch loads its OpenMP runtime, so here, before the project's imports below (they load torch). On a shared
# machine spinning threads fight whatever else holds a core: the tiny tokenizer trained 2.4x faster with this beside
# other work, and a minute cap had starved it into drawing flat colour (eval/benchmarks/bench_threads.py,
# docs/benchmarks.md).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

# E402: after the line above, on purpose
from wm_video import __version__
from wm_video.commands.parsing import (
    PRESETS_SLOT,
    ArgumentParser,
    GivenBool,
    HelpFormatter,
    argument_kwargs,
    parse_docstring,
    unwrap_optional,
)
from wm_video.config import ConfigError, preset
from wm_video.utils.logs import setup_logging

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
    "demo": "wm_video.demo:demo",
    "plan": "wm_video.commands.plan:plan",
    "imagine-train": "wm_video.commands.plan:imagine_train",
    "play": "wm_video.commands.play:play",
    "push": "wm_video.commands.push:push",
}

GROUP_HELP = {
    "data": "make and look at episode-clip datasets",
    "config": "show resolved configs and the preset registry",
    "train": "train the parts of the world model",
}


# parameter -> old flag spellings that still work in every verb having it, named in its help as aliases. The dataset
# folder was --src in 'data tokenize/videos/lerobot' and --data everywhere else; --data is the one spelling now.
FLAG_ALIASES: dict[str, tuple[str, ...]] = {"data": ("--src",)}

# verb -> the config kind whose registered presets its --preset takes (None: any kind's), and whose fields its
# **settings take as flags. The preset list is read from the registry when help is printed, so it never goes stale.
PRESET_KINDS: dict[str, str | None] = {
    "data collect": "collect",
    "data videos": "data_videos",
    "data lerobot": "data_lerobot",
    "config show": None,
    "train tokenizer": "train_tokenizer",
    "train dynamics": "train_dynamics",
    "train decoder": "train_decoder",
    "generate": "generate",
    "eval": "eval",
    "plan": "plan",
    "imagine-train": "imagine_train",
    "play": "play",
}
def _resolve(target: str) -> Callable[..., Any]:
    module, name = target.split(":")
    return getattr(importlib.import_module(module), name)


def _settings(verb: str, fn: Callable[..., Any]) -> tuple[list[inspect.Parameter], dict[str, Any], dict[str, str]]:
    """The flags of a verb's ``**settings``: one keyword-only parameter per plain field of its config kind, whose
    default is the field's value in the verb's default preset; their types and help texts (the config's docstrings,
    base classes' included)."""
    kind = PRESET_KINDS.get(verb)
    if not kind:
        raise TypeError(f"{fn.__qualname__} takes **settings, but verb {verb!r} has no config kind in PRESET_KINDS")
    start = preset(kind, inspect.signature(fn).parameters["preset"].default)
    cls = type(start)
    hints = typing.get_type_hints(cls)
    helps: dict[str, str] = {}
    for base in reversed(cls.__mro__):
        helps.update(parse_docstring(base.__doc__)[1] if dataclasses.is_dataclass(base) else {})
    params = []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp) or typing.get_origin(tp) is dict:
            continue  # sections and mappings: YAML and dotted overrides only
        params.append(inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=getattr(start, f.name)))
    return params, {p.name: hints[p.name] for p in params}, helps


def _parameters(fn: Callable[..., Any], verb: str) -> list[tuple[inspect.Parameter, Any, str, bool]]:
    """``(parameter, type, help, is_setting)`` for each of ``fn``'s flags, ``**settings`` expanded."""
    _, helps = parse_docstring(fn.__doc__)
    hints = typing.get_type_hints(fn)
    out = []
    for p in inspect.signature(fn).parameters.values():
        if p.kind is not p.VAR_KEYWORD:
            out.append((p, hints.get(p.name, str), helps.get(p.name, ""), False))
            continue
        params, types_, config_helps = _settings(verb, fn)
        # the verb's own Args: text wins: it may say more about a field in the verb's terms
        out += [(q, types_[q.name], helps.get(q.name) or config_helps.get(q.name, ""), True) for q in params]
    return out


def add_function(parser: argparse.ArgumentParser, fn: Callable[..., Any], verb: str = "") -> None:
    """Add ``fn``'s parameters to ``parser`` and remember ``fn`` as the verb to call (``verb``: its path, e.g.
    ``"data collect"``, for ``PRESET_KINDS``)."""
    parser.description = parse_docstring(fn.__doc__)[0]
    parser.formatter_class = HelpFormatter
    settings = []
    for p, hint, doc, is_setting in _parameters(fn, verb):
        tp = unwrap_optional(hint)
        text = doc.replace("%", "%%")  # argparse %-formats help strings
        if p.kind is p.VAR_POSITIONAL:
            parser.add_argument(p.name, nargs="*", metavar="FIELD=VALUE", help=text or "dotted config overrides")
            parser._rest = p.name  # type: ignore[attr-defined]  # read by ArgumentParser.parse_args
            continue
        kwargs = argument_kwargs(tp, text, is_setting)
        if p.default is inspect.Parameter.empty and p.kind is not p.KEYWORD_ONLY:
            parser.add_argument(p.name, **kwargs)
            continue
        aliases = FLAG_ALIASES.get(p.name, ())
        notes = [f"also {', '.join(aliases)}"] if aliases else []
        if p.name == "preset" and verb in PRESET_KINDS:
            text = f"{text} One of: {PRESETS_SLOT}.".strip()
        if p.default is inspect.Parameter.empty:
            kwargs["required"] = True
            notes.insert(0, "required")
        else:
            kwargs["default"] = p.default
            shown = is_setting and "default" in text  # a config's docstring gives its defaults
            if p.default is not None and not shown and kwargs.get("action") not in (argparse.BooleanOptionalAction,
                                                                                  GivenBool):
                notes.insert(0, f"default: {p.default}")
        kwargs["help"] = f"{text} ({'; '.join(notes)})".strip() if notes else text
        action = parser.add_argument(f"--{p.name.replace('_', '-')}", *aliases, dest=p.name, **kwargs)
        action.aliases = aliases  # type: ignore[attr-defined]  # read by HelpFormatter
        if p.name == "preset":
            action.preset_kind = PRESET_KINDS.get(verb)  # type: ignore[attr-defined]
        if is_setting:
            settings.append(p.name)
    parser.set_defaults(_fn=fn, _parser=parser, _settings=settings)


def build_parser(verbs: dict[str, Any] | None = None, argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The whole command line; with ``argv``, only the verb it names gets its flags (the others are listed by name
    and summary), so a command imports the libraries of its own verb only, not of all of them (``--help`` of the
    top level reads each verb's summary from its source without importing it)."""
    parser = ArgumentParser(prog="wm-video", description="wm-video: video-prediction world models.")
    parser.add_argument("--version", action="version", version=f"wm-video {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    words = [a for a in argv if not a.startswith("-")] if argv is not None else None

    def fill(p: argparse.ArgumentParser, table: dict[str, Any], path: str, depth: int) -> None:
        sub = p.add_subparsers(dest=f"verb_{id(table)}", metavar="VERB", required=True)
        chosen = words[depth] if words is not None and len(words) > depth else None
        for name, target in table.items():
            if isinstance(target, dict):
                child = sub.add_parser(name, help=GROUP_HELP.get(name, ""), description=GROUP_HELP.get(name))
                fill(child, target, f"{path}{name} ", depth + 1)
            elif words is None or name == chosen:
                import wm_video.registry  # noqa: F401  (every config kind, for the verb's presets; loads torch, so only here)

                fn = _resolve(target)
                child = sub.add_parser(name, help=parse_docstring(fn.__doc__)[0].split("\n")[0].replace("%", "%%"))
                add_function(child, fn, f"{path}{name}")
            else:
                sub.add_parser(name, help=_summary(target).replace("%", "%%"))

    fill(parser, verbs or VERBS, "", 0)
    return parser


def _summary(target: str) -> str:
    """First line of the docstring of ``module:function``, read from its source (nothing imported)."""
    module, name = target.split(":")
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        return ""
    with open(spec.origin, encoding="utf-8") as f:
        tree = ast.parse(f.read())
    fn = next((n for n in tree.body if isinstance(n, ast.FunctionDef) and n.name == name), None)
    return parse_docstring(ast.get_docstring(fn) if fn else None)[0].split("\n")[0]


def call(fn: Callable[..., Any], ns: argparse.Namespace) -> Any:
    """Call ``fn`` with the parsed arguments; of its ``**settings``, only the flags given on the command line."""
    args, kwargs = [], {}
    for p in inspect.signature(fn).parameters.values():
        if p.kind is p.VAR_POSITIONAL:
            args += getattr(ns, p.name)
        elif p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD):
            args.append(getattr(ns, p.name))
        elif p.kind is p.VAR_KEYWORD:
            given = getattr(ns, "_flags_given", set())
            kwargs.update({name: getattr(ns, name) for name in getattr(ns, "_settings", ()) if name in given})
        else:
            kwargs[p.name] = getattr(ns, p.name)
    return fn(*args, **kwargs)


def _user_errors() -> tuple[type[BaseException], ...]:
    # imported here, when a verb has run: at the top they would load torch for ``wm-video --help`` (0.1 s -> 2 s)
    from wm_video.data.bad_clips import DataError
    from wm_video.data.schema import SchemaError
    from wm_video.envs.base import UnknownEnvError
    from wm_video.utils.atomic import DataWriteError
    from wm_video.utils.extras import MissingExtraError

    return (ConfigError, SchemaError, DataWriteError, DataError, MissingExtraError, UnknownEnvError,
            FileNotFoundError, ValueError)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser(argv=argv)
    ns = parser.parse_args(argv)
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
