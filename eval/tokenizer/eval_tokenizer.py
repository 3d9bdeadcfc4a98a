"""Held-out reconstruction quality of a tokenizer export: PSNR, SSIM, codebook usage, perplexity, bits per frame.

    python eval/tokenizer/eval_tokenizer.py --tokenizer runs/tok_breakout/export --data data/breakout \
        --out runs/tok_breakout/eval.json

Protocol (recorded in the output): the held-out clips are those training held out (``--val-fraction``;
default: the split ``dataset.json`` records); every frame of every held-out clip is tokenized and decoded with the VQ
decoder; PSNR and SSIM (torchmetrics, Gaussian window 11, data range 2 in [-1, 1]) are averaged over frames;
codebook usage is the share of the vocabulary used at least once over all held-out frames; perplexity is
exp(entropy) of that code histogram; bits per frame = tokens per frame * log2(vocabulary).
``psnr_moving_db`` is the PSNR over the pixels that change between consecutive frames of a clip (any channel
by more than 8/255): small moving objects (a ball, a puck) barely move the whole-frame PSNR but dominate this
one, and they are what a dynamics model has to predict. ``token_change_rate`` is the share of tokens that
differ from the same position in the previous frame: against ``moving_pixel_fraction`` it shows how stable
the tokens of unchanged regions are (tokens that flip while the pixels stay put are noise the dynamics model
has to predict).
"""

from __future__ import annotations

import argparse
import math
import time

import torch
from torchmetrics.functional.image import structural_similarity_index_measure as ssim

from wm_video.data.loader import heldout_loader
from wm_video.data.split import VAL_FRACTION_HELP
from wm_video.models.tokenizer import VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils import emit_json
from wm_video.utils.machine import machine_record


@torch.no_grad()
def evaluate(tokenizer: str, data: str, val_fraction: float | None = None, batch_size: int = 8,
             max_clips: int | None = None) -> dict:
    model = VQTokenizer.from_pretrained(tokenizer).eval()
    loader, split = heldout_loader(data, val_fraction, batch_size)
    counts = torch.zeros(model.vocab_size)
    psnrs, ssims, frames, clips, t0 = [], [], 0, 0, time.perf_counter()
    moving_se, moving_px, token_changes, token_pairs = 0.0, 0, 0, 0
    for batch in loader:
        x = to_model_frames(batch["frames"])  # (b, t, c, h, w) in [-1, 1]
        tokens = model.tokenize(x)
        recon = model.detokenize(tokens).clamp(-1, 1)
        counts += torch.bincount(tokens.flatten(), minlength=model.vocab_size).float()
        xf, rf = x.flatten(0, 1), recon.flatten(0, 1)
        mse = ((xf - rf) ** 2).flatten(1).mean(1)
        psnrs.append(10 * torch.log10(4.0 / mse.clamp(min=1e-10)))
        ssims.append(ssim(rf, xf, data_range=2.0, reduction="none"))
        moving = ((x[:, 1:] - x[:, :-1]).abs() > 16 / 255).any(2, keepdim=True).expand_as(x[:, 1:])
        moving_se += float(((x[:, 1:] - recon[:, 1:]) ** 2)[moving].sum())
        moving_px += int(moving.sum())
        token_changes += int((tokens[:, 1:] != tokens[:, :-1]).sum())
        token_pairs += tokens[:, 1:].numel()
        frames += len(xf)
        clips += len(x)
        if max_clips and clips >= max_clips:
            break
    p = counts / counts.sum()
    grid = tokens.shape[-2] * tokens.shape[-1]
    return {
        "tokenizer": str(tokenizer), "data": str(data), "heldout_shards": len(split.heldout.shards),
        "split": split.rule, "frames": frames,
        "psnr_db": float(torch.cat(psnrs).mean()), "ssim": float(torch.cat(ssims).mean()),
        "psnr_moving_db": 10 * math.log10(4.0 / max(moving_se / max(moving_px, 1), 1e-10)),
        "moving_pixel_fraction": moving_px / max(sum(len(v) for v in psnrs) * x[0, 0].numel(), 1),
        "token_change_rate": token_changes / max(token_pairs, 1),
        "codebook_usage": float((counts > 0).float().mean()),
        "perplexity": float(torch.exp(-(p * torch.log(p.clamp(min=1e-12))).sum())),
        "tokens_per_frame": grid, "vocab_size": model.vocab_size,
        "bits_per_frame": grid * math.log2(model.vocab_size),
        "seconds": round(time.perf_counter() - t0, 1),
        "protocol": {"script": "eval/tokenizer/eval_tokenizer.py", "val_fraction": val_fraction,
                     "ssim": "torchmetrics gaussian 11x11, data_range 2", "psnr": "per frame, peak-to-peak 2",
                     **machine_record()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tokenizer", required=True, help="export folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="dataset folder")
    parser.add_argument("--val-fraction", type=float, default=None, help=VAL_FRACTION_HELP)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()
    result = evaluate(args.tokenizer, args.data, args.val_fraction, max_clips=args.max_clips)
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
