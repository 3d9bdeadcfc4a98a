"""``wm-video demo``: the built-in default job for a fresh machine (no GPU, no downloads)."""

from __future__ import annotations


def demo(out: str = "demo_out", env: str = "ALE/Breakout-v5", episodes: int = 8, workers: int = 2,
         max_episode_steps: int = 300) -> None:
    """Collect a small dataset from a real simulator, stream a batch back through the loader, and write a
    contact sheet and a GIF of sample clips.

    This is the main job on the built-in default; later stages (train tokenizer, dynamics and decoder, then
    generate a predicted video) extend it as they land.

    Args:
        out: output folder: OUT/data (shards + dataset.json), OUT/contact_sheet.png, OUT/clips.gif.
        env: simulator environment id.
        episodes: episodes to collect.
        workers: collection processes.
        max_episode_steps: cap on episode length.
    """
    import time
    from pathlib import Path

    from wm_video.data.collect import CollectConfig, collect
    from wm_video.data.inspect import format_summary, inspect_dataset
    from wm_video.data.loader import ClipLoader, LoaderConfig

    t0 = time.perf_counter()
    data = Path(out) / "data"
    cfg = CollectConfig(env=env, episodes=episodes, policy="random", size=64, clip_len=16, workers=workers,
                        episodes_per_shard=max(1, episodes // 4), max_episode_steps=max_episode_steps)
    collect(cfg, data)
    loader = ClipLoader(data, LoaderConfig(batch_size=4, num_workers=0, shuffle_buffer=32))
    batch = next(iter(loader))
    shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
    summary = inspect_dataset(data, sheet=Path(out) / "contact_sheet.png", gif=Path(out) / "clips.gif")
    print(format_summary(summary))
    print(f"a loader batch: {shapes}")
    print(f"contact sheet: {summary['contact_sheet']}  gif: {summary['gif']}  ({time.perf_counter() - t0:.0f}s)")
