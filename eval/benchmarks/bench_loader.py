"""Loader throughput from episode-clip shards, per frame storage and resolution, with the decode-only rate beside it.

Data: real Atari frames (Breakout, random policy) collected once at 256x256 and transcoded into each storage
(raw, png, mp4) at 256x256 and 64x64, so every row holds the same clips.

    python eval/benchmarks/bench_loader.py                 # defaults: 12 episodes, 2 loader workers
    python eval/benchmarks/bench_loader.py --episodes 24 --workers 2 --out /tmp/bench_loader

Rows: ``loader`` = ClipLoader with ``--workers`` DataLoader workers (shuffle buffer 64, batch 8) over one epoch,
timed from the first batch (worker start-up excluded);
``decode only`` = one process reading the tars and decoding frames, nothing else.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np


def transcode(src: Path, dst: Path, storage: str, size: int) -> None:
    from PIL import Image

    from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
    from wm_video.data.writer import ShardWriter, finalize_dataset

    if (dst / "dataset.json").exists():
        return
    info = load_dataset_info(src)
    dst.mkdir(parents=True, exist_ok=True)
    paths = []
    for url in shard_paths(src, info):
        path = dst / Path(url).name
        with ShardWriter(path, info.action_space, storage, info.fps) as w:
            for clip in iter_clips(url, info.action_space):
                if size != clip.frames.shape[1]:
                    clip.frames = np.stack([np.asarray(Image.fromarray(f).resize((size, size), Image.BILINEAR))
                                            for f in clip.frames])
                w.write(clip)
            w.close()
        paths.append(path)
    finalize_dataset(dst, paths, resolution=[size, size], fps=info.fps, clip_len=info.clip_len, storage=storage,
                     action_space=info.action_space, source=info.source)


def loader_rate(root: Path, workers: int) -> float:
    from wm_video.data.loader import ClipLoader, LoaderConfig

    loader = ClipLoader(root, LoaderConfig(batch_size=8, num_workers=workers, shuffle_buffer=64, drop_last=False))
    t0, frames = None, 0
    for batch in loader:  # steady state: the clock starts at the first batch, after the workers started
        if t0 is None:
            t0 = time.perf_counter()
            continue
        frames += batch["frames"].shape[0] * batch["frames"].shape[1]
    return frames / (time.perf_counter() - t0)


def decode_rate(root: Path) -> float:
    from wm_video.data.codecs import decode_frames, frame_field
    from wm_video.data.reader import iter_raw_samples, load_dataset_info, shard_paths

    info = load_dataset_info(root)
    t0, frames = time.perf_counter(), 0
    for url in shard_paths(root, info):
        for sample in iter_raw_samples(url, lambda u, e: None):
            name = frame_field(sample)
            frames += len(decode_frames(name, sample[name], info.clip_len))
    return frames / (time.perf_counter() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=12)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", default="/tmp/wm_video_bench_loader")
    args = parser.parse_args()
    from wm_video.envs.collect import CollectConfig, collect
    from wm_video.utils.atomic import atomic_write_bytes
    from wm_video.utils.machine import machine_record, machine_summary

    out = Path(args.out)
    src = out / "src_256_raw"
    collect(CollectConfig(env="ALE/Breakout-v5", episodes=args.episodes, policy="random", size=256, clip_len=16,
                          episodes_per_shard=2, workers=2, max_episode_steps=400, storage="raw"), src,
            show_progress=False)
    rows = []
    for size in (64, 256):
        for storage in ("raw", "png", "mp4"):
            root = out / f"{storage}_{size}"
            transcode(src, root, storage, size)
            mb = sum(p.stat().st_size for p in root.glob("*.tar")) / 1e6
            rows.append({"size": size, "storage": storage, "MB": round(mb, 1),
                         "decode_only_fps": round(decode_rate(root)),
                         "loader_fps": round(loader_rate(root, args.workers))})
            print(rows[-1], flush=True)
    frames = json.loads((src / "dataset.json").read_text())["stats"]["frames"]
    print(f"\n{frames} frames, {machine_summary(machine_record(threads=False, git=False))}")
    print("| size | storage | shards MB | decode only (frames/s, 1 proc) | loader (frames/s, "
          f"{args.workers} workers) |\n| --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['size']} | {r['storage']} | {r['MB']} | {r['decode_only_fps']} | {r['loader_fps']} |")
    atomic_write_bytes(out / "results.json", json.dumps(rows, indent=2).encode())


if __name__ == "__main__":
    main()
