"""Summarise an episode-clip dataset and draw a contact sheet (PNG) or an animated GIF of sample clips."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from wm_video.data.reader import DATASET_FILE, ClipChecks, iter_clips, load_dataset_info, shard_paths
from wm_video.data.schema import Clip, DatasetInfo
from wm_video.data.split import split_dataset


def sample_clips(root: str | Path, info: DatasetInfo, num_clips: int) -> list[Clip]:
    """Up to ``num_clips`` clips spread over the shards: the first few of each shard in turn, each held to what
    ``dataset.json`` promises (frame size, clip length, value ranges)."""
    per_shard = max(1, -(-num_clips // max(len(info.shards), 1)))
    checks = ClipChecks.from_info(info, Path(root) / DATASET_FILE)
    clips: list[Clip] = []
    for url in shard_paths(root, info):
        clips += list(itertools.islice(iter_clips(url, info.action_space, checks), per_shard))
        if len(clips) >= num_clips:
            break
    return clips[:num_clips]


def _fmt_action(clip: Clip, i: int) -> str:
    if clip.actions is None:
        return ""
    a = clip.actions[i]
    return f"a={int(a)}" if np.ndim(a) == 0 else "a=" + ",".join(f"{x:+.1f}" for x in np.atleast_1d(a)[:3])


def contact_sheet(clips: list[Clip], frames_per_clip: int = 8, scale: int = 2) -> Any:
    """A PIL image: one row per clip (label: episode and start), ``frames_per_clip`` frames evenly spaced,
    each captioned with its action and reward; terminal frames get a red border."""
    if not clips:
        raise ValueError("no clips to draw")
    t, h, w, _ = clips[0].frames.shape
    cols = np.linspace(0, t - 1, min(frames_per_clip, t)).round().astype(int)
    fh, fw, cap, label = h * scale, w * scale, 12, 14
    sheet = Image.new("RGB", (len(cols) * (fw + 2) + 2, len(clips) * (fh + cap + label + 2) + 2), (24, 24, 24))
    draw = ImageDraw.Draw(sheet)
    for r, clip in enumerate(clips):
        y = 2 + r * (fh + cap + label + 2)
        total = float(clip.rewards.sum()) if clip.rewards is not None else 0.0
        draw.text((3, y), f"{clip.meta.episode_id} @ {clip.meta.clip_start}  return={total:+.2f}", fill=(230, 230, 230))
        for c, i in enumerate(cols):
            x = 2 + c * (fw + 2)
            img = Image.fromarray(clip.frames[i]).resize((fw, fh), Image.NEAREST)
            sheet.paste(img, (x, y + label))
            if clip.terminations is not None and clip.terminations[i]:
                draw.rectangle([x, y + label, x + fw - 1, y + label + fh - 1], outline=(255, 40, 40), width=2)
            reward = f" r={clip.rewards[i]:+.1f}" if clip.rewards is not None and clip.rewards[i] else ""
            draw.text((x + 1, y + label + fh), f"{i}:{_fmt_action(clip, i)}{reward}"[: fw // 6], fill=(180, 180, 180))
    return sheet


def write_gif(clips: list[Clip], path: str | Path, fps: float, scale: int = 2) -> None:
    """Clips side by side, played together as an animated GIF."""
    t = min(len(c.frames) for c in clips)
    row = np.concatenate([c.frames[:t] for c in clips], axis=2)  # (t, h, n*w, 3)
    frames = [Image.fromarray(f).resize((f.shape[1] * scale, f.shape[0] * scale), Image.NEAREST) for f in row]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=int(1000 / max(fps, 1)), loop=0)


def summarize(info: DatasetInfo) -> dict[str, Any]:
    """Counts and statistics from ``dataset.json`` (no shard is read)."""
    space = info.action_space
    return {
        "samples": info.num_samples,
        "episodes": info.num_episodes,
        "shards": len(info.shards),
        "frames": info.stats.get("frames"),
        "resolution": info.resolution,
        "fps": info.fps,
        "clip_len": info.clip_len,
        "frame_storage": info.frame_storage,
        "action_space": space.to_dict(),
        "actions": info.stats.get("actions"),
        "rewards": info.stats.get("rewards"),
        "terminations": info.stats.get("terminations"),
        "episode_stats": info.stats.get("episodes"),
        "source": info.source,
    }


def format_summary(s: dict[str, Any]) -> str:
    lines = [
        f"samples {s['samples']}  episodes {s['episodes']}  shards {s['shards']}  frames {s['frames']}",
        f"resolution {s['resolution'][0]}x{s['resolution'][1]}  fps {s['fps']:g}  clip_len {s['clip_len']}  "
        f"storage {s['frame_storage']}",
        f"action space {s['action_space']}",
        f"source {s['source']}",
    ]
    acts = s.get("actions") or {}
    if "freq" in acts:
        lines.append("action freq " + " ".join(f"{i}:{f:.2f}" for i, f in enumerate(acts["freq"])))
    elif "mean" in acts:
        lines.append("action mean " + " ".join(f"{x:+.3f}" for x in acts["mean"]))
        lines.append("action std  " + " ".join(f"{x:.3f}" for x in acts["std"]))
    rew = s.get("rewards") or {}
    if rew.get("count"):
        lines.append(f"reward mean {rew['mean'][0]:+.4f}  std {rew['std'][0]:.4f}  min {rew['min'][0]:+.3f}  "
                     f"max {rew['max'][0]:+.3f}  (over {rew['count']} steps)")
    lines.append(f"terminations {s['terminations']}")
    if s.get("held_out"):
        lines.append(f"held out: {s['held_out']}")
    eps = s.get("episode_stats")
    if eps:
        success = f"  success rate {eps['success_rate']:.0%}" if eps.get("success_rate") is not None else ""
        lines.append(f"episode return {eps['return_mean']:+.2f} +- {eps['return_std']:.2f}  "
                     f"length {eps['length_mean']:.0f}{success}")
    return "\n".join(lines)


def inspect_dataset(root: str | Path, sheet: str | Path | None = None, gif: str | Path | None = None,
                    num_clips: int = 8, frames_per_clip: int = 8) -> dict[str, Any]:
    """Summary of the dataset at ``root``; writes the contact sheet and GIF when paths are given."""
    info = load_dataset_info(root)
    summary = summarize(info)
    split = split_dataset(root, info=info)
    summary["held_out"] = split.rule + (f" -- NOTHING HELD OUT: {split.problem}" if split.problem else "")
    if sheet or gif:
        clips = sample_clips(root, info, num_clips)
        if sheet:
            contact_sheet(clips, frames_per_clip).save(sheet)
            summary["contact_sheet"] = str(sheet)
        if gif:
            write_gif(clips[: min(len(clips), 4)], gif, info.fps)
            summary["gif"] = str(gif)
    return summary
