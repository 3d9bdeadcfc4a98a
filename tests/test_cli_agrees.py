"""The command line agrees with itself (flag names, required flags, --device, --preset lists) and with the README,
and generate checks its arguments before loading a model."""

from __future__ import annotations

import json
import logging
import re
import shlex
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset

from wm_video.cli import build_parser, main

README = Path(__file__).parent.parent / "README.md"


@pytest.fixture(scope="module")
def parser():
    return build_parser()


def verb_parsers(parser, prefix: str = "") -> dict:
    """``{"data collect": its parser, ...}`` for every verb."""
    out = {}
    for action in parser._subparsers._group_actions:
        for name, child in action.choices.items():
            if child._subparsers is None:
                out[f"{prefix}{name}"] = child
            else:
                out.update(verb_parsers(child, f"{prefix}{name} "))
    return out


def flag(parser, name: str):
    return next(a for a in parser._actions if name in a.option_strings)


def readme_commands() -> list[list[str]]:
    """Every ``wm-video ...`` line of the README's code blocks (continuations joined), as argv lists."""
    commands, in_block, pending = [], False, ""
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            in_block = not in_block
            continue
        if not in_block:
            continue
        line = pending + line.strip()
        pending = ""
        if line.endswith("\\"):
            pending = line[:-1] + " "
            continue
        if line.startswith("wm-video "):
            commands.append(shlex.split(line, comments=True)[1:])
    return commands


def test_every_readme_command_parses(parser):
    commands = readme_commands()
    assert len(commands) >= 20
    for argv in commands:
        ns = parser.parse_args(argv)  # SystemExit(2) on any flag the CLI does not have
        assert callable(ns._fn), argv


def test_config_show_takes_the_kind_as_a_word(capsys):
    assert ["config", "show", "train_dynamics", "--preset", "tiny"] in readme_commands()
    assert main(["config", "show", "train_dynamics", "--preset", "tiny", "loader.batch_size=3"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("kind: train_dynamics") and "batch_size: 3" in out
    assert main(["config", "show", "train_dynamics", "--kind", "collect"]) == 2
    assert "two config kinds" in capsys.readouterr().err


def test_preset_help_lists_the_registry(parser, capsys):
    verbs = verb_parsers(parser)
    for verb, has_tiny in (("train dynamics", True), ("config show", True), ("data collect", False)):
        with pytest.raises(SystemExit):
            verbs[verb].parse_args(["--help"])
        text = " ".join(capsys.readouterr().out.split())
        listed = re.search(r"--preset PRESET .*?One of: ([a-z, ]+)\.", text).group(1).split(", ")
        assert {"debug", "small", "base", "large"} <= set(listed) and ("tiny" in listed) is has_tiny, verb


REQUIRED = {"generate": ["--model", "--context"], "eval": ["--model", "--data"], "plan": ["--model", "--env"],
            "imagine-train": ["--model"], "export": ["--out"], "data tokenize": ["--tokenizer", "--data", "--out"],
            "data videos": ["--data", "--out"], "data lerobot": ["--data", "--out"]}


def test_required_flags_say_so_and_a_missing_one_is_a_one_line_error(parser, capsys):
    verbs = verb_parsers(parser)
    for verb, flags in REQUIRED.items():
        for name in flags:
            action = flag(verbs[verb], name)
            assert action.required and "required" in action.help, (verb, name)
        with pytest.raises(SystemExit) as e:
            parser.parse_args(verb.split())
        err = capsys.readouterr().err
        assert e.value.code == 2 and len(err.strip().splitlines()) == 1, err
        assert "the following arguments are required" in err and all(name in err for name in flags), err
        text = verbs[verb].format_usage()
        assert all(f"[{name} " not in text for name in flags), text  # not shown as optional


def test_every_device_flag_defaults_to_auto(parser):
    from wm_video.utils.device import resolve_device

    with_device = {verb for verb, p in verb_parsers(parser).items() if any(a.dest == "device" for a in p._actions)}
    assert {"generate", "eval", "plan", "imagine-train", "data tokenize"} <= with_device
    for verb in with_device:
        assert flag(verb_parsers(parser)[verb], "--device").default == "auto", verb
    import torch

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="not a device"):
        resolve_device("gpu0")


def test_src_is_an_alias_of_data(parser, capsys):
    ns = parser.parse_args(["data", "tokenize", "--tokenizer", "t", "--src", "d", "--out", "o"])
    assert ns.data == "d"
    assert parser.parse_args(["eval", "--model", "m", "--src", "d"]).data == "d"
    assert parser.parse_args(["data", "videos", "--data", "v", "--out", "o"]).data == "v"
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "videos", "--help"])
    text = capsys.readouterr().out
    assert "--data DATA" in text and "--src DATA" not in text and "also --src" in text


