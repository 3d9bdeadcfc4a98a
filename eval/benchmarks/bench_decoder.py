"""Render throughput of the diffusion decoder: frames/s at 1, 2 and 4 steps, batch 1 and 64, 64x64 and 256x256.

    python eval/benchmarks/bench_decoder.py --out docs/results/bench_decoder_cpu.json

Decoders are the ``small`` preset built on the ``small`` tokenizer (random weights: speed does not depend on
them); at 256x256 the same widths with a 32x32 token grid. Each row times ``render`` end to end (conditioning,
which runs the copied VQ decoder once per frame, plus one UNet call per step) after a warm-up call, and
reports the VQ decoder alone on the same tokens beside it. On CUDA, timings synchronise and use bf16 autocast
when ``--bf16`` is given.
"""

from __future__ import annotations

import argparse
import time
from functools import partial

import torch

from wm_video.models.decoder import DiffusionDecoder
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.presets import decoder_small, tokenizer_small
from wm_video.utils import emit_json
from wm_video.utils.machine import machine_record


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median seconds of ``fn()`` over ``repeats`` runs after one warm-up."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


@torch.no_grad()
def bench(resolutions: list[int], batches: list[int], steps: list[int], device: str, bf16: bool,
          repeats: int) -> dict:
    dev = torch.device(device)
    rows = []
    for res in resolutions:
        tcfg = tokenizer_small()
        tcfg.resolution = res
        tok = VQTokenizer(tcfg).to(dev).eval()
        dec = DiffusionDecoder.from_tokenizer(tok, decoder_small()).to(dev).eval()
        grid = tcfg.token_grid
        for b in batches:
            tokens = torch.randint(0, tok.vocab_size, (b, 1, grid, grid), device=dev)
            ctx = torch.autocast(dev.type, torch.bfloat16) if bf16 else torch.autocast(dev.type, enabled=False)
            with ctx:
                vq = timed(partial(tok.detokenize, tokens), dev, repeats)
                cond = timed(partial(dec.conditioning, tokens.flatten(0, 1)), dev, repeats)
                for s in steps:
                    sec = timed(partial(dec.render, tokens, num_inference_steps=s), dev, repeats)
                    rows.append({"resolution": res, "batch": b, "steps": s, "frames_per_s": b / sec,
                                 "ms_per_batch": 1000 * sec, "conditioning_ms": 1000 * cond,
                                 "vq_decoder_frames_per_s": b / vq})
                    print(rows[-1], flush=True)
    return {"rows": rows, "decoder_params_m": sum(p.numel() for p in dec.parameters()) / 1e6,
            "unet_params_m": sum(p.numel() for p in dec.network.unet.parameters()) / 1e6,
            "protocol": {"script": "eval/benchmarks/bench_decoder.py", "bf16": bf16, "repeats": repeats,
                         **machine_record(device=device),
                         "model": "small decoder preset on the small tokenizer, sampler euler"}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--resolutions", type=int, nargs="+", default=[64, 256])
    p.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    p.add_argument("--steps", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--bf16", action="store_true", help="bf16 autocast (GPU)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--out", default=None, help="also write the JSON here")
    a = p.parse_args()
    emit_json(bench(a.resolutions, a.batches, a.steps, a.device, a.bf16, a.repeats), a.out)


if __name__ == "__main__":
    main()
