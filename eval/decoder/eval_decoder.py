"""Held-out rendering quality of a diffusion decoder against the VQ decoder on the same tokens.

    python eval/decoder/eval_decoder.py --decoder runs/dec_breakout/export --tokenizer runs/tok_breakout/export \
        --data data/breakout --steps 1 2 4 8 25 --out runs/dec_breakout/eval.json

Protocol (recorded in the output): the held-out shards are the last-shards split training used
(``--val-fraction``); every frame of the first ``--max-clips`` held-out clips is tokenized by the tokenizer
and rendered by its VQ decoder and by the diffusion decoder at each step count (sampler ``--sampler``, initial
noise seeded by ``--seed``; frames rendered as first frames, i.e. without the previous-frame condition when the
decoder has one, unless ``--prev-frame`` asks for sequential rendering). Per method: PSNR and SSIM
(torchmetrics, Gaussian 11x11, data range 2 in [-1, 1]) averaged over frames; ``hf_ratio``, the high-frequency
energy of the output over that of the ground truth (sum over frames of the squared 3x3 Laplacian response per
channel: 1 is the truth's sharpness, below 1 blurrier, above 1 noisier); and, with ``--feature-distance``,
FD-EffNetLite0, this project's Frechet distance on EfficientNet-Lite0 features (not FID; comparable only
within this project).
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from wm_video.data.loader import heldout_loader
from wm_video.data.split import VAL_FRACTION_HELP
from wm_video.models.decoder import DiffusionDecoder
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils import emit_json, progress
from wm_video.utils.machine import machine_record

LAPLACIAN = torch.tensor([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def hf_energy(x: torch.Tensor) -> torch.Tensor:
    """Per-frame high-frequency energy of ``(n, 3, h, w)``: mean squared Laplacian response."""
    k = LAPLACIAN.to(x).view(1, 1, 3, 3).expand(3, 1, 3, 3)
    return F.conv2d(x, k, groups=3).pow(2).flatten(1).mean(1)


class Scores:
    """Running PSNR / SSIM / high-frequency energy of one method against the ground truth."""

    def __init__(self) -> None:
        self.psnr, self.ssim, self.hf, self.hf_truth, self.seconds = [], [], 0.0, 0.0, 0.0

    def update(self, out: torch.Tensor, truth: torch.Tensor, seconds: float) -> None:
        mse = ((out - truth) ** 2).flatten(1).mean(1)
        self.psnr.append(10 * torch.log10(4.0 / mse.clamp(min=1e-10)))
        self.ssim.append(ssim(out, truth, data_range=2.0, reduction="none"))
        self.hf += float(hf_energy(out).sum())
        self.hf_truth += float(hf_energy(truth).sum())
        self.seconds += seconds

    def result(self, frames: int) -> dict:
        return {"psnr_db": float(torch.cat(self.psnr).mean()), "ssim": float(torch.cat(self.ssim).mean()),
                "hf_ratio": self.hf / max(self.hf_truth, 1e-12), "frames_per_s": frames / max(self.seconds, 1e-9)}


def write_grid(path: str, rows: list[torch.Tensor], scale: int = 3) -> None:
    """Rows of frames ``(n, 3, h, w)`` in [-1, 1] as one PNG, upscaled for viewing."""
    import numpy as np
    from PIL import Image

    from wm_video.training.decoder_module import sample_grid

    img = (sample_grid(rows) * 255).round().byte().permute(1, 2, 0).numpy()
    Image.fromarray(np.kron(img, np.ones((scale, scale, 1), np.uint8))).save(path)


@torch.no_grad()
def evaluate(decoder: str, tokenizer: str, data: str, steps: list[int], sampler: str | None = None,
             val_fraction: float | None = None, max_clips: int = 32, batch_size: int = 8, seed: int = 0,
             prev_frame: bool = False, feature_distance: bool = False, feature_weights: str | None = None,
             grid: str | None = None) -> dict:
    dec = DiffusionDecoder.from_pretrained(decoder).eval()
    tok = VQTokenizer.from_pretrained(tokenizer).eval()
    dec.check_tokenizer(tok, tokenizer)
    loader, split = heldout_loader(data, val_fraction, batch_size)
    methods = ["vq_decoder", *(f"diffusion_{s}_steps" for s in steps)]
    scores = {m: Scores() for m in methods}
    fd = None
    if feature_distance:
        from wm_video.metrics.feature_distance import FeatureDistance, load_feature_network

        net = load_feature_network(feature_weights)
        fd = {m: FeatureDistance(net) for m in methods}
    frames = clips = 0
    t_start = time.perf_counter()
    bar = progress(total=max_clips, desc="clips", unit="clip")
    for batch in loader:
        x = to_model_frames(batch["frames"])[: max_clips - clips]  # (b, t, c, h, w)
        tokens = tok.tokenize(x)
        truth = x.flatten(0, 1)
        t0 = time.perf_counter()
        outs = {"vq_decoder": tok.detokenize(tokens).clamp(-1, 1)}
        secs = {"vq_decoder": time.perf_counter() - t0}
        for s in steps:
            gen = torch.Generator().manual_seed(seed + clips)
            t0 = time.perf_counter()
            if prev_frame and dec.config.prev_frame:
                out = dec.render(tokens, num_inference_steps=s, sampler=sampler, generator=gen)
            else:  # every frame as a first frame: the tokens are the only condition
                out = dec.render(tokens.flatten(0, 1)[:, None], num_inference_steps=s, sampler=sampler,
                                 generator=gen).view_as(x)
            secs[f"diffusion_{s}_steps"] = time.perf_counter() - t0
            outs[f"diffusion_{s}_steps"] = out
        if grid and clips == 0:  # rows: truth, VQ decoder, then each step count; 8 frames of different clips
            pick = lambda v: v[:, -1]  # noqa: E731  (the last frame of each clip)
            write_grid(grid, [pick(x)] + [pick(outs[m]) for m in methods])
        real_feats = None if fd is None else fd[methods[0]].features(truth)  # once per batch, shared by all
        for m in methods:
            out = outs[m].flatten(0, 1)
            scores[m].update(out, truth, secs[m])
            if fd is not None:
                fd[m].real.add(real_feats)
                fd[m].update(fake=out)
        frames += len(truth)
        clips += len(x)
        bar.update(len(x))
        if clips >= max_clips:
            break
    bar.close()
    results = {m: scores[m].result(frames) for m in methods}
    if fd is not None:
        for m in methods:
            results[m]["fd_effnetlite0"] = float(fd[m].compute())
    return {
        "decoder": str(decoder), "tokenizer": str(tokenizer), "data": str(data),
        "heldout_shards": len(split.heldout.shards), "split": split.rule,
        "clips": clips, "frames": frames, "sampler": sampler or dec.config.sampler, "results": results,
        "seconds": round(time.perf_counter() - t_start, 1),
        "protocol": {"script": "eval/decoder/eval_decoder.py", "val_fraction": val_fraction, "max_clips": max_clips,
                     "seed": seed, "prev_frame": bool(prev_frame and dec.config.prev_frame),
                     "ssim": "torchmetrics gaussian 11x11, data_range 2", "psnr": "per frame, peak-to-peak 2",
                     "hf_ratio": "sum of squared 3x3 Laplacian, output over truth",
                     **machine_record()},
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--decoder", required=True, help="diffusion decoder export folder")
    p.add_argument("--tokenizer", required=True, help="the tokenizer export the decoder was trained with")
    p.add_argument("--data", required=True, help="frame-shard dataset folder (the held-out split is used)")
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4, 8, 25], help="sampling step counts")
    p.add_argument("--sampler", choices=["euler", "dpmsolver"], default=None, help="default: the decoder's own")
    p.add_argument("--val-fraction", type=float, default=None, help=VAL_FRACTION_HELP)
    p.add_argument("--max-clips", type=int, default=32)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--prev-frame", action="store_true", help="render clips sequentially on the previous render")
    p.add_argument("--feature-distance", action="store_true", help="also FD-EffNetLite0 (needs its weights)")
    p.add_argument("--feature-weights", default=None, help="local EfficientNet-Lite0 weights (default: package)")
    p.add_argument("--grid", default=None, help="write a PNG: truth, VQ decoder and each step count, in rows")
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args()
    emit_json(evaluate(a.decoder, a.tokenizer, a.data, a.steps, a.sampler, a.val_fraction, a.max_clips, a.batch_size,
                       a.seed, a.prev_frame, a.feature_distance, a.feature_weights, a.grid), a.out)


if __name__ == "__main__":
    main()
