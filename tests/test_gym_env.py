"""The world model as a gymnasium env: check_env, the batched vector env against single envs, the registered id, an
RL library training on it, start states from data, video and images, and bad input."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

gym = pytest.importorskip("gymnasium")

from conftest import make_clip  # noqa: E402
from gymnasium.utils.env_checker import check_env  # noqa: E402
from test_planning import tiny_world_model  # noqa: E402

from wm_video.data.schema import ActionSpace  # noqa: E402
from wm_video.data.writer import ShardWriter, finalize_dataset  # noqa: E402
from wm_video.envs import WorldModelGymEnv, WorldModelVectorEnv  # noqa: E402
from wm_video.envs.world_model_gym import ENV_ID  # noqa: E402
from wm_video.utils.video_io import write_mp4  # noqa: E402

SPACES = {"discrete": ActionSpace("discrete", n=2), "continuous": ActionSpace("continuous", dim=1, low=[-2.0],
                                                                              high=[2.0])}


def write_data(root, kind: str, episodes: int = 4, clips: int = 3, t: int = 6) -> None:
    """Episodes of random 32x32 clips with actions of the tiny world model's space."""
    root.mkdir(parents=True)
    paths = []
    for e in range(episodes):
        path = root / f"shard-{e:06d}.tar"
        with ShardWriter(path, SPACES[kind], "raw") as w:
            for i in range(clips):
                clip = make_clip(e, i * t, t, 32, kind)
                clip.actions = clip.actions % 2 if kind == "discrete" else np.clip(clip.actions[:, :1], -2, 2)
                w.write(clip)
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[32, 32], fps=10.0, clip_len=t, storage="raw",
                     action_space=SPACES[kind], source={"kind": "test"})


@pytest.fixture(scope="module", params=["discrete", "continuous"])
def world(request, tmp_path_factory, one_thread):
    """(kind, world-model folder) whose index records its dataset."""
    tmp = tmp_path_factory.mktemp(f"gym_{request.param}")
    write_data(tmp / "data", request.param)
    model = tiny_world_model(request.param)
    model.info.source = {"data": str(tmp / "data")}
    return request.param, model.save_pretrained(tmp / "wm")


@pytest.fixture(scope="module")
def discrete(tmp_path_factory, one_thread):
    tmp = tmp_path_factory.mktemp("gym_discrete")
    write_data(tmp / "data", "discrete")
    model = tiny_world_model("discrete")
    torch.manual_seed(1)  # the termination head's probability moves around 0.5 with the state and action
    torch.nn.init.normal_(model.dynamics.outcome.termination.weight, std=1.0)
    model.info.source = {"data": str(tmp / "data")}
    return model.save_pretrained(tmp / "wm")


def test_check_env_and_spaces(world):
    kind, folder = world
    env = WorldModelGymEnv(folder, horizon=5, maskgit_steps=1)
    check_env(env, skip_render_check=False)
    assert env.observation_space == gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    if kind == "discrete":
        assert env.action_space == gym.spaces.Discrete(2)
    else:  # the dataset's bounds, recorded in the index
        assert env.action_space == gym.spaces.Box(-2.0, 2.0, (1,), np.float32)
    obs, info = env.reset(seed=0)
    assert obs.dtype == np.uint8 and obs.shape == (32, 32, 3) and "heads" in info
    for i in range(5):
        obs, reward, _, truncated, info = env.step(env.action_space.sample())
        assert isinstance(reward, float) and 0 <= info["termination_prob"] <= 1
        assert truncated == (i == 4)
    assert np.array_equal(env.render(), obs)


def test_starts_from_heldout_episodes_and_deterministic_under_seed(discrete):
    env = WorldModelGymEnv(discrete, horizon=4, maskgit_steps=2)  # temperature 1: sampled
    assert len(env._batch.starts) == 3 and all("ep0003" in s for s in env._batch.starts.sources)  # held out
    assert len(WorldModelGymEnv(discrete, split="train")._batch.starts) == 9

    def episode(seed):
        obs = [env.reset(seed=seed)[0]]
        rewards = []
        for a in [0, 1, 1, 0]:
            o, r, *_ = env.step(a)
            obs.append(o)
            rewards.append(r)
        return np.stack(obs), rewards

    a, b, c = episode(3), episode(3), episode(4)
    assert np.array_equal(a[0], b[0]) and a[1] == b[1]
    assert not np.array_equal(a[0], c[0])


