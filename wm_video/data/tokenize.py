"""Turn an episode-clip dataset into token shards with a trained tokenizer: same clips, same order, same
actions, rewards, terminations, metadata and held-out episodes, frames replaced by tokens ``(t, h', w')`` stored
in the smallest unsigned type that holds the vocabulary. Each source shard becomes one token shard of the same
name, written atomically, so a rerun skips finished shards and an interrupted run loses at most the shard in
progress.

Before tokenizing, the tokenizer's reconstruction PSNR on the first frames is measured and set beside its own
held-out figure (:mod:`wm_video.data.tokenizer_fit`): far below means a tokenizer from another domain, warned about
before the long job starts, and recorded in the token dataset's ``dataset.json`` (``tokens.fit``).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.schema import Clip, DatasetInfo
from wm_video.data.tokenizer_fit import check_fit, measure_fit
from wm_video.data.writer import ShardWriter, ensure_writable_dir, finalize_dataset, read_sidecar
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils import progress
from wm_video.utils.atomic import clean_stale_temporaries

log = logging.getLogger(__name__)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned integer type that holds ids ``0 .. vocab_size - 1``."""
    for dtype in (np.uint8, np.uint16, np.uint32):
        if vocab_size <= np.iinfo(dtype).max + 1:
            return np.dtype(dtype)
    raise ValueError(f"vocabulary of {vocab_size} does not fit in uint32")


def _resolve_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def _flush(model: Any, pending: list[Clip], writer: ShardWriter, dtype: np.dtype, device: torch.device) -> None:
    frames = torch.from_numpy(np.stack([c.frames for c in pending])).to(device)  # (b, t, h, w, 3) uint8
    x = to_model_frames(frames.permute(0, 1, 4, 2, 3))
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        tokens = model.tokenize(x).cpu().numpy().astype(dtype)  # (b, t, h', w')
    for clip, tok in zip(pending, tokens, strict=True):
        writer.write(Clip(tok, clip.meta, clip.actions, clip.rewards, clip.terminations))
    pending.clear()


@torch.no_grad()
def tokenize_dataset(tokenizer: str | Path, src: str | Path, out: str | Path, batch_frames: int = 256,
                     device: str = "auto", show_progress: bool | None = None) -> DatasetInfo:
    """Tokenize every clip of the dataset at ``src`` into token shards in ``out``; returns the new info."""
    info = load_dataset_info(src)
    model = VQTokenizer.from_pretrained(tokenizer).eval()
    res = model.config.resolution
    if info.frame_storage == "tokens":
        raise ValueError(f"{src} already holds tokens")
    if info.resolution != [res, res]:
        raise ValueError(f"{src}: frames are {info.resolution[0]}x{info.resolution[1]}, the tokenizer at "
                         f"{tokenizer} takes {res}x{res}")
    dev = _resolve_device(device)
    model.to(dev)
    fit = check_fit(*measure_fit(model, src, info), tokenizer, str(src))
    dtype = token_dtype(model.vocab_size)
    out = ensure_writable_dir(out)
    srcs = shard_paths(src, info)
    todo = [u for u in srcs if read_sidecar(out / Path(u).name) is None]
    clean_stale_temporaries(out, names=[Path(u).name for u in todo])  # left by a killed run, for shards redone now
    clips_per_batch = max(1, batch_frames // info.clip_len)
    done = sum(s.samples for s, u in zip(info.shards, srcs, strict=True) if u not in todo)
    bar = progress(total=info.num_samples, initial=done, desc="tokenize", unit="clip", enable=show_progress)
    for url in todo:
        with ShardWriter(out / Path(url).name, info.action_space, "tokens", info.fps) as writer:
            pending: list[Clip] = []
            for clip in iter_clips(url, info.action_space):
                pending.append(clip)
                if len(pending) == clips_per_batch:
                    bar.update(len(pending))
                    _flush(model, pending, writer, dtype, dev)
            if pending:
                bar.update(len(pending))
                _flush(model, pending, writer, dtype, dev)
            writer.close()
    bar.close()
    grid = res // model.config.downsample
    tokens = {"vocab_size": model.vocab_size, "dtype": dtype.name, "tokenizer": str(tokenizer),
              "token_fingerprint": model.token_fingerprint(),  # kept by a fine-tune with the codebook frozen
              "frame_resolution": info.resolution, "tokens_per_frame": grid * grid, "fit": fit}
    # The source's held-out episodes, so dynamics validates on the clips the tokenizer held out; a source written
    # before splits were recorded keeps the old rule here too (same shards: the same clips).
    held = info.heldout
    return finalize_dataset(out, [out / Path(u).name for u in srcs], resolution=[grid, grid], fps=info.fps,
                            clip_len=info.clip_len, storage="tokens", action_space=info.action_space,
                            source={**info.source, "tokenized_from": str(src)}, tokens=tokens,
                            val_fraction=held.val_fraction if held else None, heldout=held.episodes if held else None)
