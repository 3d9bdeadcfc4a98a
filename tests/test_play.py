"""``wm-video play``: the key mapping, the session and its recordings, bad input, and the page driven in a real
headless browser (Debian's chromium, driven by playwright)."""

from __future__ import annotations

import shutil
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from test_gym_env import write_data
from test_planning import tiny_world_model

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.play import PlayConfig, PlaySession
from wm_video.play.controls import ALE_FULL, Controls
from wm_video.utils.video_io import read_video

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def world(tmp_path_factory, one_thread):
    """A tiny discrete world model (2 actions) whose actions change its predictions, with a dataset to start from."""
    tmp = tmp_path_factory.mktemp("play")
    write_data(tmp / "data", "discrete")
    model = tiny_world_model("discrete")
    torch.manual_seed(2)  # adaLN-Zero starts every modulation at zero: move them off it so the actions matter
    for blk in model.dynamics.backbone.blocks:
        torch.nn.init.normal_(blk.modulation.weight, std=0.5)
    model.info.source = {"data": str(tmp / "data")}
    return model.save_pretrained(tmp / "wm")


def session(folder: Path, tmp_path: Path, **kw) -> PlaySession:
    cfg = PlayConfig(**{"temperature": 0.0, "maskgit_steps": 1, "record_dir": str(tmp_path / "rec"), "clip_len": 2,
                        **kw})
    return PlaySession(folder, cfg)


def test_joystick_keys_pick_the_ale_action():
    c = Controls("discrete", n=18, meanings=ALE_FULL)
    assert c.joystick and c.keys == {"ArrowUp": "up", "ArrowDown": "down", "ArrowLeft": "left",
                                     "ArrowRight": "right", " ": "fire"}
    assert c.action([]) == ALE_FULL.index("NOOP")
    assert c.action(["ArrowUp"]) == ALE_FULL.index("UP")
    assert c.action(["ArrowRight", "ArrowUp", " "]) == ALE_FULL.index("UPRIGHTFIRE")
    assert c.action(["ArrowUp", "ArrowDown", " "]) == ALE_FULL.index("FIRE")  # opposite directions cancel
    assert c.unmapped(["x", "ArrowUp"]) == ["x"]
    minimal = Controls("discrete", n=4, meanings=("NOOP", "FIRE", "RIGHT", "LEFT"))  # Breakout's set
    assert minimal.action(["ArrowLeft"]) == 3 and minimal.action(["ArrowUp"]) == 0  # no UP: nothing it can do
    assert "ArrowUp" not in minimal.keys


def test_generic_and_continuous_keys():
    d = Controls("discrete", n=3)
    assert d.keys == {"1": "action 0", "2": "action 1", "3": "action 2"}
    assert d.action([]) == 0 and d.action(["3"]) == 2 and d.action(["3", "2"]) == 1  # the key pressed last
    assert d.unmapped(["4", "1"]) == ["4"]
    c = Controls("continuous", low=[-2.0, 0.0], high=[2.0, 1.0])
    assert np.allclose(c.action([]), [0.0, 0.5])  # no slider values: the middle
    assert np.allclose(c.action([], [1.5, 0.2]), [1.5, 0.2])
    assert np.allclose(c.action(["a"], [1.5, 0.2]), [-2.0, 0.2])  # a/d: dimension 0 to its low/high bound
    assert np.allclose(c.action(["a", "d", "w"], [1.5, 0.2]), [2.0, 1.0])  # the last pressed wins; w: dim 1 high
    assert np.allclose(c.action([], [9.0, -9.0]), [2.0, 0.0])  # sliders clipped to the bounds
    with pytest.raises(ValueError, match="sliders"):
        c.action([], [0.0])


def test_session_follows_keys_and_records_what_was_played(world, tmp_path):
    s = session(world, tmp_path)
    first = s.reset(0)
    assert first.step == 0 and first.image.shape == (32, 32, 3)
    a = s.step(["1"])
    s.reset(0)
    b = s.step(["2"])
    assert (a.action, b.action) == ("action 0", "action 1")
    assert not np.array_equal(a.image, b.image), "different keys gave the same frame"
    played = [1, 0, 0, 1]
    frames = [b.image]
    for k in played[1:]:
        frames.append(s.step([str(k + 1)]).image)
    rec = s.finish()
    assert s.recorder.recordings[0].shard is None  # the first play-through: 1 step, shorter than a clip
    assert rec.frames == 5 and rec.clips == 2
    video = read_video(rec.video)
    assert video.shape == (5, 32, 32, 3)
    batches = list(ClipLoader(Path(rec.shard).parent, LoaderConfig(batch_size=2, num_workers=0, shuffle_buffer=0)))
    actions = torch.cat([bt["actions"] for bt in batches]).flatten().tolist()
    assert actions == played  # clips of 2 frames: the actions after frames 0-1 and 2-3
    shown = torch.cat([bt["frames"] for bt in batches])  # what the loader gives back is what was shown
    assert shown.shape[0] == 2 and shown.shape[1] == 2


