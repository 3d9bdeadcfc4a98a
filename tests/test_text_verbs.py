"""Task text on the sampling verbs: ``wm-video generate``, ``plan``, ``imagine-train``, ``play`` (its session) and
``eval`` take ``--task``, ``--text-encoder`` and ``--text-guidance-scale``; the text changes what a text model
predicts, guidance scale 1 is plain sampling and 0 the text-free model, and a model trained without text refuses
all three."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from test_planning import tiny_world_model
from text_fixtures import make_text_matter, save_tiny_text_encoder, write_task_frames

from wm_video.cli import main
from wm_video.envs import WorldModelVectorEnv
from wm_video.play import PlayConfig, PlaySession
from wm_video.utils.video_io import read_video

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


@pytest.fixture(scope="module")
def models(tmp_path_factory) -> Path:
    """root/{t5, data, wm_text, wm_plain}: a tiny T5, clips of tasks "reach" and "push" (2 discrete actions), a
    discrete world model trained (here: perturbed) with task text, and the same model without text."""
    root = tmp_path_factory.mktemp("textverbs")
    encoder = save_tiny_text_encoder(root / "t5")
    write_task_frames(root / "data", ["reach", "push"], num_actions=2)
    for name, dyn in (("wm_text", {"text_dim": 16, "text_encoder": str(encoder)}), ("wm_plain", {})):
        model = tiny_world_model("discrete", **dyn)
        make_text_matter(model.dynamics)
        model.info.source = {"data": str(root / "data")}
        model.save_pretrained(root / name)
    return root


def generate(root: Path, out: Path, *flags: str, model: str = "wm_text") -> tuple[int, np.ndarray | None, dict]:
    """``wm-video generate`` of clip 0 (task "reach"), sampled and seeded: exit code, frames, trace."""
    code = main(["generate", "--model", str(root / model), "--context", f"{root / 'data'}#0", "--context-frames",
                 "2", "--num-frames", "3", "--maskgit-steps", "2", "--scale", "1", "--out", str(out), *flags])
    if code:
        return code, None, {}
    return code, read_video(out), json.loads(out.with_suffix(".json").read_text())


def same_video(a: np.ndarray, b: np.ndarray) -> bool:
    """Two decoded H.264 videos of the same frames: libx264 here does not always encode the same frames to the same
    bytes (the same pixels in, seeded: a few pixels of a later file differ by up to ~20 levels, 0.3 on average), so
    equal means equal up to that coding noise, far below what another task's future changes."""
    return a.shape == b.shape and float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean()) < 1.0


def test_generate_follows_the_task_text(models, tmp_path):
    _, own, own_trace = generate(models, tmp_path / "own.mp4")  # the clip's own task
    _, reach, reach_trace = generate(models, tmp_path / "reach.mp4", "--task", "reach")
    _, push, push_trace = generate(models, tmp_path / "push.mp4", "--task", "push")
    assert (own_trace["task"], reach_trace["task"], push_trace["task"]) == ("reach", "reach", "push")
    assert same_video(own, reach) and own_trace["steps"] == reach_trace["steps"]
    assert not same_video(reach, push)  # another task's text, another future
    assert [s["reward"] for s in reach_trace["steps"]] != [s["reward"] for s in push_trace["steps"]]


def test_generate_text_guidance_one_is_plain_sampling_and_zero_ignores_the_task(models, tmp_path):
    _, plain, plain_trace = generate(models, tmp_path / "plain.mp4", "--task", "push")
    _, one, one_trace = generate(models, tmp_path / "one.mp4", "--task", "push", "--text-guidance-scale", "1")
    assert same_video(plain, one) and plain_trace["steps"] == one_trace["steps"]
    assert one_trace["text_guidance_scale"] == 1.0
    _, two, two_trace = generate(models, tmp_path / "two.mp4", "--task", "push", "--text-guidance-scale", "3")
    assert not same_video(plain, two) and two_trace["text_guidance_scale"] == 3.0
    # scale 0 is the text-free model: the frames no longer depend on the task (the outcome heads still read it)
    _, zero_push, _ = generate(models, tmp_path / "zp.mp4", "--task", "push", "--text-guidance-scale", "0")
    _, zero_reach, _ = generate(models, tmp_path / "zr.mp4", "--task", "reach", "--text-guidance-scale", "0")
    assert same_video(zero_push, zero_reach) and not same_video(zero_push, plain)


