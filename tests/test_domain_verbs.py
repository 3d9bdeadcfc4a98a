"""A world model trained on a mixture of three action domains (discrete, continuous, action-free), used through
every verb of one action space with ``--domain``: eval, generate, plan, the gym env and play. Built once per module
with the project's own verbs on real frame shards: a tiny tokenizer, ``data tokenize``, ``train dynamics`` on the
mixture, ``export``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset

from wm_video.cli import main

DOMAINS = {"disc": "discrete", "cont": "continuous", "video": "none"}
SIZE = 32


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer

    root = tmp_path_factory.mktemp("domains")
    VQTokenizer(TokenizerConfig(resolution=SIZE, downsample=8, base_channels=8, norm_groups=4, latent_channels=8,
                                codebook_size=16, codebook_dim=4)).save_pretrained(root / "tok")
    lines = ["kind: train_dynamics", "mixture:"]
    for name, kind in DOMAINS.items():
        write_dataset(root / name, shards=3, clips_per_shard=2, kind=kind, t=8, size=SIZE)
        assert main(["data", "tokenize", "--tokenizer", str(root / "tok"), "--data", str(root / name), "--out",
                     str(root / f"{name}_tokens")]) == 0
        lines.append(f"  - {{path: {root / f'{name}_tokens'}, weight: 1, domain: {name}}}")
    (root / "mix.yaml").write_text("\n".join(lines) + "\n")
    assert main(["train", "dynamics", "--preset", "debug", "--config", str(root / "mix.yaml"), "--out",
                 str(root / "dyn"), "--max-steps", "3", "val_fraction=0.34", "trainer.val_check_interval=3"]) == 0
    assert main(["export", "--tokenizer", str(root / "tok"), "--dynamics", str(root / "dyn"), "--data",
                 str(root / "disc"), "--out", str(root / "wm")]) == 0
    return root


def test_each_domain_is_a_world_model_of_its_own_action_space(built):
    from wm_video.world_model import WorldModel

    wm = WorldModel.from_pretrained(built / "wm")
    assert wm.domains == list(DOMAINS) and wm.action_type == "none"
    for name, kind in DOMAINS.items():
        view = wm.for_domain(name)
        assert (view.domain, view.action_type, view.domains) == (name, kind, [])
        assert view.dynamics.token_head is wm.dynamics.token_head  # the same weights, nothing copied
    cont = wm.for_domain("cont")
    assert cont.info.action_space == {"kind": "continuous", "dim": 3, "low": [-1.0] * 3, "high": [1.0] * 3}
    assert cont.info.stats["actions"]["std"] == pytest.approx(cont.dynamics.config.action_std)
    with pytest.raises(ValueError, match=r"has 3 action domains \['disc', 'cont', 'video'\]; pass domain=NAME"):
        wm.for_domain(None)
    with pytest.raises(ValueError, match=r"unknown action domain 'robot'; known: \['disc', 'cont', 'video'\]"):
        wm.for_domain("robot")


@pytest.mark.parametrize("name", list(DOMAINS))
def test_eval_scores_a_domain_on_its_data(built, tmp_path, name):
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(built / "wm"), "--data", str(built / name), "--domain", name, "--horizon",
                 "2", "--context-frames", "2", "--max-clips", "2", "--out", str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["protocol"]["domain"] == name
    assert ("shuffled_actions" in report["results"]) == (DOMAINS[name] != "none")


def test_eval_without_a_domain_or_with_the_wrong_one_is_a_clear_error(built, tmp_path, capsys):
    args = ["eval", "--model", str(built / "wm"), "--data", str(built / "cont"), "--horizon", "2",
            "--context-frames", "2", "--out", str(tmp_path / "eval")]
    assert main(args) == 2
    assert "has 3 action domains ['disc', 'cont', 'video']; pass domain=NAME" in capsys.readouterr().err
    assert main([*args, "--domain", "disc"]) == 2
    err = capsys.readouterr().err
    assert "dataset.json: the data has continuous actions (3 dims), but its action domain 'disc' takes discrete " \
           "actions (6)" in err
    assert not (tmp_path / "eval" / "report.json").exists()


def test_generate_with_a_domain(built, tmp_path):
    out = tmp_path / "pred.mp4"
    assert main(["generate", "--model", str(built / "wm"), "--context", f"{built / 'cont'}#0", "--domain", "cont",
                 "--context-frames", "2", "--num-frames", "3", "--out", str(out)]) == 0
    assert out.stat().st_size > 0
    trace = json.loads(out.with_suffix(".json").read_text())
    assert len(trace["steps"]) == 3 and np.asarray(trace["steps"][0]["action"]).shape == (3,)


def test_gym_env_and_play_take_a_domain(built):
    from gymnasium import spaces

    from wm_video.envs import WorldModelGymEnv
    from wm_video.play.config import PlayConfig
    from wm_video.play.session import PlaySession

    env = WorldModelGymEnv(built / "wm", data=built / "cont", domain="cont", horizon=2, maskgit_steps=1)
    assert isinstance(env.action_space, spaces.Box) and env.action_space.shape == (3,)
    assert env.action_space.low.tolist() == [-1.0] * 3 and env.action_space.high.tolist() == [1.0] * 3
    obs, _ = env.reset(seed=0)
    obs2, *_ = env.step(env.action_space.sample())
    assert obs.shape == obs2.shape == (SIZE, SIZE, 3)
    disc = WorldModelGymEnv(built / "wm", data=built / "disc", domain="disc", horizon=2, maskgit_steps=1)
    assert disc.action_space == spaces.Discrete(6)
    with pytest.raises(ValueError, match="the data has continuous actions"):
        WorldModelGymEnv(built / "wm", data=built / "cont", domain="disc")
    session = PlaySession(str(built / "wm"), PlayConfig(domain="disc", record=False, maskgit_steps=1),
                          data=str(built / "disc"))
    assert session.env.action_space == spaces.Discrete(6) and session.model.domain == "disc"


def test_plan_in_a_real_simulator_with_a_domain(built, tmp_path):
    # Pong takes 6 discrete actions, as the 'disc' domain does: MCTS plans in that domain of the shared model
    out = tmp_path / "plan"
    assert main(["plan", "--model", str(built / "wm"), "--env", "ALE/Pong-v5", "--domain", "disc", "--planner",
                 "mcts", "--episodes", "1", "--max-steps", "2", "--simulations", "2", "--parallel", "2", "--horizon",
                 "2", "--rollout-depth", "0", "--context-frames", "2", "--video-episodes", "0", "--out",
                 str(out)]) == 0
    report = json.loads((out / "report.json").read_text())
    assert set(report["results"]) == {"mcts", "random"}
    assert report["settings"]["action_space"] == {"kind": "discrete", "n": 6}
