"""Collection throughput per process against the bare environment's step rate, measured in the same run.

    python eval/benchmarks/bench_collect.py                       # default envs, 64x64, 2 rounds
    python eval/benchmarks/bench_collect.py --envs ALE/Pong-v5 Pusher-v5 --steps 4000 --size 64

``bare``: the simulator alone in this process: the underlying gymnasium env stepped with random actions, plus
its own frame render where frames are not the observation (MuJoCo, Box2D, Meta-World), at the collection's
render settings, resetting when an episode ends or reaches the same cap as collection (the first reset seeded,
as collection seeds one reset per shard); no resize, no recording.
``collect``: ``wm_video.envs.collect.collect_shard`` in this process (one worker): random policy, resize to
``--size``, clip splitting, validation, encoding and the atomic shard write (raw storage), timed by the
collector itself. Each round runs collection, then the bare env for the same number of steps; the table gives the means.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import numpy as np

DEFAULT_ENVS = ["ALE/Pong-v5", "ALE/Breakout-v5", "LunarLander-v3", "Pusher-v5", "metaworld/reach-v3"]


def bare_rate(env_id: str, size: int, steps: int, max_episode_steps: int, seed: int = 0) -> float:
    from wm_video.envs import make_env

    env = make_env(env_id, size=size)
    raw, render = env._env, env.family != "atari"  # Atari observations are the frames
    rng = np.random.default_rng(seed)
    t0 = time.perf_counter()
    raw.reset(seed=seed)  # timed: collection pays one seeded reset per shard too
    since_reset = 0
    for _ in range(steps):
        action = env.sample_action(rng)
        _, _, terminated, truncated, _ = raw.step(action)
        since_reset += 1
        if render:
            env._frame() if hasattr(env, "_frame") else raw.render()
        if terminated or truncated or since_reset >= max_episode_steps:  # same episode cap as collection
            raw.reset()
            since_reset = 0
    rate = steps / (time.perf_counter() - t0)
    env.close()
    return rate


def collect_rate(env_id: str, size: int, steps: int, max_episode_steps: int, storage: str) -> tuple[float, int]:
    from wm_video.envs.collect import CollectConfig, collect_shard

    cfg = CollectConfig(env=env_id, size=size, clip_len=16, policy="random", storage=storage, workers=1,
                        max_episode_steps=max_episode_steps, episodes=max(1, steps // max_episode_steps),
                        episodes_per_shard=10_000)
    with tempfile.TemporaryDirectory() as out:
        extra = collect_shard(cfg, 0, out)["extra"]
    return extra["steps"] / extra["seconds"], extra["steps"]


def main() -> None:
    from wm_video.utils.machine import machine_record, machine_summary

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--envs", nargs="+", default=DEFAULT_ENVS)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=4000, help="steps per measurement")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--max-episode-steps", type=int, default=500, help="episode cap, the same for both")
    parser.add_argument("--storage", default="raw")
    parser.add_argument("--json", default=None, help="also write the rows here")
    args = parser.parse_args()
    rows = []
    for env_id in args.envs:
        bare, coll = [], []
        for r in range(args.rounds):
            # Collection first; the bare env then runs exactly as many steps, so the one seeded reset both pay
            # (a ROM reload for Atari) is spread over the same number of steps.
            rate, steps = collect_rate(env_id, args.size, args.steps, args.max_episode_steps, args.storage)
            coll.append(rate)
            bare.append(bare_rate(env_id, args.size, steps, args.max_episode_steps, seed=r))
        row = {"env": env_id, "bare_steps_per_s": round(float(np.mean(bare))),
               "collect_steps_per_s": round(float(np.mean(coll))),
               "ratio": round(float(np.mean(coll) / np.mean(bare)), 3)}
        rows.append(row)
        print(row, flush=True)
    print(f"\n{machine_summary(machine_record(threads=False, git=False))}, {args.size}x{args.size}, "
          f"{args.steps} steps x {args.rounds} rounds, storage {args.storage}, one process")
    print("| env | bare env (steps/s) | collection (steps/s) | collection / bare |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['env']} | {r['bare_steps_per_s']} | {r['collect_steps_per_s']} | {r['ratio']:.0%} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)


if __name__ == "__main__":
    main()
