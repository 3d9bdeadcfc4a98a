"""Test inputs for the data pipelines, written into ``tmp_path``: tiny videos made with PyAV, and small LeRobot
datasets in the v2.1 and v3.0 layouts (H.264 or AV1 videos, parquet frames with actions, state, rewards, done
flags and tasks).

Frames say which row they show: a 12x12 patch at the top centre (it survives the centre crop) has grey level
``level(i)`` for frame ``i`` of the video file, so a test can check each clip frame came from the right row,
through lossy H.264 too; :func:`marker` reads it back from an output frame.
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 10
TASKS = ["push the block to the goal", "stack the red cube"]
CAMERAS = ("observation.images.top", "observation.images.wrist")


def level(i: int) -> int:
    """Grey level of the marker patch of frame ``i``: 24 levels 10 apart (H.264 keeps them apart)."""
    return 20 + 10 * (i % 24)


def textured_frames(n: int, h: int = 48, w: int = 64, seed: int = 0, speed: int = 2) -> np.ndarray:
    """``n`` frames (n, h, w, 3) uint8 of a random block texture drifting ``speed`` pixels per frame, with the
    row marker patch; ``speed=0`` gives a still picture (its marker stays at ``level(0)``)."""
    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, size=(h // 8 + 1, 2 * w // 8 + 2, 3), dtype=np.uint8)
    tex = tex.repeat(8, 0).repeat(8, 1)  # 8x8 blocks survive H.264
    frames = np.stack([tex[:h, (i * speed) % w:(i * speed) % w + w] for i in range(n)])
    for i in range(n):
        frames[i, :12, w // 2 - 6:w // 2 + 6] = level(i if speed else 0)
    return frames


def marker(frames: np.ndarray) -> np.ndarray:
    """The marker grey level of each output frame (t, s, s, 3), from the middle of the patch."""
    s = frames.shape[2]
    return frames[:, 1:3, s // 2 - 1:s // 2 + 1].astype(float).mean((1, 2, 3))


def write_video(path: Path, frames: np.ndarray, fps: float = FPS, codec: str = "libx264", crf: int = 18) -> Path:
    """Encode uint8 (n, h, w, 3) frames; the container follows the suffix (.mp4, .mkv, .webm, .avi)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    _, h, w, _ = frames.shape
    with av.open(str(path), "w") as container:
        stream = container.add_stream(codec, rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        if codec == "libx264":
            stream.options = {"crf": str(crf), "preset": "veryfast"}
        elif codec == "libsvtav1":
            stream.options = {"crf": "10", "preset": "8"}
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_audio_only(path: Path, seconds: float = 0.5) -> Path:
    """An mp4 holding one AAC audio stream and no video."""
    import av

    rate = 16000
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=rate)
        samples = (np.sin(np.arange(int(rate * seconds)) / 10) * 0.2).astype(np.float32)[None]  # (1, n)
        for i in range(0, samples.shape[1], 1024):
            frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(samples[:, i:i + 1024]), format="fltp",
                                               layout="mono")
            frame.sample_rate = rate
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def episode_rows(ep: int, length: int, first_index: int, rng: np.random.Generator, nan_at: int | None = None):
    """Parquet rows of one episode: action (3), state (4), reward, done at the last row, task by episode."""
    actions = rng.uniform(-1, 1, size=(length, 3)).astype(np.float32)
    if nan_at is not None:
        actions[nan_at, 1] = np.nan
    state = rng.normal(size=(length, 4)).astype(np.float32)
    rewards = (np.arange(length) % 5 == 4).astype(np.float32) * (ep + 1)
    return {
        "action": actions, "observation.state": state, "next.reward": rewards,
        "next.done": np.arange(length) == length - 1,
        "timestamp": (np.arange(length) / FPS).astype(np.float32),
        "frame_index": np.arange(length, dtype=np.int64), "episode_index": np.full(length, ep, np.int64),
        "index": np.arange(first_index, first_index + length, dtype=np.int64),
        "task_index": np.full(length, ep % len(TASKS), np.int64),
    }


def _table(cols: dict, drop: tuple[str, ...] = ()):
    import pyarrow as pa

    arrays = {}
    for k, v in cols.items():
        if k in drop:
            continue
        if v.ndim == 2:
            arrays[k] = pa.FixedSizeListArray.from_arrays(pa.array(v.ravel()), v.shape[1])
        else:
            arrays[k] = pa.array(v)
    return pa.table(arrays)


def _concat(rows: list[dict]) -> dict:
    return {k: np.concatenate([r[k] for r in rows]) for k in rows[0]}


