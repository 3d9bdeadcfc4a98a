"""Collect episodes from real simulators into episode-clip shards, in parallel, atomically and resumably.

Episodes are assigned to shards up front (shard ``k`` holds episodes ``k*E .. k*E+E-1``; its first reset is
seeded with ``seed + k*E`` and the rest continue the env's random stream), so the output depends only on the
config, any worker can make any shard, and a rerun makes just the shards whose completion sidecar is missing.
A SLURM array task can take a range with ``shard_range``.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import queue
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.data.schema import ActionSpace, Clip, ClipMeta, DatasetInfo, SchemaError
from wm_video.data.writer import (
    ShardWriter,
    clip_starts,
    ensure_writable_dir,
    finalize_dataset,
    read_sidecar,
    shard_name,
)
from wm_video.envs.metaworld_env import task_text
from wm_video.envs.policies import make_policy
from wm_video.envs.registry import make_env
from wm_video.envs.variation import Variation
from wm_video.utils import progress
from wm_video.utils.atomic import atomic_write_json, clean_stale_temporaries

log = logging.getLogger(__name__)
SETTINGS_FILE = "collect.json"
# Fields that change what is in the shards: a rerun into the same folder must keep them.
# (episodes too: it decides what the last shard holds; and 'variation', recorded when it is not the default.)
_OUTPUT_FIELDS = ("env", "episodes", "policy", "noise", "hold", "size", "clip_len", "stride", "max_episode_steps",
                  "episodes_per_shard", "storage", "crf", "seed")
# Tells the variation draws' RNG apart from the policy's, which is seeded with the same seed + e.
VARIATION_STREAM = 0x5EED


@dataclass
class CollectConfig:
    """What to collect and how.

    Args:
        env: environment id: ``ALE/<Game>-v5`` (Atari), any gymnasium id that renders rgb frames (classic
            control, box2d, MuJoCo) or ``metaworld/<task>-v3``; ``wm-video data envs`` lists them.
        episodes: episodes to collect.
        policy: ``random``, ``scripted`` (the environment's expert, where it has one) or ``noisy`` (the expert
            with ``noise``: random actions with that probability for discrete, Gaussian noise for continuous).
        noise: noise level of the ``noisy`` policy.
        hold: steps the ``random`` policy keeps each action it draws (1: a new one every step).
        size: frame height and width in pixels.
        clip_len: frames per clip (one shard sample).
        stride: frames between clip starts (default ``clip_len``: no overlap). The last clip of an episode is
            aligned to its end, so terminations are always inside a clip.
        max_episode_steps: cap on episode length (default: the environment's own limit).
        episodes_per_shard: episodes written to each shard.
        workers: collection processes (each makes whole shards).
        storage: frame storage ``raw`` | ``png`` (lossless) or ``mp4`` (H.264 yuv444p, ``crf`` quality).
        crf: H.264 quality for ``mp4`` storage (0 is lossless).
        seed: base seed: shard ``k``'s first episode is reset with ``seed + k * episodes_per_shard``; the
            policy of episode ``e`` is seeded with ``seed + e``, and so are its draws of ``variation``'s ranges
            (from a stream of their own).
        shard_range: ``[first, stop)`` of shards for this invocation (SLURM arrays); ``None`` means all.
        variation: domain variation (colours, light, camera, mass, friction, damping, frame colour): a number
            shifts every episode alike, ``[low, high]`` draws per episode (:class:`Variation`; default: none).
    """

    env: str = "ALE/Pong-v5"
    episodes: int = 16
    policy: str = "random"
    noise: float = 0.3
    hold: int = 1
    size: int = 64
    clip_len: int = 16
    stride: int | None = None
    max_episode_steps: int | None = None
    episodes_per_shard: int = 8
    workers: int = 2
    storage: str = "raw"
    crf: int = 10
    seed: int = 0
    shard_range: list[int] | None = None
    variation: Variation = field(default_factory=Variation)

    def validate(self) -> None:
        for name in ("episodes", "size", "clip_len", "episodes_per_shard", "hold"):
            if getattr(self, name) < 1:
                raise SchemaError(f"collect: field '{name}' must be >= 1, got {getattr(self, name)}")
        if self.storage not in ("raw", "png", "mp4"):
            raise SchemaError(f"collect: field 'storage' must be raw, png or mp4, got {self.storage!r}")
        if self.shard_range is not None and (len(self.shard_range) != 2 or self.shard_range[0] >= self.shard_range[1]):
            raise SchemaError(f"collect: field 'shard_range' must be two numbers FIRST < STOP, got {self.shard_range}")
        if self.policy not in ("random", "scripted", "noisy"):
            raise SchemaError(f"collect: field 'policy' must be random, scripted or noisy, got {self.policy!r}")
        if self.hold > 1 and self.policy != "random":
            raise SchemaError(f"collect: field 'hold' ({self.hold}) applies to the random policy only, not "
                              f"{self.policy!r}")

    @property
    def num_shards(self) -> int:
        return -(-self.episodes // self.episodes_per_shard)

    def shard_episodes(self, k: int) -> range:
        """The episodes that shard ``k`` holds."""
        first = k * self.episodes_per_shard
        return range(first, min(first + self.episodes_per_shard, self.episodes))

    def shard_ids(self) -> range:
        first, stop = self.shard_range or (0, self.num_shards)
        return range(max(first, 0), min(stop, self.num_shards))

    def episode_variation(self, e: int) -> Variation:
        """The variation episode ``e`` is collected with: ``variation`` with its ranges drawn from an RNG of the
        episode's own, so any shard layout or worker gives episode ``e`` the same world."""
        if not self.variation.is_random:
            return self.variation
        return self.variation.draw(np.random.default_rng([self.seed + e, VARIATION_STREAM]))


def run_episode(env: Any, policy: Any, seed: int | None) -> dict[str, Any]:
    """One episode: frames ``(n, h, w, 3)`` with the action taken at each and its reward and termination."""
    res = env.reset(seed=seed)
    policy.reset()
    frames, actions, rewards, terms = [], [], [], []
    success: bool | None = None  # stays None for environments that report no success flag
    while True:
        action = policy.act(res)
        nxt = env.step(action)
        frames.append(res.frame)
        actions.append(action)
        rewards.append(nxt.reward)
        terms.append(nxt.terminated)
        if "success" in nxt.info:
            success = bool(success) or bool(nxt.info["success"])
        res = nxt
        if nxt.terminated or nxt.truncated:
            break
    discrete = env.action_space.kind == "discrete"
    return {
        "frames": np.stack(frames),
        "actions": np.asarray(actions, dtype=np.int64) if discrete else np.asarray(actions, dtype=np.float32),
        "rewards": np.asarray(rewards, dtype=np.float32),
        "terminations": np.asarray(terms, dtype=bool),
        "success": success,
    }


_progress_queue: Any = None


def _init_worker(q: Any) -> None:
    global _progress_queue
    _progress_queue = q
    logging.basicConfig(level=logging.WARNING)


def collect_shard(cfg: CollectConfig, k: int, out: str) -> dict[str, Any]:
    """Make shard ``k`` (its episodes, clipped) and return its sidecar summary."""
    env = make_env(cfg.env, size=cfg.size, max_episode_steps=cfg.max_episode_steps)
    varied = not cfg.variation.is_default
    stride = cfg.stride or cfg.clip_len
    episodes = cfg.shard_episodes(k)
    returns, lengths, successes, too_short, steps, t0 = [], [], [], 0, 0, time.perf_counter()
    task = {"task": text} if (text := task_text(cfg.env)) else {}  # Meta-World's task text, for text conditioning
    try:
        with ShardWriter(Path(out) / shard_name(k), env.action_space, cfg.storage, env.fps, cfg.crf) as writer:
            for e in episodes:
                policy = make_policy(cfg.policy, env, seed=cfg.seed + e, noise=cfg.noise, hold=cfg.hold)
                clip_extra = {"policy": cfg.policy}
                if varied:
                    world = cfg.episode_variation(e)
                    env.set_variation(world)
                    clip_extra["variation"] = {name: getattr(world, name) for name in cfg.variation.changed()}
                # One seeded reset per shard; later episodes continue the env's random stream. The shard is
                # still a pure function of the config, and Atari skips a ROM reload (~90 ms) per episode.
                ep = run_episode(env, policy, seed=cfg.seed + e if e == episodes[0] else None)
                n = len(ep["frames"])
                steps += n
                returns.append(float(ep["rewards"].sum()))
                lengths.append(n)
                successes.append(ep["success"])
                starts = clip_starts(n, cfg.clip_len, stride)
                too_short += not starts
                episode_id = f"{cfg.env.replace('/', '_')}-s{cfg.seed}-e{e:06d}"
                for s in starts:
                    sl = slice(s, s + cfg.clip_len)
                    meta = ClipMeta(episode_id=episode_id, clip_start=s, num_frames=cfg.clip_len, fps=env.fps,
                                    source=cfg.env, fields=[], extra={**clip_extra, "episode_length": n, **task})
                    writer.write(Clip(ep["frames"][sl], meta, ep["actions"][sl], ep["rewards"][sl],
                                      ep["terminations"][sl]))
                if _progress_queue is not None:
                    _progress_queue.put(1)
            extra = {"episode_returns": returns, "episode_lengths": lengths, "successes": successes,
                     "episodes_too_short": too_short, "steps": steps, "seconds": time.perf_counter() - t0}
            record = writer.close(extra)
    finally:
        env.close()
    return {"record": vars(record), "extra": extra}


def _probe(cfg: CollectConfig) -> tuple[ActionSpace, float]:
    """Make the env once in this process: a bad id, missing extra or policy fails before any worker starts."""
    env = make_env(cfg.env, size=cfg.size, max_episode_steps=cfg.max_episode_steps)
    try:
        make_policy(cfg.policy, env, seed=cfg.seed, noise=cfg.noise, hold=cfg.hold)
        if not cfg.variation.is_default:
            for world in _range_ends(cfg.variation):
                env.set_variation(world)  # names the fields this env cannot apply
                env.reset(seed=cfg.seed)  # and a camera tilted past the vertical
        return env.action_space, env.fps
    finally:
        env.close()


def _range_ends(variation: Variation) -> list[Variation]:
    """``variation`` with every range at its low end, and at its high end: the worlds furthest from the default
    in either direction, which every draw lies between (``variation`` itself when it has no range)."""
    if not variation.is_random:
        return [variation]
    ends = []
    for i in (0, 1):
        values = {k: v[i] if isinstance(v, list) else v for k, v in vars(variation).items()}
        ends.append(Variation(**values))
    return ends


def _settings(cfg: CollectConfig) -> dict[str, Any]:
    """What collect.json records: the output fields, and ``variation`` (its changed fields) when there is one."""
    wanted = {k: getattr(cfg, k) for k in _OUTPUT_FIELDS}
    if not cfg.variation.is_default:
        wanted["variation"] = cfg.variation.to_dict()
    return wanted


def _check_settings(out: Path, cfg: CollectConfig) -> None:
    path = out / SETTINGS_FILE
    wanted = _settings(cfg)
    if path.exists():
        # Folders collected before 'hold' existed held none; an absent 'variation' is the default (none).
        saved = {"hold": 1, **json.loads(path.read_text())}
        diff = [k for k in (*_OUTPUT_FIELDS, "variation") if saved.get(k) != wanted.get(k)]
        if diff:
            detail = ", ".join(f"{k}: {saved.get(k)!r} there vs {wanted.get(k)!r} now" for k in diff)
            raise SchemaError(f"{out} holds a collection made with other settings ({detail}); "
                              "use another --out or the same settings to resume")
    atomic_write_json(path, wanted)


def collect(cfg: CollectConfig, out: str | Path, show_progress: bool | None = None) -> DatasetInfo | None:
    """Collect ``cfg.episodes`` episodes into ``out``; resumes an interrupted run; returns the dataset info
    (None when ``shard_range`` leaves other shards to other invocations)."""
    cfg.validate()
    out = ensure_writable_dir(out)
    action_space, fps = _probe(cfg)
    _check_settings(out, cfg)
    # Temp files of this invocation's shards were left by a killed run (never complete data). Only these: array
    # tasks share the folder, and another task's temp file is its shard being written right now.
    clean_stale_temporaries(out, names=[shard_name(k) for k in cfg.shard_ids()])
    todo = [k for k in cfg.shard_ids() if read_sidecar(out / shard_name(k)) is None]
    total_eps = sum(len(cfg.shard_episodes(k)) for k in cfg.shard_ids())
    done_eps = total_eps - sum(len(cfg.shard_episodes(k)) for k in todo)
    if done_eps:
        log.info("resuming: %d of %d shards already complete", len(cfg.shard_ids()) - len(todo), len(cfg.shard_ids()))
    bar = progress(total=total_eps, initial=done_eps, desc=f"collect {cfg.env}", unit="ep", enable=show_progress)
    t0 = time.perf_counter()
    if cfg.workers <= 1 or len(todo) <= 1:
        for k in todo:
            summary = collect_shard(cfg, k, str(out))
            bar.update(len(summary["extra"]["episode_lengths"]))
    else:
        _collect_parallel(cfg, todo, out, bar)
    bar.close()
    log.info("collected %d shards in %.1fs", len(todo), time.perf_counter() - t0)
    all_shards = [out / shard_name(k) for k in range(cfg.num_shards)]
    if any(read_sidecar(p) is None for p in all_shards):
        log.info("some shards are left to other invocations; dataset.json is written when all are complete")
        return None
    source = {"kind": "simulator", "env": cfg.env, "policy": cfg.policy, "noise": cfg.noise, "hold": cfg.hold,
              "seed": cfg.seed,
              "episodes": cfg.episodes, "max_episode_steps": cfg.max_episode_steps}
    if not cfg.variation.is_default:
        source["variation"] = cfg.variation.to_dict()
    return finalize_dataset(out, all_shards, resolution=[cfg.size, cfg.size], fps=fps, clip_len=cfg.clip_len,
                            storage=cfg.storage, action_space=action_space, source=source)


def _collect_parallel(cfg: CollectConfig, todo: list[int], out: Path, bar: Any) -> None:
    # spawn, not fork: MuJoCo's GL context and ALE state must not be shared with the parent.
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    with ctx.Pool(min(cfg.workers, len(todo)), initializer=_init_worker, initargs=(q,)) as pool:
        result = pool.starmap_async(collect_shard, [(cfg, k, str(out)) for k in todo])
        while not result.ready():
            try:
                bar.update(q.get(timeout=0.2))
            except queue.Empty:
                pass
        result.get()  # re-raises a worker's error here
        while True:
            try:
                bar.update(q.get_nowait())
            except queue.Empty:
                break
