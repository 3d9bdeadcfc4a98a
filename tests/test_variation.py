"""Domain variation on real simulators: the default changes nothing, scene shifts change the frames, dynamics
shifts change the motion, per-episode draws are reproducible, and collection records what it used."""

from __future__ import annotations

import json

import numpy as np
import pytest

from wm_video.config import ConfigError, load_config
from wm_video.data.reader import iter_clips, shard_paths
from wm_video.data.schema import SchemaError
from wm_video.envs import make_env
from wm_video.envs.collect import CollectConfig, collect
from wm_video.envs.variation import Variation, transform_frame

pytest.importorskip("gymnasium")
pytest.importorskip("ale_py")
pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

SIZE = 32
SCENE_SHIFTS = [dict(hue=90.0), dict(light=0.5), dict(camera_azimuth=15.0), dict(camera_elevation=10.0),
                dict(camera_distance=1.3)]


@pytest.fixture(scope="module")
def reacher():
    env = make_env("Reacher-v5", size=SIZE)
    yield env
    env.close()


@pytest.fixture(scope="module")
def reach():
    env = make_env("metaworld/reach-v3", size=SIZE, max_episode_steps=20)
    yield env
    env.close()


def rollout(env, variation: Variation, steps: int = 8, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Frames ``(steps + 1, h, w, 3)`` and flat observations of ``steps`` random actions (the same every call)."""
    env.set_variation(variation)
    rng = np.random.default_rng(7)
    res = env.reset(seed=seed)
    frames, obs = [res.frame], [np.ravel(res.obs)]
    for _ in range(steps):
        res = env.step(env.sample_action(rng))
        frames.append(res.frame)
        obs.append(np.ravel(res.obs))
    return np.stack(frames), np.stack(obs)


def pixel_change(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def test_the_default_changes_nothing(reacher):
    fresh = make_env("Reacher-v5", size=SIZE)
    try:
        plain, _ = rollout(fresh, Variation())
    finally:
        fresh.close()
    assert Variation().is_default and Variation().to_dict() == {}
    shifted, _ = rollout(reacher, Variation(hue=60.0, mass_scale=2.0, camera_elevation=5.0))
    back, _ = rollout(reacher, Variation())  # a variation, then the default again: the simulator's own world
    assert pixel_change(shifted, plain) > 1.0
    np.testing.assert_array_equal(back, plain)


@pytest.mark.parametrize("env_name", ["reacher", "reach"])
def test_fixed_scene_shifts_change_the_frames(env_name, request):
    env = request.getfixturevalue(env_name)
    plain, _ = rollout(env, Variation(), steps=0)
    for shift in SCENE_SHIFTS:
        frames, _ = rollout(env, Variation(**shift), steps=0)
        assert pixel_change(frames, plain) > 1.0, shift
    again, _ = rollout(env, Variation(), steps=0)  # textures and camera restored after every shift
    np.testing.assert_array_equal(again, plain)


def test_dynamics_shifts_change_the_motion_not_the_start(reacher):
    plain_frames, plain_obs = rollout(reacher, Variation(), steps=12)
    for shift in (dict(mass_scale=1.5), dict(damping_scale=2.0)):
        frames, obs = rollout(reacher, Variation(**shift), steps=12)
        np.testing.assert_array_equal(frames[0], plain_frames[0])
        np.testing.assert_array_equal(obs[0], plain_obs[0])
        assert np.abs(obs[-1] - plain_obs[-1]).max() > 1e-2, shift
        assert pixel_change(frames[-1], plain_frames[-1]) > 0.05, shift


def test_friction_changes_contact_motion():
    env = make_env("HalfCheetah-v5", size=SIZE)  # its feet slide on the floor; Reacher has no contacts
    try:
        plain_frames, plain_obs = rollout(env, Variation(), steps=10)
        frames, obs = rollout(env, Variation(friction_scale=0.3), steps=10)
    finally:
        env.close()
    np.testing.assert_array_equal(frames[0], plain_frames[0])
    assert np.abs(obs[-1] - plain_obs[-1]).max() > 1e-2
    assert pixel_change(frames[-1], plain_frames[-1]) > 0.05


def test_meta_world_mass_changes_the_motion(reach):
    _, plain = rollout(reach, Variation(), steps=10)
    _, heavy = rollout(reach, Variation(mass_scale=3.0), steps=10)
    assert np.abs(heavy[-1] - plain[-1]).max() > 1e-3


def test_non_mujoco_envs_take_frame_shifts_and_name_what_they_cannot_apply():
    env = make_env("ALE/Pong-v5", size=SIZE)
    try:
        plain, _ = rollout(env, Variation(), steps=3)
        shift = Variation(frame_hue=120.0, frame_brightness=0.6)
        frames, _ = rollout(env, shift, steps=3)
        assert pixel_change(frames, plain) > 5.0
        np.testing.assert_array_equal(frames, np.stack([transform_frame(f, shift) for f in plain]))
        with pytest.raises(ValueError, match=r"'ALE/Pong-v5' cannot apply variation field\(s\) hue, mass_scale"):
            env.set_variation(Variation(mass_scale=1.3, hue=10.0, frame_hue=5.0))
    finally:
        env.close()
    with pytest.raises(ValueError, match=r"'CartPole-v1' cannot apply variation field\(s\) camera_azimuth"):
        make_env("CartPole-v1", size=SIZE, variation=Variation(camera_azimuth=5.0, frame_brightness=0.9))


def test_bad_values_name_the_field(reacher):
    with pytest.raises(ValueError, match=r"variation\.mass_scale.*> 0"):
        Variation(mass_scale=-1.0)
    with pytest.raises(ValueError, match=r"variation\.hue.*low <= high"):
        Variation(hue=[30.0, 10.0])
    with pytest.raises(ConfigError, match=r"variation\.friction_scale.*>= 0"):
        load_config("collect", overrides=["variation.friction_scale=-0.5"])
    with pytest.raises(ConfigError, match=r"unknown field 'variation\.mass'.*mass_scale"):
        load_config("collect", overrides=["variation.mass=2"])
    with pytest.raises(ValueError, match="draw the ranges first"):
        reacher.set_variation(Variation(hue=[0.0, 10.0]))
    reacher.set_variation(Variation(camera_elevation=-50.0))  # Reacher looks down at 45 degrees: past vertical
    with pytest.raises(ValueError, match=r"variation\.camera_elevation"):
        reacher.reset(seed=0)
    cfg = load_config("collect", overrides=["variation.hue=[-10,10]", "variation.mass_scale=1.3"])
    assert (cfg.variation.hue, cfg.variation.mass_scale, cfg.variation.is_random) == ([-10.0, 10.0], 1.3, True)


def test_per_episode_draws_differ_and_repeat_with_the_seed(reacher):
    cfg = CollectConfig(env="Reacher-v5", seed=3, variation=Variation(hue=[-40.0, 40.0], mass_scale=[0.7, 1.4]))
    first, second = cfg.episode_variation(0), cfg.episode_variation(1)
    assert first.hue != second.hue and first.mass_scale != second.mass_scale
    assert first == CollectConfig(env="Reacher-v5", seed=3, variation=cfg.variation).episode_variation(0)
    assert first != CollectConfig(env="Reacher-v5", seed=4, variation=cfg.variation).episode_variation(0)
    frames = [rollout(reacher, cfg.episode_variation(e), steps=0)[0] for e in (0, 1, 0)]
    assert pixel_change(frames[0], frames[1]) > 0.5
    np.testing.assert_array_equal(frames[0], frames[2])


def test_collect_records_the_variation_and_resumes_only_with_it(tmp_path):
    ranges = Variation(hue=[-30.0, 30.0], damping_scale=[0.8, 1.25], light=0.8)
    cfg = CollectConfig(env="Reacher-v5", episodes=2, episodes_per_shard=1, clip_len=8, max_episode_steps=16,
                        workers=1, size=SIZE, variation=ranges)
    info = collect(cfg, tmp_path / "a", show_progress=False)
    assert info.source["variation"] == {"light": 0.8, "hue": [-30.0, 30.0], "damping_scale": [0.8, 1.25]}
    assert json.loads((tmp_path / "a" / "collect.json").read_text())["variation"] == info.source["variation"]
    clips = [c for url in shard_paths(tmp_path / "a", info) for c in iter_clips(url, info.action_space)]
    draws = {c.meta.episode_id: c.meta.extra["variation"] for c in clips}
    assert len(draws) == 2 and len({d["hue"] for d in draws.values()}) == 2
    for d in draws.values():
        assert set(d) == {"hue", "light", "damping_scale"} and d["light"] == 0.8 and -30 <= d["hue"] <= 30
    again = collect(cfg, tmp_path / "b", show_progress=False)
    clips_again = [c for url in shard_paths(tmp_path / "b", again) for c in iter_clips(url, again.action_space)]
    for c, d in zip(clips, clips_again, strict=True):
        np.testing.assert_array_equal(c.frames, d.frames)
        assert c.meta.extra == d.meta.extra
    assert collect(cfg, tmp_path / "a", show_progress=False) is not None  # same settings: resumes
    plain = CollectConfig(**{**vars(cfg), "variation": Variation()})
    with pytest.raises(SchemaError, match="variation"):
        collect(plain, tmp_path / "a", show_progress=False)
    info = collect(plain, tmp_path / "plain", show_progress=False)  # the default records nothing
    assert "variation" not in info.source
    assert "variation" not in json.loads((tmp_path / "plain" / "collect.json").read_text())


def test_collect_refuses_a_field_the_env_cannot_apply_before_writing(tmp_path):
    cfg = CollectConfig(env="ALE/Pong-v5", episodes=1, workers=1, size=SIZE, variation=Variation(mass_scale=1.2))
    with pytest.raises(ValueError, match=r"'ALE/Pong-v5' cannot apply variation field\(s\) mass_scale"):
        collect(cfg, tmp_path, show_progress=False)
    assert not list(tmp_path.glob("*.tar"))
