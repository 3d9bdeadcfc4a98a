"""Real simulators behind wm_video.envs: one env per family, frames, determinism, actions, policies, ids."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from wm_video.envs import MissingExtraError, UnknownEnvError, list_env_ids, make_env, make_policy

pytest.importorskip("gymnasium")
pytest.importorskip("ale_py")
pytest.importorskip("mujoco")
pytest.importorskip("metaworld")

ONE_PER_FAMILY = ["ALE/Pong-v5", "CartPole-v1", "Pusher-v5", "LunarLander-v3", "metaworld/reach-v3"]
SIZE = 64


def _rollout(env, seed: int, actions: list) -> list[np.ndarray]:
    frames = [env.reset(seed=seed).frame]
    frames += [env.step(a).frame for a in actions]
    return frames


@pytest.fixture(scope="module", params=ONE_PER_FAMILY)
def env(request):
    e = make_env(request.param, size=SIZE)
    yield e
    e.close()


def test_import_needs_no_simulator():
    code = ("import sys, wm_video.envs; "
            "bad = [m for m in ('gymnasium', 'mujoco', 'ale_py', 'metaworld') if m in sys.modules]; "
            "assert not bad, bad")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_frames_actions_and_steps(env):
    rng = np.random.default_rng(0)
    res = env.reset(seed=0)
    assert (res.reward, res.terminated, res.truncated) == (0.0, False, False)
    frames, actions = [res.frame], []
    for _ in range(8):
        a = env.sample_action(rng)
        actions.append(a)
        res = env.step(a)
        assert isinstance(res.reward, float)
        frames.append(res.frame)
    for f in frames:
        assert f.dtype == np.uint8 and f.shape == (SIZE, SIZE, 3)
    assert np.stack(frames).std() > 1.0, "frames are constant"
    dtype = np.int64 if env.action_space.kind == "discrete" else np.float32
    env.action_space.validate(np.asarray(actions, dtype=dtype), len(actions))  # raises SchemaError on mismatch
    if env.action_space.kind == "discrete":
        assert all(isinstance(a, int) for a in actions)
    else:
        assert all(a.dtype == np.float32 and a.shape == (env.action_space.dim,) for a in actions)
    assert env.fps > 0


def test_same_seed_same_frames(env):
    rng = np.random.default_rng(1)
    actions = [env.sample_action(rng) for _ in range(5)]
    first = _rollout(env, 3, actions)
    second = _rollout(env, 3, actions)
    for a, b in zip(first, second, strict=True):
        np.testing.assert_array_equal(a, b)


def test_bad_action_rejected(env):
    env.reset(seed=0)
    bad = env.action_space.n if env.action_space.kind == "discrete" else np.zeros(env.action_space.dim + 1)
    with pytest.raises(ValueError):
        env.step(bad)


def test_metaworld_reach_expert_succeeds():
    with make_env("metaworld/reach-v3", size=SIZE, max_episode_steps=150) as env:
        assert env.has_scripted_policy
        policy = make_policy("scripted", env, seed=0)
        res = env.reset(seed=5)
        policy.reset()
        success = False
        while not (res.terminated or res.truncated):
            action = policy.act(res)
            assert action.dtype == np.float32 and np.all(np.abs(action) <= 1)
            res = env.step(action)
            success = success or res.info["success"]
            if success:
                break
        assert success


def _mean_length(env, policy_name: str, episodes: int = 3) -> float:
    lengths = []
    for e in range(episodes):
        policy = make_policy(policy_name, env, seed=e)
        res, n = env.reset(seed=e), 0
        while not (res.terminated or res.truncated):
            res, n = env.step(policy.act(res)), n + 1
        lengths.append(n)
    return float(np.mean(lengths))


def test_cartpole_expert_outlasts_random():
    with make_env("CartPole-v1", size=SIZE, max_episode_steps=300) as env:
        scripted, random = _mean_length(env, "scripted"), _mean_length(env, "random")
    assert scripted >= 250 and scripted > 5 * random


def test_crop_square_frames_the_object():
    from wm_video.envs.gym_env import crop_square

    frame = np.zeros((128, 128, 3), np.uint8)
    frame[40:50, 60:70] = 255  # the "object", above the middle
    crop = crop_square(frame, 0.5, 0.36)
    assert crop.shape == (64, 64, 3)
    assert crop.sum() == frame.sum()  # all of it kept
    assert crop_square(frame, 0.5, 0.0).shape == (64, 64, 3)  # a centre near the edge is clamped inside


def test_inverted_pendulum_frames_follow_the_pole():
    # Rendered at 2x and cropped: the upright pole is a tall column of pixels in the middle of the frame.
    with make_env("InvertedPendulum-v5", size=SIZE) as env:
        frame = env.reset(seed=0).frame
    assert frame.shape == (SIZE, SIZE, 3)
    lit = frame.max(axis=2) > 40
    rows = np.flatnonzero(lit[:, SIZE // 2 - 2: SIZE // 2 + 3].any(axis=1))
    assert rows.max() - rows.min() > SIZE // 2


def test_inverted_pendulum_expert_balances():
    # MuJoCo cart-pole: random forces drop the pole in about 5 steps; the linear balancer holds it to the cap.
    with make_env("InvertedPendulum-v5", size=SIZE, max_episode_steps=150) as env:
        scripted, random = _mean_length(env, "scripted"), _mean_length(env, "random")
    assert scripted == 150 and random < 30


def test_noisy_continuous_actions_in_bounds():
    with make_env("Pendulum-v1", size=SIZE, max_episode_steps=20) as env:
        policy = make_policy("noisy", env, seed=0, noise=1.0)
        res = env.reset(seed=0)
        for _ in range(20):
            a = policy.act(res)
            assert a.dtype == np.float32 and -2.0 <= a[0] <= 2.0
            res = env.step(a)
        assert res.truncated


def test_random_policy_holds_each_action():
    with make_env("Pendulum-v1", size=SIZE, max_episode_steps=20) as env:
        policy = make_policy("random", env, seed=0, hold=3)
        res = env.reset(seed=0)
        acts = [policy.act(res).copy() for _ in range(9)]
        policy.reset()  # a new episode draws afresh
        after = policy.act(res)
    runs = [acts[i : i + 3] for i in range(0, 9, 3)]
    assert all(np.array_equal(r[0], a) for r in runs for a in r)
    assert not np.array_equal(runs[0][0], runs[1][0]) and not np.array_equal(runs[1][0], runs[2][0])
    assert not np.array_equal(after, acts[-1])
    with pytest.raises(ValueError, match="hold must be >= 1"):
        make_policy("random", env, seed=0, hold=0)


def test_hold_is_refused_for_the_expert():
    from wm_video.data.schema import SchemaError
    from wm_video.envs.collect import CollectConfig

    with pytest.raises(SchemaError, match=r"'hold'.*random policy only"):
        CollectConfig(env="metaworld/reach-v3", policy="noisy", hold=4).validate()


def test_max_episode_steps_truncates():
    with make_env("ALE/Pong-v5", size=SIZE, max_episode_steps=5) as env:
        res = env.reset(seed=0)
        flags = [env.step(0).truncated for _ in range(5)]
        assert flags == [False] * 4 + [True] and res.frame.shape == (SIZE, SIZE, 3)


def test_unknown_id_says_how_to_list():
    with pytest.raises(UnknownEnvError, match="wm-video data envs") as info:
        make_env("CartPol-v1")
    assert "CartPole-v1" in str(info.value)  # close match offered
    with pytest.raises(UnknownEnvError, match="wm-video data envs"):
        make_env("metaworld/reach-v99")


def test_scripted_on_atari_is_a_clear_error():
    with make_env("ALE/Pong-v5", size=SIZE) as env:
        assert not env.has_scripted_policy
        with pytest.raises(ValueError, match=r"no scripted policy.*metaworld"):
            make_policy("scripted", env, seed=0)
        with pytest.raises(ValueError, match="unknown policy"):
            make_policy("greedy", env, seed=0)


def test_list_env_ids_per_family():
    atari, gym, mw = list_env_ids("atari"), list_env_ids("gymnasium"), list_env_ids("metaworld")
    assert "ALE/Pong-v5" in atari and "ALE/Breakout-v5" in atari
    assert {"CartPole-v1", "LunarLander-v3", "Pusher-v5", "HalfCheetah-v5"} <= set(gym)
    assert "Reacher-v2" not in gym  # mujoco-py stubs are not listed
    assert {"metaworld/reach-v3", "metaworld/push-v3", "metaworld/pick-place-v3"} <= set(mw) and len(mw) == 50
    assert list_env_ids() == atari + gym + mw
    with pytest.raises(ValueError):
        list_env_ids("robots")


def test_missing_extra_is_an_import_error():
    assert issubclass(MissingExtraError, ImportError)
    from wm_video.envs.base import require_sim

    with pytest.raises(MissingExtraError, match="no_such_sim_module") as info:
        require_sim("no_such_sim_module")
    assert "install the 'sim' extra" in str(info.value)