def test_policy_control_and_settings(world, tmp_path):
    s = session(world, tmp_path, record=False)
    assert s.describe()["policies"] == ["human", "random"]
    s.reset(1)
    s.set_controller("random")
    assert {s.step().action for _ in range(8)} <= {"action 0", "action 1"}
    s.set_sampling(temperature=0.7)
    assert s.temperature == 0.7
    with pytest.raises(ValueError, match="controller"):
        s.set_controller("cem")  # not configured
    with pytest.raises(ValueError, match="temperature"):
        s.set_sampling(temperature=-1)


def test_a_planner_takes_control(world, tmp_path):
    s = session(world, tmp_path, record=False, policy="mcts", plan_horizon=1)
    assert s.describe()["policies"] == ["human", "random", "mcts"]
    s.reset(0)
    s.set_controller("mcts")
    frame = s.step(["2"])  # the planner decides; the held key is ignored
    assert frame.action in ("action 0", "action 1") and s.policies["mcts"].imagined_frames > 0


def test_recordings_never_overwrite(world, tmp_path):
    (tmp_path / "rec").mkdir()
    (tmp_path / "rec" / "playthrough-0000.mp4").write_bytes(b"the user's file")
    s = session(world, tmp_path)
    s.reset(0)
    s.step(["1"])
    rec = s.finish()
    assert rec.video.endswith("playthrough-0001.mp4")
    assert (tmp_path / "rec" / "playthrough-0000.mp4").read_bytes() == b"the user's file"


def test_bad_input_gets_clear_errors(world, tmp_path):
    from wm_video.play.server import check_port_free

    with pytest.raises(FileNotFoundError, match=r"world_model\.json|no such folder"):
        PlaySession(tmp_path, PlayConfig())  # a folder that is not a world model
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match=f"{port} is already in use"):
            check_port_free("127.0.0.1", port)
    with pytest.raises(ValueError, match="--split"):
        PlayConfig(split="test").validate()


def test_play_verb_refuses_a_busy_port_before_loading(tmp_path):
    pytest.importorskip("fastapi")
    from wm_video.commands.play import play

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        with pytest.raises(ValueError, match="already in use"):  # the folder is not even read
            play(model=str(tmp_path / "nothing"), port=port)
    with pytest.raises(FileNotFoundError, match="no such folder"):
        play(model=str(tmp_path / "nothing"), port=port)


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed (apt-get install chromium)")
def test_page_in_a_real_browser(world, tmp_path):
    pytest.importorskip("fastapi")
    sync = pytest.importorskip("playwright.sync_api")
    from wm_video.play.server import running

    s = session(world, tmp_path, fps=10.0)
    with running(s) as url, sync.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=[
            "--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run", "--disable-quic"])
        try:
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("window.wmPlay.frames >= 2", timeout=30_000)
            assert page.inner_text("#keys").count("action") >= 2  # the mapping is on the page
            assert page.is_hidden("#task")  # a model trained without text: no task line under the title

            def first_frame_after(key: str) -> str:
                page.click("#pause")  # pause, restart from clip 0, hold the key, go on: frame 1 comes from it
                page.select_option("#start", "0")
                page.click("#reset")
                page.wait_for_function("window.wmPlay.last && window.wmPlay.last.step === 0")
                page.keyboard.down(key)
                page.click("#pause")
                page.wait_for_function("window.wmPlay.last.step >= 1", timeout=30_000)
                image = page.evaluate("window.wmPlay.last.image")
                page.keyboard.up(key)
                return image

            one, two = first_frame_after("1"), first_frame_after("2")
            assert one != two, "keys 1 and 2 showed the same predicted frame"
            page.keyboard.down("x")  # no mapping: ignored, and the page says so
            page.wait_for_function("document.getElementById('unmapped').textContent.includes('x')", timeout=30_000)
            page.keyboard.up("x")
            assert page.evaluate("window.wmPlay.latencies.length") >= 1
            page.wait_for_function("window.wmPlay.recordings.length >= 2", timeout=30_000)  # each reset wrote one
            assert not page.evaluate("window.wmPlay.errors")
        finally:
            browser.close()
    s.finish()
    recorded = [r for r in s.recorder.recordings if r.shard]
    assert recorded and all(Path(r.video).is_file() for r in s.recorder.recordings)
    batch = next(iter(ClipLoader(tmp_path / "rec" / "data", LoaderConfig(batch_size=1, num_workers=0,
                                                                          shuffle_buffer=0))))
    assert batch["frames"].shape[1:] == (2, 3, 32, 32) or batch["frames"].shape[-2:] == (32, 32)
