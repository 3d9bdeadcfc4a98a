"""The argparse layer of ``wm-video``: a parser with one-line errors and "did you mean" hints, help laid out from
docstrings (Google-style ``Args:``), and the argparse keywords of a typed parameter. :mod:`wm_video.cli` builds the
verbs with these."""

from __future__ import annotations

import argparse
import copy
import difflib
import inspect
import re
import sys
import types
import typing
from typing import Any, Union

from wm_video.config import kinds, presets

PRESETS_SLOT = "{presets}"  # where the registry's list goes in a --preset help text


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
        if PRESETS_SLOT in text:
            import wm_video.registry  # noqa: F401  (registers every config kind; loads torch, so only when printed)

            kind = getattr(action, "preset_kind", None)
            names = presets(kind) if kind else sorted({n for k in kinds() for n in presets(k)})
            text = text.replace(PRESETS_SLOT, ", ".join(names))
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
            leaf.error(f"unrecognized arguments: {' '.join(extras)}{did_you_mean(extras, leaf)}")
        return ns

    def error(self, message: str) -> typing.NoReturn:
        if message.startswith("the following arguments are required"):  # perhaps because one was mistyped
            message += did_you_mean(getattr(self, "_given", []), self)
        self.exit(2, f"{self.prog}: error: {message}  ('{self.prog} --help' for usage)\n")


def did_you_mean(items: list[str], parser: argparse.ArgumentParser) -> str:
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


def unwrap_optional(tp: Any) -> Any:
    if typing.get_origin(tp) in (Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0]
        if set(args) <= {int, str}:
            return int_or_str
    return tp


def int_or_str(value: str) -> int | str:
    try:
        return int(value)
    except ValueError:
        return value


class Given(argparse._StoreAction):
    """Stores the value and records the flag as given (``namespace._flags_given``), so a left-out setting keeps its
    preset's or YAML's value rather than the default shown in help."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace._flags_given = {*getattr(namespace, "_flags_given", ()), self.dest}


class GivenBool(argparse.BooleanOptionalAction):
    """``--flag/--no-flag`` that records the flag as given, like :class:`Given`."""

    def __call__(self, parser: argparse.ArgumentParser, namespace: argparse.Namespace, values: Any,
                 option_string: str | None = None) -> None:
        super().__call__(parser, namespace, values, option_string)
        namespace._flags_given = {*getattr(namespace, "_flags_given", ()), self.dest}


def argument_kwargs(tp: Any, text: str, tracked: bool) -> dict[str, Any]:
    """argparse keywords for a parameter of type ``tp``; ``tracked``: record whether the flag was given."""
    kwargs: dict[str, Any] = {"help": text}
    if tracked:
        kwargs["action"] = Given
    origin = typing.get_origin(tp)
    if origin is typing.Literal:
        kwargs["choices"] = list(typing.get_args(tp))
    elif origin in (list, tuple):
        kwargs["nargs"] = "+"
        inner = typing.get_args(tp)
        kwargs["type"] = inner[0] if inner else str
    elif tp is bool:
        kwargs["action"] = GivenBool if tracked else argparse.BooleanOptionalAction
    elif callable(tp) and tp in (int, float, str, int_or_str):
        kwargs["type"] = tp
    return kwargs