def test_a_text_model_needs_its_task_and_encoder(models, tmp_path, capsys):
    frames = tmp_path / "frames"
    frames.mkdir()
    from PIL import Image

    for i in range(2):
        Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(frames / f"{i}.png")
    code = main(["generate", "--model", str(models / "wm_text"), "--context", str(frames), "--context-frames", "2",
                 "--num-frames", "1", "--actions", str(_actions(tmp_path)), "--out", str(tmp_path / "x.mp4")])
    err = capsys.readouterr().err
    assert code == 2 and "--task TEXT" in err and str(models / "wm_text") in err  # images carry no task
    assert generate(models, tmp_path / "y.mp4", "--task", "reach", "--text-encoder", str(tmp_path / "nope"))[0] == 2
    assert "nope: not a folder" in capsys.readouterr().err


def _actions(tmp_path: Path) -> Path:
    path = tmp_path / "actions.json"
    path.write_text("[1]")
    return path


def test_a_model_without_text_refuses_the_text_settings(models, tmp_path, capsys):
    plain = str(models / "wm_plain")
    for flags in (["--task", "reach"], ["--text-guidance-scale", "2"], ["--text-encoder", str(models / "t5")]):
        assert generate(models, tmp_path / "g.mp4", *flags, model="wm_plain")[0] == 2
        err = capsys.readouterr().err
        assert flags[0] in err and "trained without task text" in err and plain in err, err
        assert main(["eval", "--model", plain, "--data", str(models / "data"), "--out", str(tmp_path / "eval"),
                     *flags]) == 2
        assert "trained without task text" in capsys.readouterr().err
        with pytest.raises(ValueError, match="trained without task text"):
            PlaySession(plain, PlayConfig(record=False, split="all", **_setting(flags)))
    assert main(["plan", "--model", plain, "--env", "CartPole-v1", "--planner", "mcts", "--task", "reach",
                 "--out", str(tmp_path / "plan")]) == 2
    assert "trained without task text" in capsys.readouterr().err
    assert generate(models, tmp_path / "ok.mp4", model="wm_plain")[0] == 0  # and samples as before without them


def _setting(flags: list[str]) -> dict:
    value = flags[1]
    name = flags[0].removeprefix("--").replace("-", "_")
    return {name: float(value) if name == "text_guidance_scale" else value}


def test_eval_records_the_text_guidance_scale(models, tmp_path):
    def run(out: str, *flags: str) -> dict:
        assert main(["eval", "--model", str(models / "wm_text"), "--data", str(models / "data"), "--horizon", "2",
                     "--context-frames", "2", "--val-fraction", "0.5", "--temperature", "1", "--maskgit-steps", "2",
                     "--methods", "model", "--out", str(tmp_path / out), *flags]) == 0
        return json.loads((tmp_path / out / "report.json").read_text())

    guided = run("guided", "--text-guidance-scale", "2")
    assert guided["protocol"]["text_guidance_scale"] == 2.0
    assert "text guidance scale 2" in (tmp_path / "guided" / "report.md").read_text()
    zero_push, zero_reach = run("zp", "--task", "push", "--text-guidance-scale", "0"), run(
        "zr", "--task", "reach", "--text-guidance-scale", "0")
    assert zero_push["results"] == zero_reach["results"]  # the text-free model, whatever the task
    assert run("plain")["results"] != zero_push["results"]


