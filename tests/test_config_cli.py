"""Configs (presets, YAML, dotted overrides) and the CLI's generated help."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from wm_video.cli import build_parser, main
from wm_video.commands.parsing import parse_docstring
from wm_video.config import ConfigError, kinds, load_config, parse_dotted, presets

CONFIGS = sorted((Path(__file__).parent.parent / "configs").rglob("*.yaml"))


def test_there_are_configs():
    assert len(CONFIGS) >= 5


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: str(p.relative_to(p.parent.parent)))
def test_every_yaml_in_configs_builds(path):
    import yaml

    cfg = load_config(yaml_path=path)
    raw = yaml.safe_load(path.read_text())

    def check(obj, values: dict, prefix: str = "") -> None:  # every value in the file reached the config
        for key, value in values.items():
            got = getattr(obj, key)
            if isinstance(value, dict):
                check(got, value, f"{prefix}{key}.")
            elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):  # e.g. mixture
                assert len(got) == len(value), f"{prefix}{key}"
                for i, (item, v) in enumerate(zip(got, value, strict=True)):
                    check(item, v, f"{prefix}{key}.{i}.")
            else:
                assert got == value, f"{prefix}{key}"

    check(cfg, {k: v for k, v in raw.items() if k not in ("kind", "preset")})


@pytest.mark.parametrize("kind", ["collect", "loader", "trainer", "tokenizer", "train_tokenizer"])
def test_every_kind_has_the_standard_presets(kind):
    assert {"debug", "small", "base", "large"} <= set(presets(kind))
    assert kind in kinds()


def test_precedence_preset_yaml_flags_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("kind: collect\npreset: debug\nepisodes: 5\nnoise: 0.1\nenv: CartPole-v1\n")
    cfg = load_config(yaml_path=path)
    assert (cfg.episodes, cfg.noise, cfg.clip_len) == (5, 0.1, 8)  # clip_len from the debug preset
    cfg = load_config(yaml_path=path, flags={"episodes": 7, "size": None}, overrides=["episodes=9", "seed=3"])
    assert (cfg.episodes, cfg.seed, cfg.size, cfg.env) == (9, 3, 64, "CartPole-v1")
    # YAML 1.1 reads '1e-3' (no dot) as a string; a float field still takes it, a word still is an error
    assert load_config("train_dynamics", preset_name="tiny", overrides=["optim.lr=1e-3"]).optim.lr == 1e-3
    with pytest.raises(ConfigError, match=r"field 'optim\.lr' expects float"):
        load_config("train_dynamics", overrides=["optim.lr=fast"])


def test_errors_name_the_field_and_source(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown field 'episdes'.*did you mean \['episodes'\]"):
        load_config("collect", overrides=["episdes=3"])
    with pytest.raises(ConfigError, match=r"command-line overrides: field 'episodes' expects int"):
        load_config("collect", overrides=["episodes=many"])
    path = tmp_path / "bad.yaml"
    path.write_text("kind: trainer\nmax_steps: [1]\n")
    with pytest.raises(ConfigError, match=r"bad.yaml: field 'max_steps'"):
        load_config(yaml_path=path)
    with pytest.raises(ConfigError, match="unknown preset 'huge'"):
        load_config("trainer", preset_name="huge")
    path.write_text("kind: loader\n")
    with pytest.raises(ConfigError, match="needs 'trainer'"):
        load_config("trainer", yaml_path=path)


def test_dotted_values_are_typed():
    assert parse_dotted(["a.b=3", "a.c=true", "d=[1, 2]", "e=x"]) == {"a": {"b": 3, "c": True}, "d": [1, 2], "e": "x"}


def test_activation_checkpointing_has_one_switch():
    """``trainer.activation_checkpointing`` is the switch; the model-level flag, set in a run config, is read as it
    and cleared (so exports never carry it), and a model config that has it still loads."""
    from wm_video.models.dynamics import DynamicsConfig

    cfg = load_config("train_dynamics", overrides=["model.gradient_checkpointing=true"])
    assert cfg.trainer.activation_checkpointing and not cfg.model.gradient_checkpointing
    assert not load_config("train_dynamics").trainer.activation_checkpointing
    assert DynamicsConfig(gradient_checkpointing=True).gradient_checkpointing  # saved configs with it load


def test_config_module_has_an_empty_registry_of_its_own():
    """``wm_video.config`` imports nothing of the project: the packages fill its registry, and a process that has
    not imported them gets an error saying what to import."""
    code = ("from wm_video.config import ConfigError, kinds, preset\nassert kinds() == []\n"
            "try:\n    preset('trainer', 'debug')\nexcept ConfigError as e:\n    print(e)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "import wm_video.registry" in out


def test_docstring_args_become_help():
    def f(x: int, y: str = "a") -> None:
        """Do a thing.

        Args:
            x: the x, in
                metres.
            y: the y.
        """

    desc, params = parse_docstring(f.__doc__)
    assert desc == "Do a thing." and params == {"x": "the x, in metres.", "y": "the y."}


def test_every_verb_has_help_for_every_flag(capsys):
    parser = build_parser()
    for argv in (["data", "collect"], ["data", "inspect"], ["data", "envs"], ["config", "show"], ["demo"]):
        with pytest.raises(SystemExit) as e:
            parser.parse_args([*argv, "--help"])
        assert e.value.code == 0
        text = capsys.readouterr().out
        assert "usage: wm-video " + " ".join(argv) in text
    with pytest.raises(SystemExit):
        parser.parse_args(["data", "collect", "--help"])
    text = capsys.readouterr().out
    for flag in ("--env", "--episodes", "--policy {random,scripted,noisy}", "--storage {raw,png,mp4}", "FIELD=VALUE"):
        assert flag in text
    assert "wm-video data envs" in text  # from the docstring


def test_config_show_prints_a_loadable_config(tmp_path, capsys):
    assert main(["config", "show", "--config", "configs/data/pong_random.yaml", "episodes=3"]) == 0
    out = capsys.readouterr().out
    (tmp_path / "again.yaml").write_text(out)
    assert load_config(yaml_path=tmp_path / "again.yaml").episodes == 3


def test_user_errors_exit_2_with_a_message(capsys):
    assert main(["config", "show", "--kind", "collect", "nope=1"]) == 2
    assert "unknown field 'nope'" in capsys.readouterr().err


def test_python_dash_m_entry_point():
    out = subprocess.run([sys.executable, "-m", "wm_video", "--help"], capture_output=True, text=True, check=True)
    assert "data" in out.stdout and "demo" in out.stdout


def test_cli_makes_openmp_threads_wait_passively_unless_told_otherwise():
    import os
    import subprocess
    import sys

    code = "import wm_video.cli, os; print(os.environ['OMP_WAIT_POLICY'])"
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    assert subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True,
                          check=True).stdout.strip() == "PASSIVE"
    assert subprocess.run([sys.executable, "-c", code], env={**env, "OMP_WAIT_POLICY": "ACTIVE"}, capture_output=True,
                          text=True, check=True).stdout.strip() == "ACTIVE"
