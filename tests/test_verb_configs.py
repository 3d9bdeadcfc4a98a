"""Every verb with settings takes them the same way: a preset, a YAML file (``--config``), flags and trailing dotted
overrides, in that order of precedence, resolved by ``load_config`` into the verb's typed config."""

from __future__ import annotations

import importlib

import pytest
import yaml

from wm_video.cli import build_parser, main
from wm_video.config import kinds, load_config, presets


class Called(Exception):
    """Raised by the stand-in library function with what the command passed it."""


# verb argv (its required flags) -> config kind, the command module, the library function it calls, the argument
# index of what to check, the YAML values, the flag (which beats the YAML), the override (which beats both), and the
# fields expected after all three
CASES = {
    "generate": (["generate", "--model", "m", "--context", "c"], "generate", "wm_video.commands.generate",
                 "generate_video", 2, {"temperature": 0.5, "seed": 3}, ["--seed", "4"], "maskgit_steps=2",
                 {"temperature": 0.5, "seed": 4, "maskgit_steps": 2}),
    "eval": (["eval", "--model", "m", "--data", "d"], "eval", "wm_video.commands.evaluate", "evaluate_folder", 2,
             {"horizon": 3, "seed": 3}, ["--seed", "4"], "max_clips=5", {"horizon": 3, "seed": 4, "max_clips": 5}),
    "plan": (["plan", "--model", "m", "--env", "e"], "plan", "wm_video.commands.plan", "run_planner", 3,
             {"planner": "mcts", "seed": 3}, ["--seed", "4"], "simulations=5",
             {"planner": "mcts", "seed": 4, "simulations": 5}),
    "imagine-train": (["imagine-train", "--model", "m", "--env", "e"], "imagine_train", "wm_video.commands.plan",
                      "train_actor", 2, {"iterations": 7, "seed": 3}, ["--seed", "4"], "horizon=5",
                      {"iterations": 7, "seed": 4, "horizon": 5}),
    "data videos": (["data", "videos", "--data", "v", "--out", "o"], "data_videos", "wm_video.commands.data",
                    "run_pipeline", 1, {"clip_len": 8, "workers": 3}, ["--workers", "1"], "size=32",
                    {"clip_len": 8, "workers": 1, "size": 32}),
    "data lerobot": (["data", "lerobot", "--data", "v", "--out", "o"], "data_lerobot", "wm_video.commands.data",
                     "run_pipeline", 1, {"clip_len": 8, "workers": 3}, ["--workers", "1"], "size=32",
                     {"clip_len": 8, "workers": 1, "size": 32, "min_motion": 0.0, "dedup": "none"}),
}


def capture(monkeypatch, module: str, name: str) -> None:
    def called(*args, **kwargs):
        raise Called(args, kwargs)

    monkeypatch.setattr(importlib.import_module(module), name, called)


@pytest.mark.parametrize("verb", sorted(CASES))
def test_every_verb_takes_preset_yaml_flags_and_dotted_overrides(verb, tmp_path, monkeypatch):
    argv, kind, module, fn, index, in_yaml, flag, override, expected = CASES[verb]
    path = tmp_path / "settings.yaml"
    path.write_text(yaml.safe_dump({"kind": kind, **in_yaml}))
    capture(monkeypatch, module, fn)
    with pytest.raises(Called) as e:
        main([*argv, "--config", str(path), *flag, override])
    cfg = e.value.args[0][index]
    assert {k: getattr(cfg, k) for k in expected} == expected, verb
    # left-out flags keep the preset's values; a YAML of another kind is refused, naming both
    with pytest.raises(Called) as e:
        main([*argv, "--preset", "debug"])
    debug = load_config(kind, preset_name="debug")
    got = e.value.args[0][index]
    assert all(getattr(got, f) == getattr(debug, f) for f in expected), verb
    path.write_text("kind: collect\n")
    assert main([*argv, "--config", str(path)]) == 2


def test_lerobot_features_come_from_the_config(tmp_path, monkeypatch):
    capture(monkeypatch, "wm_video.commands.data", "run_pipeline")
    path = tmp_path / "robot.yaml"
    path.write_text("kind: data_lerobot\ncamera: top\n")
    with pytest.raises(Called) as e:
        main(["data", "lerobot", "--data", "ds", "--out", "o", "--config", str(path), "action_key=act"])
    source = e.value.args[0][0]
    assert (source.camera, source.action_key, source.src) == ("top", "act", "ds")
    with pytest.raises(Called) as e:
        main(["data", "lerobot", "--data", "ds", "--out", "o", "--shard-mb", "2"])
    assert e.value.args[0][1].shard_bytes == 2 << 20


def test_verb_kinds_are_registered_with_their_presets_and_their_flags_come_from_the_config(capsys):
    assert {"generate", "eval", "plan", "imagine_train", "data_videos", "data_lerobot"} <= set(kinds())
    for kind in ("generate", "eval", "plan", "imagine_train", "data_videos", "data_lerobot"):
        assert {"default", "debug"} <= set(presets(kind)), kind
        assert main(["config", "show", kind, "--preset", "debug"]) == 0
        assert capsys.readouterr().out.startswith(f"kind: {kind}")
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["plan", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    # a config field's flag, with its help from the config's docstring and its default from the default preset
    assert "--population POPULATION CEM: sequences scored per iteration (default 64)" in text
    assert "--planner {cem,mcts}" in text and "--config CONFIG" in text and "FIELD=VALUE" in text
