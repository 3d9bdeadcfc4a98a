"""Meta-World episodes for the "pretraining pays" experiment: action-free mp4 videos of several tasks, and a robot
dataset of one task written in the LeRobot v2.1 on-disk layout (what ``wm-video data lerobot`` reads).

Control rate. Meta-World steps its physics at 80 Hz; a frame every physics step moves the arm a fraction of a
pixel at 64x64. Each recorded step here holds the policy's action for ``repeat`` physics steps (4: 20 frames/s,
a few pixels of arm motion per frame), as a real robot's controller runs slower than its simulator. The policy is
the scripted expert with Gaussian noise (``wm_video.envs.policies.NoisyPolicy``), so the actions carry information
that the frames alone do not predict.

Each episode is a pure function of its seed; every file is written under a temporary name and renamed, so an
interrupted collection resumes by skipping the episodes whose files exist.

LeRobot v2.1 layout written (see ``../shared/FACTS.md``): ``meta/info.json``, ``meta/episodes.jsonl``,
``meta/tasks.jsonl``, ``meta/episodes_stats.jsonl``, ``data/chunk-000/episode_XXXXXX.parquet`` (``action``,
``observation.state`` = hand position and gripper opening, ``next.reward``, ``next.done``, ``timestamp``,
``frame_index``, ``episode_index``, ``index``, ``task_index``) and
``videos/chunk-000/observation.images.<camera>/episode_XXXXXX.mp4`` (H.264).
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from wm_video.utils.atomic import AtomicFile, atomic_path, atomic_write_json

CAMERA = "corner2"  # the Meta-World camera wm_video.envs.metaworld_env renders from
VIDEO_KEY = f"observation.images.{CAMERA}"
TASK_TEXT = {"push-v3": "push the puck to the goal", "reach-v3": "reach the goal position",
             "pick-place-v3": "pick up the puck and place it at the goal", "door-open-v3": "open the door",
             "drawer-close-v3": "close the drawer", "button-press-v3": "press the button",
             "window-open-v3": "slide the window open", "drawer-open-v3": "open the drawer"}
STATE_NAMES = ["hand_x", "hand_y", "hand_z", "gripper"]  # observation[:4] of every Meta-World v3 task
ACTION_NAMES = ["dx", "dy", "dz", "grip"]


@dataclass
class EpisodeJob:
    """One episode to record: ``task`` (``push-v3``), its ``seed``, where its video goes, and for robot episodes
    where its arrays go (None: a video-only episode)."""

    task: str
    seed: int
    video: str
    arrays: str | None
    size: int
    repeat: int
    max_steps: int
    noise: float


_ENVS: dict[str, Any] = {}  # one env per task and worker process: making one costs about half a second


def _env(task: str, size: int, max_steps: int) -> Any:
    from wm_video.envs import make_env

    key = f"{task}@{size}@{max_steps}"
    if key not in _ENVS:
        _ENVS[key] = make_env(f"metaworld/{task}", size=size, max_episode_steps=max_steps)
    return _ENVS[key]


def record_episode(env: Any, policy: Any, seed: int, repeat: int) -> dict[str, np.ndarray]:
    """One episode at ``1 / repeat`` of the physics rate: frame ``i`` ``(n, h, w, 3)``, the action held from it
    for ``repeat`` physics steps, the state at frame ``i``, the mean reward over those steps, and the success flag
    at their end. Ends when the env terminates or truncates (its step cap)."""
    res = env.reset(seed=seed)
    policy.reset()
    frames, actions, states, rewards, success = [], [], [], [], []
    while True:
        action = policy.act(res)
        frames.append(res.frame)
        actions.append(np.asarray(action, np.float32))
        states.append(np.asarray(res.obs[:4], np.float32))
        total, done = 0.0, False
        for _ in range(repeat):
            res = env.step(action)
            total += res.reward
            done = res.terminated or res.truncated
            if done:
                break
        rewards.append(total / repeat)
        success.append(bool(res.info.get("success", False)))
        if done:
            break
    return {"frames": np.stack(frames), "actions": np.stack(actions), "states": np.stack(states),
            "rewards": np.asarray(rewards, np.float32), "success": np.asarray(success, bool)}


def run_job(job: EpisodeJob) -> dict[str, Any]:
    """Record ``job``'s episode and write its video (and arrays); returns a short summary."""
    from wm_video.envs import make_policy
    from wm_video.utils.video_io import write_mp4

    env = _env(job.task, job.size, job.max_steps)
    policy = make_policy("noisy", env, seed=job.seed, noise=job.noise)
    ep = record_episode(env, policy, job.seed, job.repeat)
    fps = env.fps / job.repeat
    write_mp4(ep["frames"], job.video, fps=fps)
    if job.arrays is not None:
        with AtomicFile(job.arrays) as f:  # a file object: np.savez adds no ".npz" to its name
            np.savez(f.file, **{k: v for k, v in ep.items() if k != "frames"})
    return {"task": job.task, "frames": len(ep["frames"]), "success": bool(ep["success"].any()), "fps": fps}