def _info(version: str, total: int, frames: int, size: tuple[int, int], codec: str) -> dict:
    video = {"dtype": "video", "shape": [size[0], size[1], 3], "names": ["height", "width", "channels"],
             "info": {"video.codec": codec, "video.pix_fmt": "yuv420p", "video.height": size[0],
                      "video.width": size[1], "video.fps": FPS}}
    v3 = version == "v3.0"
    return {
        "codebase_version": version, "robot_type": "test_arm", "total_episodes": total, "total_frames": frames,
        "total_tasks": len(TASKS), "chunks_size": 1000, "fps": FPS, "splits": {"train": f"0:{total}"},
        "data_path": "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet" if v3 else
        "data/chunk-{episode_chunk:03d}/episode_{episode_index:06d}.parquet",
        "video_path": "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4" if v3 else
        "videos/chunk-{episode_chunk:03d}/{video_key}/episode_{episode_index:06d}.mp4",
        "features": {
            **{cam: video for cam in CAMERAS},
            "observation.state": {"dtype": "float32", "shape": [4], "names": ["x", "y", "z", "grip"]},
            "action": {"dtype": "float32", "shape": [3], "names": ["dx", "dy", "dz"]},
            "next.reward": {"dtype": "float32", "shape": [1], "names": None},
            "next.done": {"dtype": "bool", "shape": [1], "names": None},
            "timestamp": {"dtype": "float32", "shape": [1], "names": None},
            "frame_index": {"dtype": "int64", "shape": [1], "names": None},
            "episode_index": {"dtype": "int64", "shape": [1], "names": None},
            "index": {"dtype": "int64", "shape": [1], "names": None},
            "task_index": {"dtype": "int64", "shape": [1], "names": None},
        },
    }


def write_lerobot(root: Path, version: str = "v2.1", lengths: tuple[int, ...] = (24, 18, 30),
                  nan_episode: int | None = None, codec: str = "libx264", size: tuple[int, int] = (48, 64),
                  drop_columns: tuple[str, ...] = ()) -> dict[int, dict]:
    """Write a LeRobot dataset at ``root``; returns each episode's rows (the values the parquet holds).

    v2.1: one parquet and one video per episode, JSONL metadata. v3.0: every episode in one parquet and one
    video per camera (episodes concatenated, located by from/to timestamps), parquet metadata.
    ``drop_columns`` leaves columns out of the data parquet (info.json still lists them).
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(7)
    rows, first = {}, 0
    for ep, n in enumerate(lengths):
        rows[ep] = episode_rows(ep, n, first, rng, nan_at=5 if ep == nan_episode else None)
        first += n
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    (meta / "info.json").write_text(json.dumps(_info(version, len(lengths), first, size, codec), indent=2))
    h, w = size
    if version != "v3.0":
        with open(meta / "episodes.jsonl", "w") as f:
            for ep, n in enumerate(lengths):
                f.write(json.dumps({"episode_index": ep, "tasks": [TASKS[ep % len(TASKS)]], "length": n}) + "\n")
        with open(meta / "tasks.jsonl", "w") as f:
            for i, t in enumerate(TASKS):
                f.write(json.dumps({"task_index": i, "task": t}) + "\n")
        for ep, n in enumerate(lengths):
            (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
            pq.write_table(_table(rows[ep], drop_columns), root / f"data/chunk-000/episode_{ep:06d}.parquet")
            for c, cam in enumerate(CAMERAS):
                write_video(root / f"videos/chunk-000/{cam}/episode_{ep:06d}.mp4",
                            textured_frames(n, h, w, seed=10 * ep + c), codec=codec)
        return rows
    (root / "data/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(_table(_concat(list(rows.values())), drop_columns), root / "data/chunk-000/file-000.parquet")
    for c, cam in enumerate(CAMERAS):
        write_video(root / f"videos/{cam}/chunk-000/file-000.mp4", textured_frames(first, h, w, seed=c), codec=codec)
    # pandas writes the task text as the index: the column is "__index_level_0__"
    pq.write_table(pa.table({"task_index": pa.array(range(len(TASKS)), pa.int64()), "__index_level_0__": TASKS}),
                   meta / "tasks.parquet")
    starts = np.cumsum([0, *lengths])
    episodes = {"episode_index": list(range(len(lengths))), "length": list(lengths),
                "tasks": [[TASKS[ep % len(TASKS)]] for ep in range(len(lengths))],
                "data/chunk_index": [0] * len(lengths), "data/file_index": [0] * len(lengths),
                "dataset_from_index": starts[:-1].tolist(), "dataset_to_index": starts[1:].tolist()}
    for cam in CAMERAS:
        episodes |= {f"videos/{cam}/chunk_index": [0] * len(lengths), f"videos/{cam}/file_index": [0] * len(lengths),
                     f"videos/{cam}/from_timestamp": (starts[:-1] / FPS).tolist(),
                     f"videos/{cam}/to_timestamp": (starts[1:] / FPS).tolist()}
    episodes["stats/action/mean"] = [[0.0, 0.0, 0.0]] * len(lengths)  # real files carry per-episode stats too
    (meta / "episodes/chunk-000").mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(episodes), meta / "episodes/chunk-000/file-000.parquet")
    return rows


def video_row(ep_rows: dict, version: str, lengths: tuple[int, ...], ep: int, frame_index: int) -> int:
    """The frame of the video file that shows ``frame_index`` of episode ``ep`` (v3.0 files hold every episode)."""
    return frame_index + (sum(lengths[:ep]) if version == "v3.0" else 0)
