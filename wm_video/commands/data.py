"""``wm-video data ...``: collect episodes from simulators, turn video folders and LeRobot datasets into shards,
inspect datasets, list environments, tokenize."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from wm_video.config import load_config
from wm_video.data.inspect import format_summary, inspect_dataset, summarize
from wm_video.data.pipeline import VideoSource, run_pipeline
from wm_video.data.tokenize import tokenize_dataset
from wm_video.envs import list_env_ids
from wm_video.envs.collect import collect as run_collect
from wm_video.utils.device import resolve_device


def collect(
    *overrides: str,
    env: str | None = None,
    episodes: int | None = None,
    policy: Literal["random", "scripted", "noisy"] | None = None,
    noise: float | None = None,
    hold: int | None = None,
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

    Domain variation (overrides ``variation.FIELD=VALUE``; a number shifts every episode alike, ``[LOW,HIGH]`` draws
    per episode): on MuJoCo envs hue (degrees), light (factor), camera_azimuth and camera_elevation (degrees),
    camera_distance, mass_scale, friction_scale and damping_scale (factors); on every env frame_hue (degrees) and
    frame_brightness (factor). See docs/domain-variation.md.

    Examples:
        wm-video data collect --env ALE/Pong-v5 --episodes 32 --policy random --size 64 --clip-len 16 --out data/pong
        wm-video data collect --config configs/data/reacher_shifted.yaml --out data/reacher_real
        wm-video data collect --env Reacher-v5 --out data/reacher_dr 'variation.hue=[-30,30]' \
            'variation.mass_scale=[0.8,1.25]'

    Args:
        overrides: dotted overrides of the collect config, e.g. ``noise=0.5`` or ``variation.mass_scale=1.3``; they
            beat flags and YAML.
        env: environment id (``wm-video data envs`` lists them).
        episodes: number of episodes to collect.
        policy: random, scripted (the environment's expert) or noisy (expert plus noise).
        noise: noise level of the noisy policy (probability of a random discrete action; std for continuous).
        hold: steps the random policy keeps each action it draws (default 1: a new one every step).
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
        preset: named preset the config starts from.
        progress: show a progress bar (default: on terminals, off in batch jobs).
    """
    flags = dict(env=env, episodes=episodes, policy=policy, noise=noise, hold=hold, size=size, clip_len=clip_len,
                 stride=stride, max_episode_steps=max_episode_steps, episodes_per_shard=episodes_per_shard,
                 workers=workers, storage=storage, seed=seed, shard_range=shard_range)
    cfg = load_config("collect", preset_name=preset, yaml_path=config, flags=flags, overrides=overrides)
    info = run_collect(cfg, out, show_progress=progress)
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
    for env_id in list_env_ids(family):
        print(env_id)


def tokenize(*, tokenizer: str, data: str, out: str, batch_frames: int = 256, device: str = "auto",
             progress: bool | None = None) -> None:
    """Tokenize an episode-clip dataset with a trained tokenizer into token shards (resumable).

    Clips keep their order, actions, rewards, terminations and metadata; frames become tokens (t, h', w') in the
    smallest unsigned type that holds the vocabulary. Rerunning skips finished shards.

    Example:
        wm-video data tokenize --tokenizer runs/tok_pong/export --data data/pong --out data/pong_tokens

    Args:
        tokenizer: tokenizer export folder (config.json + model.safetensors).
        data: episode-clip dataset folder.
        out: output folder for the token shards and their dataset.json.
        batch_frames: frames tokenized per forward pass.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        progress: show a progress bar (default: on terminals).
    """
    info = tokenize_dataset(tokenizer, data, out, batch_frames, resolve_device(device), progress)
    print(format_summary(summarize(info)))
    print(f"token shards: {out} (vocabulary {info.tokens['vocab_size']}, {info.tokens['dtype']})")


def _report(info: Any, out: str, stages: list[str] | None) -> None:
    """What a pipeline run made: inputs by fate, clips kept and dropped, shards (or which stages ran)."""
    if info is None:
        ran = " ".join(stages) if stages else "all"
        print(f"stages run: {ran}; dataset.json not written yet (see {out}/manifest/ and the log)")
        return
    counts = info.source["counts"]
    fates = []
    for status in ("broken", "filtered", "rejected"):
        if counts[status]:
            detail = ", ".join(f"{k} {v}" for k, v in counts[status].items())
            fates.append(f"{status} {sum(counts[status].values())} ({detail})")
    clips = counts["clips"]
    print(f"inputs {counts['inputs']}: ok {counts['ok']}" + "".join(f"; {f}" for f in fates))
    print(f"clips made {clips['made']}, kept {clips['kept']}, static {clips['static']}, duplicate "
          f"{clips['duplicate']} (near {clips['near_duplicate']})")
    print(f"samples {info.num_samples}  episodes {info.num_episodes}  shards {len(info.shards)}  "
          f"{info.resolution[0]}x{info.resolution[1]} at {info.fps:g} fps, clip_len {info.clip_len}, "
          f"action space {info.action_space.kind}")
    print(f"wrote {out}/dataset.json; every input's fate: {out}/manifest.jsonl")


