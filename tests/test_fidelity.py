"""The fidelity suite's pieces: the evaluation rows it reads, its verdicts, its bad-input errors, and one smoke run
of the whole suite (collect -> tokenizer -> tokenize -> dynamics -> export -> eval) on a real simulator."""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path
from typing import ClassVar

import gymnasium as gym
import numpy as np
import pytest
from conftest import write_dataset
from test_world_model import make_world_model

from wm_video.cli import main
from wm_video.evaluation.verdicts import format_verdicts, verdicts

ROOT = Path(__file__).resolve().parents[1]


def load_suite():
    spec = importlib.util.spec_from_file_location("fidelity_run", ROOT / "eval" / "fidelity" / "run.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules["fidelity_run"] = mod
    spec.loader.exec_module(mod)
    return mod


def report(model, copy, shuffled=None, ceiling=None, moving=None, notes=None):
    res = {"model": {"psnr_db": model}, "copy_last_frame": {"psnr_db": copy}}
    if shuffled is not None:
        res["shuffled_actions"] = {"psnr_db": shuffled}
    if ceiling is not None:
        res["tokenizer_ceiling"] = {"psnr_db": ceiling, "psnr_moving_db": moving}
    return {"results": res, "notes": notes or {}}


def test_verdicts_on_hand_made_reports():
    v = verdicts(report([30, 28, 26], [29, 25, 23], [29, 26, 24], [31, 31, 31], [26, None, 27]))
    assert v["copy_margin_db"] == [1, 3, 3] and v["beats_copy"]  # >= 2 dB at the last horizon, ahead everywhere
    assert math.isclose(v["action_margin_db"], 5 / 3, abs_tol=0.01) and v["follows_actions"]
    assert v["ceiling_gap_h1_db"] == 1 and v["near_ceiling"]
    assert v["ceiling_moving_db"] == 26.5 and v["tokens_keep_motion"]  # a horizon where nothing moved is skipped
    v = verdicts(report([30, 24], [31, 20], [29.5, 23.5]))
    assert not v["beats_copy"] and not v["follows_actions"]  # behind at h=1; 0.5 dB action margin
    v = verdicts(report([30, 24], [29, 20], notes={"shuffled_actions": "absent: the dataset has no actions"}))
    assert v["follows_actions"] is None and "no actions" in format_verdicts(v)


def test_eval_on_action_free_data_has_no_action_rows_and_says_why(tmp_path):
    make_world_model(decoder=False, action_type="none").save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=3, t=6, size=32, kind="none")
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tmp_path / "wm"), "--data", str(tmp_path / "ds"), "--horizon", "3",
                 "--context-frames", "2", "--out", str(out), "--maskgit-steps", "2", "--val-fraction", "0.5"]) == 0
    rep = json.loads((out / "report.json").read_text())
    assert set(rep["results"]) == {"model", "copy_last_frame", "tokenizer_ceiling"}
    assert "no action space" in rep["notes"]["shuffled_actions"] and "null_actions" in rep["notes"]
    assert "shuffled_actions: absent" in (out / "report.md").read_text()
    # moving-pixel PSNR and changed-token accuracy are there for every horizon (random frames: everything moves)
    assert all(len(rep["results"]["model"][k]) == 3 for k in ("psnr_moving_db", "changed_token_accuracy"))
    assert verdicts(rep)["follows_actions"] is None


class NoFrames(gym.Env):
    """A gymnasium env with no rgb_array render mode."""

    metadata: ClassVar[dict] = {"render_modes": []}
    observation_space = gym.spaces.Box(-1, 1, (2,))
    action_space = gym.spaces.Discrete(2)

    def __init__(self, render_mode=None):
        self.render_mode = render_mode

    def reset(self, seed=None, options=None):
        return np.zeros(2, np.float32), {}

    def step(self, action):
        return np.zeros(2, np.float32), 0.0, False, False, {}


def test_suite_names_an_environment_that_renders_no_frames():
    suite = load_suite()
    gym.register("WmVideoNoFrames-v0", entry_point=f"{__name__}:NoFrames")
    try:
        with pytest.raises(SystemExit, match="environment 'WmVideoNoFrames-v0'"):
            suite.check_env_renders("WmVideoNoFrames-v0")
        with pytest.raises(SystemExit, match="environment 'NoSuchEnv-v9'"):
            suite.main(["--envs", "NoSuchEnv-v9", "--smoke", "--out", "/nonexistent"])
    finally:
        gym.registry.pop("WmVideoNoFrames-v0", None)


def test_suite_smoke_run_builds_scores_and_resumes(tmp_path, monkeypatch):
    monkeypatch.setenv("MUJOCO_GL", "egl")
    suite = load_suite()
    out = tmp_path / "fid"
    summary = suite.main(["--envs", "ALE/Boxing-v5", "--smoke", "--out", str(out)])
    env = summary["envs"]["ALE/Boxing-v5"]
    assert set(env["stage_seconds"]) == {"collect", "tokenizer", "tokenize", "dynamics", "export", "eval"}
    assert all(t["cpu_s"] > 0 for t in env["stage_seconds"].values())
    res = env["results"]
    assert set(res) == {"model", "copy_last_frame", "shuffled_actions", "null_actions", "tokenizer_ceiling"}
    assert len(res["model"]["psnr_moving_db"]) == 8 and len(res["null_actions"]["changed_token_accuracy"]) == 8
    assert {"beats_copy", "follows_actions", "near_ceiling", "tokens_keep_motion"} <= set(env["verdicts"])
    md = (out / "results.md").read_text()
    assert "PSNR on moving pixels" in md and "follows its actions" in md and "CPU seconds per stage" in md
    # a rerun finds every stage done and runs none
    before = (out / "ALE_Boxing-v5" / "world_model" / "world_model.json").stat().st_mtime_ns
    assert suite.main(["--envs", "ALE/Boxing-v5", "--smoke", "--out", str(out)])["envs"]["ALE/Boxing-v5"]
    assert (out / "ALE_Boxing-v5" / "world_model" / "world_model.json").stat().st_mtime_ns == before


def test_set_changes_scalar_fields_and_appends_to_the_override_lists():
    suite = load_suite()
    base = suite.recipe_for("ALE/Boxing-v5")
    changes = suite.recipe_changes(["dynamics_steps=2000", "tokenizer+=model.downsample=16",
                                    "tokenizer+=model.codebook_size=512", "hold=2"], base)
    assert changes["dynamics_steps"] == 2000 and changes["hold"] == 2
    assert changes["tokenizer"] == [*base.tokenizer, "model.downsample=16", "model.codebook_size=512"]
    assert "dynamics" not in changes  # lists not named keep the recipe's
    with pytest.raises(SystemExit, match="LIST\\+=OVERRIDE"):
        suite.recipe_changes(["nonsense=1"], base)
    with pytest.raises(SystemExit, match="takes a int"):
        suite.recipe_changes(["dynamics_steps=many"], base)