def test_typos_get_a_suggestion(parser, capsys):
    for argv, hint in ((["genrate"], "did you mean 'generate'"),
                       (["generate", "--model", "m", "--context", "c", "--num-frmes", "3"], "'--num-frames'"),
                       (["generate", "--model", "m", "--contxt", "c"], "'--context' for '--contxt'"),
                       (["data", "collect", "--policy", "randm"], "did you mean 'random'")):
        with pytest.raises(SystemExit) as e:
            parser.parse_args(argv)
        err = capsys.readouterr().err
        assert e.value.code == 2 and hint in err and len(err.strip().splitlines()) == 1, err


def test_temperature_defaults_say_why(parser):
    verbs = verb_parsers(parser)
    gen, ev = flag(verbs["generate"], "--temperature"), flag(verbs["eval"], "--temperature")
    assert (gen.default, ev.default) == (1.0, 0.0)
    assert "lively" in gen.help and "deterministic" in ev.help


# ---- generate ------------------------------------------------------------------------------------------------


@pytest.fixture
def no_model_load(monkeypatch):
    """Fail the test if generate loads a model."""
    from wm_video.generation.pipeline import WorldModelPipeline
    from wm_video.world_model import WorldModel

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded")

    monkeypatch.setattr(WorldModel, "from_pretrained", refuse)
    monkeypatch.setattr(WorldModelPipeline, "from_pretrained", refuse)


def test_generate_checks_arguments_before_loading_the_model(tmp_path, capsys, no_model_load):
    from test_world_model import make_world_model

    clip = tmp_path / "clip.mp4"
    clip.write_bytes(b"")
    # no dataset context: refused at once, before the (here missing) model is even read
    assert main(["generate", "--model", str(tmp_path / "nowhere"), "--context", str(clip), "--side-by-side"]) == 2
    assert "--side-by-side needs a dataset clip" in capsys.readouterr().err
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=1, t=6, size=32)
    np.save(tmp_path / "bad.npy", np.array([0, 1, 99]))
    for extra, message in ((["--actions", str(tmp_path / "bad.npy")], r"ids must be in \[0, 6\)"),
                           (["--context-frames", "9"], r"--context-frames must be in \[1, 4\]"),
                           (["--num-frames", "0"], "--num-frames must be >= 1"),
                           (["--device", "tpu7"], "not a device")):
        assert main(["generate", "--model", str(tmp_path / "wm"), "--context", f"{tmp_path / 'ds'}#0",
                     "--out", str(tmp_path / "x.mp4"), *extra]) == 2
        assert re.search(message, capsys.readouterr().err), message


def test_generate_predicts_one_frame_per_action_and_warns_when_the_truth_runs_out(tmp_path, caplog):
    from test_world_model import make_world_model

    from wm_video.commands.generate import generate
    from wm_video.utils.video_io import read_video

    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=1, t=6, size=32)  # 2 context + 4 real future frames
    np.save(tmp_path / "acts.npy", np.array([1, 2, 3, 4, 5, 0]))
    out = tmp_path / "pred.mp4"
    with caplog.at_level(logging.INFO, logger="wm_video"):
        generate(model=str(tmp_path / "wm"), context=f"{tmp_path / 'ds'}#0", actions=str(tmp_path / "acts.npy"),
                 context_frames=2, out=str(out), side_by_side=True, maskgit_steps=1, scale=2, device="cpu")
    trace = json.loads(out.with_suffix(".json").read_text())
    assert trace["num_frames"] == 6 and [s["action"] for s in trace["steps"]] == [1, 2, 3, 4, 5, 0]
    assert trace["truth"] == {"label": "truth (clip actions)", "frames": 4}  # the clip's own actions, labelled so
    assert "the truth panel is blank for the last 2" in caplog.text
    video = read_video(out)  # (t, H, W, 3): prediction | truth
    assert video.shape[0] == 8
    truth = video[:, :64, -64:].astype(float)  # the truth panel, above its caption
    assert truth[5].mean() > 30 and truth[-1].mean() < 8  # a real frame, then blank: not the last frame held
