"""Does a tokenizer fit the frames at hand? Its reconstruction PSNR on a few batches of them, against the held-out
PSNR its own training recorded (``quality.json`` in its export folder, :mod:`wm_video.training.quality`).

A tokenizer trained on another domain (Atari frames, robot video tokenized with it) still turns every frame into
valid token ids, so tokenizing, dynamics training and fine-tuning all run; only the pictures are wrong. Measured
here, that shows as a PSNR far below the tokenizer's own held-out figure, and is logged as a warning starting with
``QUALITY GATE FAILED:``. ``wm-video data tokenize`` measures it before tokenizing and records it in the token
dataset's ``dataset.json`` (``tokens.fit``); a dynamics fine-tune reports that record when it starts (or measures
it, when the token dataset predates the record and its frames and tokenizer are still on disk).

PSNR is per frame, peak-to-peak 2 in [-1, 1] (255 grey levels), averaged over frames: the convention of
``eval/tokenizer/eval_tokenizer.py`` and of the tokenizer's quality gate.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch

from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.schema import DatasetInfo
from wm_video.models.export import read_quality
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames

log = logging.getLogger(__name__)

GATE_PREFIX = "QUALITY GATE FAILED:"  # every gate warning starts with it: one string to grep logs for
MAX_PSNR_DROP_DB = 5.0  # a tokenizer this far below its own held-out PSNR is taken for one from another domain
CHECK_FRAMES = 256  # frames measured: a few batches, seconds on a CPU for the small presets


def frame_psnr(frames: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-frame PSNR in dB of ``(..., 3, h, w)`` frames in [-1, 1] (peak-to-peak 2): ``(n,)`` over the leading
    dimensions flattened."""
    err = (frames.float() - recon.float().clamp(-1, 1)).pow(2).flatten(-3).mean(-1).flatten()  # (n,)
    return 10 * torch.log10(4.0 / err.clamp(min=1e-10))


@torch.no_grad()
def measure_fit(model: Any, src: str | Path, info: DatasetInfo | None = None, max_frames: int = CHECK_FRAMES,
                batch_frames: int = 64) -> tuple[float, int]:
    """``(mean PSNR in dB, frames)`` of the tokenizer ``model`` (where it is) on the first ``max_frames`` frames of
    the frame dataset ``src``, in shard order."""
    info = info or load_dataset_info(src)
    device = next(model.parameters()).device
    psnrs: list[torch.Tensor] = []
    pending: list[np.ndarray] = []
    seen = 0

    def flush() -> None:
        x = to_model_frames(torch.from_numpy(np.stack(pending)).permute(0, 3, 1, 2)[None].to(device))  # (1,n,c,h,w)
        psnrs.append(frame_psnr(x, model(x).recon).cpu())
        pending.clear()

    for url in shard_paths(src, info):
        for clip in iter_clips(url, info.action_space):
            for frame in clip.frames[: max_frames - seen]:  # (h, w, 3) uint8
                pending.append(frame)
                seen += 1
                if len(pending) == batch_frames:
                    flush()
            if seen >= max_frames:
                break
        if seen >= max_frames:
            break
    if pending:
        flush()
    if not psnrs:
        raise ValueError(f"{src}: no frames to measure the tokenizer on")
    psnr = torch.cat(psnrs)
    return float(psnr.mean()), len(psnr)


def check_fit(psnr_db: float, frames: int, tokenizer: str | Path, where: str,
              max_drop_db: float = MAX_PSNR_DROP_DB) -> dict[str, Any]:
    """Log the tokenizer's PSNR on ``where`` beside its held-out figure (its ``quality.json``), warn when it is more
    than ``max_drop_db`` below; returns the record (``psnr_db``, ``frames``, ``tokenizer_heldout_psnr_db`` (None when
    unknown), ``passed`` (None when there is nothing to compare with))."""
    quality = read_quality(tokenizer) or {}
    heldout = (quality.get("metrics") or {}).get("psnr_db")
    record: dict[str, Any] = {"psnr_db": round(psnr_db, 3), "frames": frames, "tokenizer": str(tokenizer),
                              "tokenizer_heldout_psnr_db": heldout, "max_drop_db": max_drop_db, "passed": None}
    if heldout is None:
        log.info("tokenizer %s reconstructs %s at %.2f dB PSNR (%d frames); no held-out figure to compare with (no "
                 "quality.json beside it)", tokenizer, where, psnr_db, frames)
        return record
    record["passed"] = psnr_db >= heldout - max_drop_db
    if record["passed"]:
        log.info("tokenizer %s reconstructs %s at %.2f dB PSNR (%d frames); its own held-out figure: %.2f dB",
                 tokenizer, where, psnr_db, frames, heldout)
    else:
        log.warning("%s tokenizer %s reconstructs %s at %.2f dB PSNR (%d frames), %.1f dB below its own held-out "
                    "%.2f dB (more than %g dB): it looks trained on another domain; train a tokenizer on this data "
                    "(or on a mix that includes it)", GATE_PREFIX, tokenizer, where, psnr_db, frames,
                    heldout - psnr_db, heldout, max_drop_db)
    return record


def report_token_dataset_fit(info: DatasetInfo, where: str, max_frames: int = CHECK_FRAMES) -> dict[str, Any] | None:
    """At the start of a fine-tune on the token dataset ``where``: the fit its tokenizer had on the frames it was
    made from, as ``data tokenize`` recorded it (``tokens.fit``), logged and checked again; measured now when there
    is no record but the tokenizer and the frames are still on disk; None (logged) when neither."""
    tokens = info.tokens or {}
    tokenizer, src = tokens.get("tokenizer"), (info.source or {}).get("tokenized_from")
    fit = tokens.get("fit")
    if fit and fit.get("psnr_db") is not None:
        return check_fit(float(fit["psnr_db"]), int(fit.get("frames", 0)), fit.get("tokenizer", tokenizer),
                         f"{where} (frames of {src}, measured by 'data tokenize')")
    if not (tokenizer and src and Path(tokenizer).is_dir() and Path(src, "dataset.json").is_file()):
        log.info("%s: cannot check the tokenizer against its frames (tokenizer %s, frames %s not on disk)", where,
                 tokenizer, src)
        return None
    model = VQTokenizer.from_pretrained(tokenizer).eval()
    psnr, frames = measure_fit(model, src, max_frames=max_frames)
    return check_fit(psnr, frames, tokenizer, f"{where} (frames of {src})")