def splitting_threshold(folder, n: int, seed: int, first_actions, **kw) -> float:
    """A termination threshold between the rows' first-step termination probabilities, so that at least one row ends
    at the first step while another goes on, whatever weights the random initialisation gave the head."""
    probe = WorldModelVectorEnv(n, folder, temperature=0.0, maskgit_steps=1, termination_threshold=1.0, **kw)
    probe.reset(seed=seed)
    p = np.sort(probe.step(first_actions)[4]["termination_prob"])
    assert p[-1] > p[0], f"every row has the same termination probability {p}: no threshold splits them"
    return float((p[0] + p[-1]) / 2)


def run_vector_against_singles(folder, n: int, steps: int, seed: int, **kw) -> None:
    rng = np.random.default_rng(0)
    first_actions = rng.integers(0, 2, n)
    kw["termination_threshold"] = splitting_threshold(folder, n, seed, first_actions, **kw)
    vec = WorldModelVectorEnv(n, folder, temperature=0.0, maskgit_steps=1, **kw)
    singles = [WorldModelGymEnv(folder, temperature=0.0, maskgit_steps=1, **kw) for _ in range(n)]
    vobs, _ = vec.reset(seed=seed)
    sobs = [e.reset(seed=seed + i)[0] for i, e in enumerate(singles)]
    assert np.array_equal(vobs, np.stack(sobs))
    rng = np.random.default_rng(0)
    done = np.zeros(n, bool)
    ended, apart = 0, False
    for step in range(steps):
        actions = vec.action_space.sample() if step % 2 else rng.integers(0, 2, n)
        vobs, vr, vterm, vtrunc, _ = vec.step(actions)
        for i, e in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: the vector env starts this row again, ignoring its action
                o, r, term, trunc = e.reset()[0], 0.0, False, False
            else:
                o, r, term, trunc, _ = e.step(actions[i])
            assert np.array_equal(vobs[i], o), (step, i)
            assert vr[i] == pytest.approx(r, abs=1e-4) and (vterm[i], vtrunc[i]) == (term, trunc), (step, i)
        done = vterm | vtrunc
        ended += int(done.sum())
        apart |= bool(done.any() and not done.all())
    assert ended and apart, "no row reset while another went on: the autoreset went untested"


@pytest.mark.parametrize("use_cache", [True, False])
def test_vector_env_equals_single_envs(discrete, use_cache):
    # the termination head (given weights in the fixture) and a threshold between the rows' first probabilities end
    # some rows' episodes and not others: those rows start again while their neighbours go on; the horizon ends the rest
    run_vector_against_singles(discrete, 3, 10, seed=11, horizon=5, use_cache=use_cache)


def test_short_clips_are_padded_and_rows_still_restart_alone(tmp_path, one_thread):
    write_data(tmp_path / "data", "discrete", t=2)  # 2-frame clips, a 4-frame model context
    model = tiny_world_model("discrete")
    starts = WorldModelGymEnv(model, data=tmp_path / "data", split="all")._batch.starts
    assert starts.frames.shape[1] == 4 and starts.actions.shape[1] == 3
    assert np.array_equal(starts.frames[:, 0], starts.frames[:, 2])  # the first frame repeated in front
    vec = WorldModelVectorEnv(2, model, data=tmp_path / "data", horizon=2, maskgit_steps=1)
    vec.reset(seed=0)
    for _ in range(5):  # the horizon ends both rows; they restart from padded contexts
        vec.step(vec.action_space.sample())


def test_gymnasium_make_and_make_vec(discrete):
    env = gym.make(ENV_ID, model=str(discrete), horizon=4, maskgit_steps=1)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs)
    env.step(env.action_space.sample())
    vec = gym.make_vec(ENV_ID, num_envs=2, model=str(discrete), horizon=4, maskgit_steps=1)
    assert isinstance(vec.unwrapped, WorldModelVectorEnv) and vec.num_envs == 2
    obs, _ = vec.reset(seed=0)
    assert obs.shape == (2, 32, 32, 3)
    obs, rewards, *_ = vec.step(vec.action_space.sample())
    assert rewards.shape == (2,)


def test_sb3_ppo_trains_and_acts(discrete, tmp_path, monkeypatch):
    sb3 = pytest.importorskip("stable_baselines3")
    monkeypatch.setenv("SB3_LOGDIR", str(tmp_path / "sb3"))  # its logger's folder, by default in /tmp
    torch.manual_seed(0)
    env = WorldModelGymEnv(discrete, horizon=16, maskgit_steps=1)
    agent = sb3.PPO("MlpPolicy", env, n_steps=64, batch_size=32, n_epochs=2, seed=0, device="cpu")
    agent.learn(total_timesteps=128)
    assert agent.num_timesteps >= 128
    obs, _ = env.reset(seed=1)
    for _ in range(3):
        action, _ = agent.predict(obs, deterministic=True)
        obs, *_ = env.step(int(action))


