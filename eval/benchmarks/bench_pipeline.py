"""Video pipeline throughput (``wm-video data videos``) at 64x64 and 256x256 outputs, against bare PyAV decoding of
the same files in the same run.

Data: ``--videos`` H.264 files (yuv420p, crf 23, ``--width`` x ``--height`` at 30 fps, ``--seconds`` long) of a
panning, noisy texture with moving blocks, written once into ``--out`` (kept between runs).

    python eval/benchmarks/bench_pipeline.py                  # defaults: 16 videos x 8 s, 640x360, 2 workers
    python eval/benchmarks/bench_pipeline.py --videos 8 --seconds 4 --json /tmp/bench_pipeline.json

Rows: ``bare decode`` = ``container.decode()`` of every frame, nothing else (one process, and ``--workers``
processes over the files, started beforehand); ``pipeline`` = every stage, probe -> clip -> filter -> shard ->
stats, into a fresh folder with ``--workers`` processes (their start-up included, in the probe stage), output
15 fps (every other source frame), clips of 16, raw storage. Rates are clips written per second and seconds of
input video per second of wall time; ``stage_seconds`` splits the time by stage.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import shutil
import sys
import time
from fractions import Fraction
from pathlib import Path

import numpy as np

FPS = 30


def make_video(path: Path, seconds: float, width: int, height: int, seed: int) -> None:
    import av

    rng = np.random.default_rng(seed)
    tex = rng.integers(0, 256, size=(height // 16 + 2, (2 * width) // 16 + 2, 3), dtype=np.uint8)
    tex = tex.repeat(16, 0).repeat(16, 1)  # a coarse texture to pan over
    noise = rng.integers(-12, 13, size=(8, height, width, 3), dtype=np.int16)  # sensor-like grain
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=Fraction(FPS))
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        stream.options = {"crf": "23", "preset": "veryfast"}
        for i in range(int(seconds * FPS)):
            x = (i * 3) % width
            frame = tex[:height, x:x + width].astype(np.int16) + noise[i % 8]
            for k in range(3):  # blocks moving on their own paths
                cy = int((0.5 + 0.4 * np.sin(i / 17 + k * 2)) * (height - 40))
                cx = int((0.5 + 0.4 * np.cos(i / 23 + k)) * (width - 40))
                frame[cy:cy + 40, cx:cx + 40] = (80 * k, 255 - 60 * k, 120)
            img = np.clip(frame, 0, 255).astype(np.uint8)
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def decode_count(path: str) -> int:
    import av

    with av.open(path) as container:
        return sum(1 for _ in container.decode(video=0))


def bare_decode(paths: list[str], workers: int) -> float:
    """Seconds to decode every frame of ``paths`` in ``workers`` processes (1: this one)."""
    t0 = time.perf_counter()
    if workers == 1:
        for p in paths:
            decode_count(p)
    else:
        with mp.get_context("spawn").Pool(workers) as pool:
            pool.map(decode_count, paths[:workers], chunksize=1)  # start the workers and import PyAV first
            t0 = time.perf_counter()  # so start-up is excluded here; the pipeline's own is inside its time
            pool.map(decode_count, paths, chunksize=1)
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--videos", type=int, default=16)
    parser.add_argument("--seconds", type=float, default=8.0)
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=360)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 256])
    parser.add_argument("--out", default="/tmp/wm_video_bench_pipeline")
    parser.add_argument("--json", default=None, help="also write the result JSON here")
    args = parser.parse_args()

    from wm_video.data.pipeline import STAGES, PipelineConfig, VideoSource
    from wm_video.data.pipeline.runner import Pipeline
    from wm_video.utils import emit_json
    from wm_video.utils.machine import machine_record

    src = Path(args.out) / f"videos_{args.width}x{args.height}_{args.seconds:g}s"
    src.mkdir(parents=True, exist_ok=True)
    paths = [src / f"v{i:03d}.mp4" for i in range(args.videos)]
    t0 = time.perf_counter()
    for i, p in enumerate(paths):
        if not p.exists():
            make_video(p, args.seconds, args.width, args.height, seed=i)
    print(f"inputs ready in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
    frames = sum(decode_count(str(p)) for p in paths)  # also warms the page cache for every row below
    video_s = frames / FPS
    rows = []
    for workers in sorted({1, args.workers}):
        dt = bare_decode([str(p) for p in paths], workers)
        rows.append({"row": "bare decode", "size": None, "workers": workers, "seconds": round(dt, 2),
                     "frames_per_s": round(frames / dt), "video_s_per_s": round(video_s / dt, 1)})
        print(rows[-1], file=sys.stderr, flush=True)
    for size in args.sizes:
        out = Path(args.out) / f"out_{size}"
        shutil.rmtree(out, ignore_errors=True)
        cfg = PipelineConfig(size=size, clip_len=16, fps=15, workers=args.workers)
        stage_s = {}
        t0 = time.perf_counter()
        pipe = Pipeline(VideoSource(str(src)), cfg, out, show_progress=False)  # what run_pipeline does, timed
        try:
            for stage in STAGES:
                ts = time.perf_counter()
                info = getattr(pipe, stage)()
                stage_s[stage] = round(time.perf_counter() - ts, 2)
        finally:
            pipe.close()
        dt = time.perf_counter() - t0
        shard_mb = sum(s.stat().st_size for s in out.glob("*.tar")) / 1e6
        rows.append({"row": "pipeline", "size": size, "workers": args.workers, "seconds": round(dt, 2),
                     "clips": info.num_samples, "clips_per_s": round(info.num_samples / dt, 1),
                     "frames_per_s": round(frames / dt), "video_s_per_s": round(video_s / dt, 1),
                     "stage_seconds": stage_s, "shard_mb": round(shard_mb)})
        print(rows[-1], file=sys.stderr, flush=True)
    result = {
        "benchmark": "bench_pipeline",
        "machine": {**machine_record(threads=False), "load_avg_1m_at_end": round(os.getloadavg()[0], 2)},
        "inputs": {"videos": args.videos, "seconds_each": args.seconds, "resolution": [args.height, args.width],
                   "fps": FPS, "codec": "h264 yuv420p crf 23", "frames": frames, "video_seconds": video_s},
        "pipeline_settings": {"fps": 15, "clip_len": 16, "stride": 16, "storage": "raw", "min_motion": 0.5,
                              "dedup": "near"},
        "rows": rows,
    }
    emit_json(result, args.json)


if __name__ == "__main__":
    main()
