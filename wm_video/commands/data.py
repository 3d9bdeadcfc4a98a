"""``wm-video data ...``: collect episodes from simulators, inspect datasets, list environments."""

from __future__ import annotations

import json
from typing import Literal


def collect(
    *overrides: str,
    env: str | None = None,
    episodes: int | None = None,
    policy: Literal["random", "scripted", "noisy"] | None = None,
    noise: float | None = None,
    size: int | None = None,
    clip_len: int | None = None,
    stride: int | None = None,
    max_episode_steps: int | None = None,
    episodes_per_shard: int | None = None,
    workers: int | None = None,
    storage: Literal["raw", "png", "mp4"] | None = None,
    seed: int | None = None,
    shard_range: list[int] | None = None,
    out: str = "data/collected",
    config: str | None = None,
    preset: str = "small",
    progress: bool | None = None,
) -> None:
    """Collect episodes from a real simulator into episode-clip shards (webdataset tar + dataset.json).

    Works with Atari (ALE/<Game>-v5), gymnasium environments that render rgb frames (classic control, box2d,
    MuJoCo rendered on the CPU) and Meta-World tasks (metaworld/<task>-v3, with scripted experts). Several
    processes write whole shards atomically; rerunning the same command resumes where it stopped.

    Settings resolve as: the preset (``--preset``), then the YAML (``--config``), then these flags, then the
    trailing FIELD=VALUE overrides; a flag left out keeps the value from the preset or YAML.

    Example:
        wm-video data collect --env ALE/Pong-v5 --episodes 32 --policy random --size 64 --clip-len 16 --out data/pong

    Args:
        overrides: dotted overrides of the collect config, e.g. ``noise=0.5``; they beat flags and YAML.
        env: environment id (``wm-video data envs`` lists them).
        episodes: number of episodes to collect.
        policy: random, scripted (the environment's expert) or noisy (expert plus noise).
        noise: noise level of the noisy policy (probability of a random discrete action; std for continuous).
        size: frame height and width in pixels.
        clip_len: frames per clip.
        stride: frames between clip starts (default: clip_len).
        max_episode_steps: cap on episode length (default: the environment's own limit).
        episodes_per_shard: episodes per shard.
        workers: collection processes.
        storage: frame storage: raw or png (lossless), mp4 (H.264 yuv444p).
        seed: base seed; shard k's first reset uses seed + k * episodes_per_shard.
        shard_range: two numbers FIRST STOP: make only shards [FIRST, STOP) (for SLURM array tasks).
        out: output dataset folder.
        config: YAML file with ``kind: collect`` (see configs/data/).
        preset: named preset the config starts from: debug, small, base, large.
        progress: show a progress bar (default: on terminals, off in batch jobs).
    """
    from wm_video.config import load_config
    from wm_video.data.collect import collect as run
    from wm_video.data.inspect import format_summary, summarize

    flags = dict(env=env, episodes=episodes, policy=policy, noise=noise, size=size, clip_len=clip_len, stride=stride,
                 max_episode_steps=max_episode_steps, episodes_per_shard=episodes_per_shard, workers=workers,
                 storage=storage, seed=seed, shard_range=shard_range)
    cfg = load_config("collect", preset_name=preset, yaml_path=config, flags=flags, overrides=overrides)
    info = run(cfg, out, show_progress=progress)
    if info is not None:
        print(format_summary(summarize(info)))
        print(f"wrote {out}/dataset.json")


def inspect(path: str, sheet: str | None = None, gif: str | None = None, clips: int = 8, frames: int = 8,
            json_out: bool = False) -> None:
    """Counts, action and reward statistics of a dataset, and a contact sheet of sample clips.

    Args:
        path: dataset folder (holds dataset.json).
        sheet: PNG contact sheet to write (default: PATH/contact_sheet.png).
        gif: animated GIF of a few clips side by side to write (default: none).
        clips: clips on the contact sheet.
        frames: frames shown per clip.
        json_out: print the summary as JSON instead of text.
    """
    from pathlib import Path

    from wm_video.data.inspect import format_summary, inspect_dataset

    sheet = sheet or str(Path(path) / "contact_sheet.png")
    summary = inspect_dataset(path, sheet=sheet, gif=gif, num_clips=clips, frames_per_clip=frames)
    if json_out:
        print(json.dumps(summary, indent=2))
        return
    print(format_summary(summary))
    print(f"contact sheet: {summary['contact_sheet']}" + (f"  gif: {summary['gif']}" if gif else ""))


def envs(family: Literal["atari", "gymnasium", "metaworld"] | None = None) -> None:
    """List the environment ids ``wm-video data collect --env`` accepts.

    Args:
        family: only this family: atari, gymnasium or metaworld.
    """
    from wm_video.envs import list_env_ids

    for env_id in list_env_ids(family):
        print(env_id)


def tokenize(tokenizer: str | None = None, src: str | None = None, out: str | None = None, batch_frames: int = 256,
             device: str = "auto", progress: bool | None = None) -> None:
    """Tokenize an episode-clip dataset with a trained tokenizer into token shards (resumable).

    Clips keep their order, actions, rewards, terminations and metadata; frames become tokens (t, h', w') in the
    smallest unsigned type that holds the vocabulary. Rerunning skips finished shards.

    Example:
        wm-video data tokenize --tokenizer runs/tok_pong/export --src data/pong --out data/pong_tokens

    Args:
        tokenizer: tokenizer export folder (config.json + model.safetensors).
        src: episode-clip dataset folder.
        out: output folder for the token shards and their dataset.json.
        batch_frames: frames tokenized per forward pass.
        device: auto (GPU when there is one), cpu or cuda.
        progress: show a progress bar (default: on terminals).
    """
    from wm_video.data.inspect import format_summary, summarize
    from wm_video.data.tokenize import tokenize_dataset

    if not (tokenizer and src and out):
        raise ValueError("--tokenizer, --src and --out are all required")
    info = tokenize_dataset(tokenizer, src, out, batch_frames, device, progress)
    print(format_summary(summarize(info)))
    print(f"token shards: {out} (vocabulary {info.tokens['vocab_size']}, {info.tokens['dtype']})")