def test_starts_from_video_images_and_options(discrete, tmp_path):
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (9, 48, 64, 3), dtype=np.uint8)
    video = write_mp4(frames, tmp_path / "c.mp4", fps=10)
    env = WorldModelGymEnv(discrete, context=video, horizon=2, maskgit_steps=1)
    assert len(env._batch.starts) == 2  # two windows of 4 frames
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3)
    env.step(1)
    from PIL import Image

    (tmp_path / "imgs").mkdir()
    Image.fromarray(frames[0]).save(tmp_path / "imgs" / "a.png")
    obs, _ = env.reset(options={"context": tmp_path / "imgs"})  # one image: padded to the context by repeating it
    env.step(0)
    own = rng.integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    obs, _ = env.reset(options={"context": own})
    assert np.array_equal(obs, own[-1])
    obs, _ = env.reset(options={"context": 1})
    assert np.array_equal(obs, env._batch.starts.frames[1, -1])


def test_bad_actions_raise(world):
    kind, folder = world
    env = WorldModelGymEnv(folder, horizon=4, maskgit_steps=1)
    env.reset(seed=0)
    bad = [2, -1, 0.5, "a"] if kind == "discrete" else [np.array([3.0], np.float32), np.zeros(2, np.float32),
                                                       np.array([np.nan], np.float32)]
    for action in bad:
        with pytest.raises((AssertionError, ValueError)):
            env.step(action)
    vec = WorldModelVectorEnv(2, folder, horizon=4, maskgit_steps=1)
    vec.reset(seed=0)
    with pytest.raises((AssertionError, ValueError)):
        vec.step(np.array([0, 5]) if kind == "discrete" else np.full((2, 1), 9.0, np.float32))


def test_not_a_world_model_folder(tmp_path, discrete):
    (tmp_path / "junk").mkdir()
    with pytest.raises(FileNotFoundError, match="junk is not a world-model folder"):
        WorldModelGymEnv(tmp_path / "junk")
    with pytest.raises(FileNotFoundError, match="nowhere: no such folder"):
        gym.make(ENV_ID, model=str(tmp_path / "nowhere"))
    with pytest.raises(ValueError, match="horizon"):
        WorldModelGymEnv(discrete, horizon=0)


@pytest.mark.parametrize("use_cache,guidance,previous", [(True, 1.0, False), (True, 2.0, False), (False, 2.0, False),
                                                         (True, 1.0, True)])
def test_restart_rows_equals_a_fresh_start(one_thread, use_cache, guidance, previous):
    from wm_video.models.dynamics import DynamicsModel
    from wm_video.models.dynamics.sampling import Rollout

    model = tiny_world_model("discrete").dynamics
    if previous:  # the restarted rows' last context frame feeds their next target's input
        torch.manual_seed(0)
        model = DynamicsModel(dataclasses.replace(model.config, previous_token_input=True)).eval()
    g = torch.Generator().manual_seed(0)
    tokens = torch.randint(0, 32, (3, 4, 8, 8), generator=g)
    other = torch.randint(0, 32, (1, 4, 8, 8), generator=g)
    ctx_actions, acts = torch.randint(0, 2, (1, 3), generator=g), torch.randint(0, 2, (5, 3), generator=g)
    batch = Rollout(model, 1, 0.0, use_cache=use_cache, guidance_scale=guidance)
    batch.start(tokens, torch.randint(0, 2, (3, 3), generator=g))
    for a in acts[:3]:  # the batch moves on past its context
        batch.step(a)
    batch.restart_rows(torch.tensor([1]), other, ctx_actions)
    fresh = Rollout(model, 1, 0.0, use_cache=use_cache, guidance_scale=guidance)
    fresh.start(other, ctx_actions)
    for a in acts[3:]:
        mine, theirs = batch.step(a), fresh.step(a[1:2])
        assert torch.equal(mine.tokens[1], theirs.tokens[0])
        assert torch.allclose(mine.reward[1], theirs.reward[0], atol=1e-5)
        assert torch.allclose(mine.termination[1], theirs.termination[0], atol=1e-5)