def videos(*overrides: str, data: str, out: str, shard_mb: int | None = None, stages: list[str] | None = None,
           config: str | None = None, preset: str = "default", progress: bool | None = None, **settings: Any) -> None:
    """Turn a folder (or list file) of videos into action-free episode-clip shards for pretraining.

    Stages: probe (PyAV metadata; corrupt, zero-length, truncated or video-less files are marked with the reason
    and skipped) -> clip (resample to --fps, scale the short side to --size, centre crop, cut --clip-len clips
    every --stride frames) -> filter (too short, static, duplicate) -> shard -> stats. Every input's fate is in
    OUT/manifest.jsonl. Rerunning the same command skips finished work; --stages runs some stages only (e.g. the
    shard stage of a SLURM array task: see slurm/data_shards.sbatch). Settings (kind ``data_videos``: the
    pipeline's) resolve as: the preset, the YAML (--config), the flags given, then the trailing FIELD=VALUE
    overrides.

    Example:
        wm-video data videos --data videos/ --out data/videos64 --size 64 --clip-len 16 --fps 15 --workers 2

    Args:
        overrides: dotted overrides of the pipeline config, e.g. ``dedup=exact``; they beat flags and YAML.
        data: folder of videos (mp4, webm, mkv, avi; searched recursively) or a text file listing them.
        out: output dataset folder.
        shard_mb: raw megabytes per shard at most (sets shard_bytes; default: 1024).
        stages: run only these stages, in pipeline order: probe clip filter shard stats (default: all).
        config: YAML file with ``kind: data_videos``.
        preset: named preset the settings start from.
        progress: show progress bars (default: on terminals).
        settings: the fields of the pipeline config, as flags.
        fps: output frame rate (default: the most common rate among the videos).
        min_motion: clips whose mean absolute frame difference (0-255 levels) is below this are static.
    """
    cfg = _pipeline_config("data_videos", preset, config, shard_mb, settings, overrides)
    _report(run_pipeline(VideoSource(data), cfg.pipeline(), out, stages, show_progress=progress), out, stages)


def lerobot(*overrides: str, data: str, out: str, shard_mb: int | None = None, stages: list[str] | None = None,
            config: str | None = None, preset: str = "default", progress: bool | None = None,
            **settings: Any) -> None:
    """Turn a LeRobot dataset on local disk (layout v2.x or v3.0) into episode-clip shards with actions.

    Reads meta/info.json, the parquet frames and the camera's videos (H.264, AV1, ...) with pyarrow and PyAV; the
    lerobot package is not needed. Actions come from --action-key (continuous, normalisation statistics and
    quantiles in dataset.json), rewards and terminations from next.reward / next.done where present; the state
    and the task text go into each clip's meta.json (extra). Episodes with NaN or infinite values are rejected and
    counted; a missing field or unknown camera key stops with an error that lists what the dataset has. Settings
    (kind ``data_lerobot``: the pipeline's and the features to read) resolve as for 'wm-video data videos'.

    Example:
        wm-video data lerobot --data ~/datasets/aloha --out data/aloha64 --camera top --size 64 --clip-len 16

    Args:
        overrides: dotted overrides of the config, e.g. ``camera=top``; they beat flags and YAML.
        data: LeRobot dataset folder (holds meta/info.json).
        out: output dataset folder.
        shard_mb: raw megabytes per shard at most (sets shard_bytes; default: 1024).
        stages: run only these stages, in pipeline order: probe clip filter shard stats (default: all).
        config: YAML file with ``kind: data_lerobot``.
        preset: named preset the settings start from.
        progress: show progress bars (default: on terminals).
        settings: the fields of the lerobot config, as flags.
        fps: output frame rate (default: the dataset's); rewards are summed over the steps an output step spans.
        min_motion: drop clips below this motion score as static (default 0: robot data keeps still moments).
    """
    cfg = _pipeline_config("data_lerobot", preset, config, shard_mb, settings, overrides)
    info = run_pipeline(cfg.source(data), cfg.pipeline(), out, stages, show_progress=progress)
    _report(info, out, stages)


def _pipeline_config(kind: str, preset: str, config: str | None, shard_mb: int | None, settings: dict[str, Any],
                     overrides: tuple[str, ...]) -> Any:
    """The data verbs' config: ``--shard-mb`` is the pipeline's ``shard_bytes`` in megabytes."""
    flags = {**settings, **({"shard_bytes": shard_mb << 20} if shard_mb is not None else {})}
    return load_config(kind, preset_name=preset, yaml_path=config, flags=flags, overrides=overrides)
