"""The fidelity suite's tokenizer-ceiling row for a tokenizer export alone, without training a dynamics model: the
true tokens of each held-out clip's 8 frames after 4 context frames, drawn as a rollout draws them (VQ decoder, still
patches kept for a patch-local tokenizer, and a decoder that reads the previous frame reading the frame drawn before,
from the last context frame on). Scores per horizon: PSNR on whole frames and on the pixels that move (pooled, as
``wm-video eval``), plus, for a decoder that reads the previous frame, the same with every frame decoded from the
true previous frame (teacher-forced: how much the chained drawing drifts).

    python eval/fidelity/experiments/tokenizer_ceiling.py --tokenizer runs/exp/tok/export \\
        --data runs/fidelity/ALE_Boxing-v5/data --out runs/exp/tok/ceiling.json

Tokenizer experiments (docs/fidelity.md, E22) compare here first, at a tenth of a suite run's CPU.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from wm_video.data.loader import heldout_loader
from wm_video.data.tokenizer_fit import frame_psnr
from wm_video.metrics.moving import MovingScores
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils.atomic import atomic_write_json
from wm_video.utils.machine import machine_record
from wm_video.world_model import vq_render


@torch.no_grad()
def ceiling(tokenizer: str, data: str, context: int = 4, horizon: int = 8, max_clips: int = 64,
            batch_size: int = 16) -> dict:
    tok = VQTokenizer.from_pretrained(tokenizer).eval()
    keep = tok.patch_local  # as WorldModel.keeps_still_patches, with the VQ decoder
    rows = {"chained": [MovingScores() for _ in range(horizon)]}
    if tok.reads_previous_frame:
        rows["teacher_forced"] = [MovingScores() for _ in range(horizon)]
    psnr: dict[str, list[list[torch.Tensor]]] = {k: [[] for _ in range(horizon)] for k in rows}
    loader, _ = heldout_loader(data, None, batch_size)
    clips = 0
    for batch in loader:
        if batch["frames"].shape[1] < context + horizon:
            continue
        x = to_model_frames(batch["frames"][: max_clips - clips, : context + horizon])
        tokens = tok.tokenize(x)
        drawn = {"chained": vq_render(tok, tokens[:, context:], x[:, context - 1], tokens[:, context - 1], keep)}
        if "teacher_forced" in rows:
            drawn["teacher_forced"] = torch.cat([
                vq_render(tok, tokens[:, i: i + 1], x[:, i - 1], tokens[:, i - 1], keep)
                for i in range(context, context + horizon)], 1)
        for name, frames in drawn.items():
            for i in range(horizon):
                truth, prev = x[:, context + i], x[:, context + i - 1]
                rows[name][i].add_pixels(frames[:, i], truth, prev)
                psnr[name][i].append(frame_psnr(truth[:, None], frames[:, i: i + 1]).flatten())
        clips += len(x)
        if clips >= max_clips:
            break
    out = {"tokenizer": tokenizer, "data": data, "clips": clips, "context": context, "keep_still_patches": keep,
           "reads_previous_frame": tok.reads_previous_frame, **machine_record()}
    for name in rows:
        out[name] = {"psnr_db": [float(torch.cat(p).mean()) for p in psnr[name]],
                     "moving_psnr_db": [s.psnr_db for s in rows[name]]}
        out[name]["mean_psnr_db"] = sum(out[name]["psnr_db"]) / horizon
        out[name]["mean_moving_psnr_db"] = sum(out[name]["moving_psnr_db"]) / horizon
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tokenizer", required=True, help="tokenizer export folder")
    p.add_argument("--data", required=True, help="frame dataset (its held-out clips are scored)")
    p.add_argument("--out", help="write the report here as JSON (default: print only)")
    p.add_argument("--max-clips", type=int, default=64, help="held-out clips scored (the suite's 64)")
    a = p.parse_args()
    report = ceiling(a.tokenizer, a.data, max_clips=a.max_clips)
    for name in ("chained", "teacher_forced"):
        if name in report:
            r = report[name]
            print(f"{name:15s} PSNR mean {r['mean_psnr_db']:.2f}  moving pixels mean {r['mean_moving_psnr_db']:.2f}  "
                  f"h=1 {r['psnr_db'][0]:.2f} / {r['moving_psnr_db'][0]:.2f}  "
                  f"h=8 {r['psnr_db'][-1]:.2f} / {r['moving_psnr_db'][-1]:.2f}")
    if a.out:
        atomic_write_json(Path(a.out), report)
        print(f"wrote {a.out}")


if __name__ == "__main__":
    main()