def run_jobs(jobs: list[EpisodeJob], workers: int, what: str, log: Callable[[str], None] = print) -> list[dict]:
    """Run the jobs whose outputs are missing on ``workers`` processes, logging progress about every 10%."""
    todo = [j for j in jobs if not (Path(j.video).exists() and (j.arrays is None or Path(j.arrays).exists()))]
    if len(todo) < len(jobs):
        log(f"    {what}: {len(jobs) - len(todo)} of {len(jobs)} episodes already recorded")
    if not todo:
        return []
    for j in todo:
        Path(j.video).parent.mkdir(parents=True, exist_ok=True)
        if j.arrays:
            Path(j.arrays).parent.mkdir(parents=True, exist_ok=True)
    done, t0, every = [], time.monotonic(), max(1, len(todo) // 10)
    # spawn: fresh workers (no forked torch or OpenGL state); each keeps one env per task
    with mp.get_context("spawn").Pool(max(1, min(workers, len(todo)))) as pool:
        for summary in pool.imap_unordered(run_job, todo):
            done.append(summary)
            if len(done) % every == 0 or len(done) == len(todo):
                rate = sum(s["frames"] for s in done) / (time.monotonic() - t0)
                log(f"    {what}: {len(done)}/{len(todo)} episodes, {rate:.0f} frames/s, "
                    f"success {np.mean([s['success'] for s in done]):.0%}")
    return done


def video_jobs(root: Path, tasks: list[str], episodes: int, size: int, repeat: int, max_steps: int, noise: float,
               seed: int) -> list[EpisodeJob]:
    """Action-free pretraining videos: ``root/<task>/episode_XXXXXX.mp4``; task ``k``'s seeds start at
    ``seed + 1000 * k``."""
    return [EpisodeJob(task, seed + 1000 * k + e, str(root / task / f"episode_{e:06d}.mp4"), None, size, repeat,
                       max_steps, noise) for k, task in enumerate(tasks) for e in range(episodes)]


def robot_jobs(root: Path, work: Path, task: str, episodes: int, size: int, repeat: int, max_steps: int,
               noise: float, seed: int) -> list[EpisodeJob]:
    """Robot episodes: videos in the LeRobot v2.1 place under ``root``, arrays in ``work`` until
    :func:`write_lerobot_v21` writes the parquet files and metadata."""
    return [EpisodeJob(task, seed + e, str(root / lerobot_video_path(e)), str(work / f"episode_{e:06d}.npz"), size,
                       repeat, max_steps, noise) for e in range(episodes)]


def lerobot_video_path(episode: int) -> str:
    return f"videos/chunk-000/{VIDEO_KEY}/episode_{episode:06d}.mp4"


def _stats(x: np.ndarray) -> dict[str, list]:
    x = x.reshape(len(x), -1).astype(np.float64)
    return {"min": x.min(0).tolist(), "max": x.max(0).tolist(), "mean": x.mean(0).tolist(),
            "std": x.std(0).tolist(), "count": [len(x)]}


def write_lerobot_v21(root: Path, work: Path, task: str, episodes: int, size: int, fps: float) -> dict[str, Any]:
    """Write the parquet frames and metadata of a LeRobot v2.1 dataset at ``root`` from the recorded episodes'
    arrays in ``work`` (their videos are already in place); returns ``meta/info.json``'s content."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    def column(v: np.ndarray) -> pa.Array:
        return pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1]) if v.ndim == 2 else pa.array(v)

    (root / "meta").mkdir(parents=True, exist_ok=True)
    (root / "data" / "chunk-000").mkdir(parents=True, exist_ok=True)
    first, ep_lines, stat_lines = 0, [], []
    for e in range(episodes):
        with np.load(work / f"episode_{e:06d}.npz") as z:
            ep = {k: z[k] for k in z.files}
        n = len(ep["actions"])
        cols = {"action": ep["actions"], "observation.state": ep["states"], "next.reward": ep["rewards"],
                "next.done": np.arange(n) == n - 1, "next.success": ep["success"],
                "timestamp": (np.arange(n) / fps).astype(np.float32), "frame_index": np.arange(n, dtype=np.int64),
                "episode_index": np.full(n, e, np.int64), "index": np.arange(first, first + n, dtype=np.int64),
                "task_index": np.zeros(n, np.int64)}
        path = root / "data" / "chunk-000" / f"episode_{e:06d}.parquet"
        with atomic_path(path) as tmp:
            pq.write_table(pa.table({k: column(v) for k, v in cols.items()}), tmp)
        ep_lines.append({"episode_index": e, "tasks": [TASK_TEXT.get(task, task)], "length": n})
        stat_lines.append({"episode_index": e, "stats": {"action": _stats(ep["actions"]),
                                                         "observation.state": _stats(ep["states"]),
                                                         "next.reward": _stats(ep["rewards"])}})
        first += n

    def scalar(dtype: str) -> dict[str, Any]:
        return {"dtype": dtype, "shape": [1], "names": None}

    info = {
        "codebase_version": "v2.1", "robot_type": "sawyer", "total_episodes": episodes, "total_frames": first,
        "total_tasks": 1, "total_videos": episodes, "total_chunks": 1, "chunks_size": 1000, "fps": fps,
        "splits": {"train": f"0:{episodes}"},
        "data_path": "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            VIDEO_KEY: {"dtype": "video", "shape": [size, size, 3], "names": ["height", "width", "channels"],
                        "info": {"video.fps": fps, "video.height": size, "video.width": size, "video.channels": 3,
                                 "video.codec": "h264", "video.pix_fmt": "yuv420p", "video.is_depth_map": False,
                                 "has_audio": False}},
            "observation.state": {"dtype": "float32", "shape": [4], "names": STATE_NAMES},
            "action": {"dtype": "float32", "shape": [4], "names": ACTION_NAMES},
            "next.reward": scalar("float32"), "next.done": scalar("bool"), "next.success": scalar("bool"),
            "timestamp": scalar("float32"), "frame_index": scalar("int64"), "episode_index": scalar("int64"),
            "index": scalar("int64"), "task_index": scalar("int64"),
        },
    }
    for name, lines in (("episodes", ep_lines), ("episodes_stats", stat_lines),
                        ("tasks", [{"task_index": 0, "task": TASK_TEXT.get(task, task)}])):
        (root / "meta" / f"{name}.jsonl").write_text("".join(json.dumps(x) + "\n" for x in lines))
    atomic_write_json(root / "meta" / "info.json", info)  # written last: its presence marks a complete dataset
    return info