def test_plan_takes_the_task(models, tmp_path, capsys):
    pytest.importorskip("gymnasium")
    args = ["plan", "--model", str(models / "wm_text"), "--env", "CartPole-v1", "--planner", "mcts", "--episodes",
            "1", "--max-steps", "2", "--horizon", "2", "--simulations", "4", "--parallel", "2", "--rollout-depth", "1",
            "--maskgit-steps", "1", "--no-baseline", "--video-episodes", "1", "--out", str(tmp_path / "plan")]
    assert main(args) == 2  # CartPole has no task name to default to
    assert "--task TEXT" in capsys.readouterr().err
    assert main([*args, "--task", "push", "--text-guidance-scale", "2"]) == 0
    report = json.loads((tmp_path / "plan" / "report.json").read_text())
    assert report["settings"]["task"] == "push" and report["settings"]["text_guidance_scale"] == 2.0
    assert report["results"]["mcts"]["decisions"] == 2


def test_play_session_and_gym_env_take_the_task(models, tmp_path):
    def play(task: str | None, **kw) -> PlaySession:
        cfg = PlayConfig(task=task, temperature=1.0, maskgit_steps=2, record=False, split="all", **kw)
        return PlaySession(models / "wm_text", cfg)

    with pytest.raises(ValueError, match="--task TEXT"):
        play(None)
    frames = {}
    for task in ("reach", "push"):
        s = play(task, policy="mcts", plan_horizon=1)
        assert s.task == task and s.describe()["task"] == task and s.describe()["text_guidance_scale"] == 1.0
        s.reset(0)
        frames[task] = [s.step(["1"]).image for _ in range(3)]
        s.set_controller("mcts")
        assert s.step().action in ("action 0", "action 1") and s.policies["mcts"].env.text is not None
    assert any(not np.array_equal(a, b) for a, b in zip(frames["reach"], frames["push"], strict=True))
    # the vector env restarts ended rows with the task's text too
    envs = WorldModelVectorEnv(2, models / "wm_text", task="reach", horizon=1, maskgit_steps=1, split="all")
    envs.reset(seed=0)
    for _ in range(3):
        obs, *_ = envs.step(np.array([0, 1]))
    assert obs.shape == (2, 32, 32, 3)


def test_text_encoder_overrides_the_folder_the_model_records(models, tmp_path, capsys):
    model = tiny_world_model("discrete", text_dim=16, text_encoder=str(tmp_path / "gone"))  # as the fixture's
    make_text_matter(model.dynamics)
    model.save_pretrained(models / "wm_moved")  # its encoder recorded at a folder not on this machine
    assert generate(models, tmp_path / "a.mp4", "--task", "reach", model="wm_moved")[0] == 2
    err = capsys.readouterr().err
    assert "gone, which is not a folder" in err and "--text-encoder PATH" in err and "wm_moved" in err
    _, frames, trace = generate(models, tmp_path / "b.mp4", "--task", "reach", "--text-encoder",
                                str(models / "t5"), model="wm_moved")
    assert trace["task"] == "reach" and same_video(frames, generate(models, tmp_path / "c.mp4", "--task",
                                                                        "reach")[1])


def test_imagine_train_takes_the_task(models, tmp_path, capsys):
    args = ["imagine-train", "--data", str(models / "data"), "--iterations", "2", "--batch-size", "2", "--horizon",
            "2", "--start-states", "2", "--context-frames", "2", "--maskgit-steps", "1", "--episodes", "0",
            "--log-every", "1", "--video-episodes", "0", "--out", str(tmp_path / "imagine")]
    assert main([*args, "--model", str(models / "wm_text")]) == 2  # dataset start contexts: no default task
    err = capsys.readouterr().err
    assert "--task TEXT" in err and "imagine-train" in err and str(models / "wm_text") in err
    assert main([*args, "--model", str(models / "wm_text"), "--task", "push", "--text-guidance-scale", "2"]) == 0
    report = json.loads((tmp_path / "imagine" / "report.json").read_text())
    assert report["settings"]["task"] == "push" and report["settings"]["text_guidance_scale"] == 2.0
    assert len(report["training"]["history"]) == 2 and report["training"]["imagined_frames"] == 2 * 2 * 2
    assert main([*args, "--model", str(models / "wm_plain"), "--task", "push"]) == 2
    err = capsys.readouterr().err
    assert "--task 'push'" in err and "trained without task text" in err and str(models / "wm_plain") in err
