"""``wm-video demo``: the built-in default job for a fresh machine (no GPU, no downloads)."""

from __future__ import annotations


def demo(out: str = "demo_out", envs: tuple[str, ...] = ("ALE/Breakout-v5", "metaworld/reach-v3"),
         policies: tuple[str, ...] = ("random", "noisy"), episodes: int = 8, workers: int = 2,
         max_episode_steps: int = 150) -> None:
    """Collect small datasets from real simulators (an Atari game and a robot-arm task by default), stream a
    batch back through the loader, and write a contact sheet and a GIF of sample clips for each.

    This is the main job on the built-in default; later stages (train tokenizer, dynamics and decoder, then
    generate a predicted video) extend it as they land.

    Args:
        out: output folder: OUT/<env>/ (shards + dataset.json), OUT/<env>.png (contact sheet), OUT/<env>.gif.
        envs: simulator environment ids.
        policies: the policy for each env (random, scripted or noisy), in the same order.
        episodes: episodes to collect per env.
        workers: collection processes.
        max_episode_steps: cap on episode length.
    """
    import time
    from pathlib import Path

    from wm_video.data.collect import CollectConfig, collect
    from wm_video.data.inspect import format_summary, inspect_dataset
    from wm_video.data.loader import ClipLoader, LoaderConfig

    if len(policies) != len(envs):
        raise ValueError(f"--policies needs one policy per env: {len(envs)} envs, {len(policies)} policies")
    t0 = time.perf_counter()
    for env, policy in zip(envs, policies, strict=True):
        name = env.replace("/", "_")
        data = Path(out) / name
        cfg = CollectConfig(env=env, episodes=episodes, policy=policy, size=64, clip_len=16, workers=workers,
                            episodes_per_shard=max(1, episodes // 4), max_episode_steps=max_episode_steps)
        collect(cfg, data)
        batch = next(iter(ClipLoader(data, LoaderConfig(batch_size=4, num_workers=0, shuffle_buffer=32))))
        shapes = {k: tuple(v.shape) for k, v in batch.items() if hasattr(v, "shape")}
        summary = inspect_dataset(data, sheet=Path(out) / f"{name}.png", gif=Path(out) / f"{name}.gif")
        print(f"\n== {env} ({policy} policy) ==")
        print(format_summary(summary))
        print(f"a loader batch: {shapes}")
        print(f"contact sheet: {summary['contact_sheet']}  gif: {summary['gif']}")
    print(f"\ndone in {time.perf_counter() - t0:.0f}s")
