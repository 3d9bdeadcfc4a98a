"""End-to-end generation speed: action in, RGB frame out, split into dynamics time and decoder time.

    python eval/benchmarks/bench_generation.py                                   # tiny and small, batch 1 and 64
    python eval/benchmarks/bench_generation.py --presets tiny --batches 1 --frames 4 --repeats 1   # seconds
    python eval/benchmarks/bench_generation.py --device cuda --presets small --resolution 256 --batches 1

Protocol. Each preset builds a world model from the presets of the same name (``tokenizer``, ``dynamics``,
``decoder``) with random weights (speed does not depend on the weights) and a continuous 1-D action. A
:class:`~wm_video.world_model_env.WorldModelEnv` is reset on ``--context`` random frames, then stepped
``--frames`` times; each step takes an action and returns the next frame rendered by the diffusion decoder at
``--num-inference-steps``. The two halves are timed separately on the same rollout (synchronising the device
after each): ``dynamics`` = the KV-cached MaskGIT step (``--maskgit-steps`` passes) that turns the action into the
next frame's tokens, reward and termination; ``decoder`` = the render of those tokens. Per-frame latency
(dynamics + decoder of one step) is reported at p50 and p99 over all timed steps; frames/s counts frames of every
batch row. The first step of each rollout is a warm-up and not timed; ``--repeats`` rollouts are timed.
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np
import torch


def build(preset: str, resolution: int | None) -> object:
    import dataclasses

    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config
    from wm_video.models.decoder.model import DiffusionDecoder
    from wm_video.models.dynamics.model import DynamicsModel
    from wm_video.models.tokenizer.model import VQTokenizer
    from wm_video.world_model import WorldModel

    tcfg = load_config("tokenizer", preset_name=preset)
    if resolution:
        tcfg = dataclasses.replace(tcfg, resolution=resolution)
    tok = VQTokenizer(tcfg)
    grid = tcfg.resolution // tcfg.downsample
    dcfg = dataclasses.replace(load_config("dynamics", preset_name=preset), vocab_size=tok.vocab_size, token_h=grid,
                               token_w=grid, action_type="continuous", action_dim=1)
    dec = DiffusionDecoder.from_tokenizer(tok, load_config("decoder", preset_name=preset))
    return WorldModel(tok, DynamicsModel(dcfg), dec)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


@torch.no_grad()
def bench(model: object, batch: int, args: argparse.Namespace) -> dict:
    from wm_video.world_model import RenderSettings
    from wm_video.world_model_env import WorldModelEnv

    res = model.resolution
    gen = torch.Generator(device=args.device).manual_seed(0)
    dyn_t, dec_t = [], []
    render = RenderSettings(num_inference_steps=args.num_inference_steps)
    for _ in range(args.repeats):
        env = WorldModelEnv(model, maskgit_steps=args.maskgit_steps, temperature=1.0, render=False, generator=gen)
        ctx = torch.randint(0, 256, (batch, args.context, 3, res, res), dtype=torch.uint8, device=args.device)
        env.reset(ctx)
        prev = None
        for i in range(args.frames + 1):
            actions = torch.rand(batch, 1, device=args.device) * 4 - 2
            sync(args.device)
            t0 = time.perf_counter()
            out = env.step(actions)
            sync(args.device)
            t1 = time.perf_counter()
            prev = model.decode(out.tokens[:, None], prev, render=render, generator=gen)[:, 0]
            sync(args.device)
            t2 = time.perf_counter()
            if i:  # the first step warms up
                dyn_t.append(t1 - t0)
                dec_t.append(t2 - t1)
    dyn, dec = np.array(dyn_t), np.array(dec_t)
    total = dyn + dec
    return {"batch": batch, "steps_timed": len(total),
            "dynamics_ms_per_step": round(1e3 * dyn.mean(), 2), "decoder_ms_per_step": round(1e3 * dec.mean(), 2),
            "dynamics_share": round(float(dyn.sum() / total.sum()), 3),
            "frames_per_s": round(batch / total.mean(), 1), "dynamics_frames_per_s": round(batch / dyn.mean(), 1),
            "decoder_frames_per_s": round(batch / dec.mean(), 1),
            "latency_ms_p50": round(1e3 * float(np.percentile(total, 50)), 2),
            "latency_ms_p99": round(1e3 * float(np.percentile(total, 99)), 2)}


def main() -> None:
    from wm_video.utils.machine import machine_record

    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--presets", nargs="+", default=["tiny", "small"])
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 64])
    ap.add_argument("--resolution", type=int, default=None, help="frame size (default: the tokenizer preset's)")
    ap.add_argument("--context", type=int, default=4, help="context frames")
    ap.add_argument("--frames", type=int, default=8, help="timed frames per rollout")
    ap.add_argument("--repeats", type=int, default=2, help="timed rollouts per row")
    ap.add_argument("--maskgit-steps", type=int, default=8)
    ap.add_argument("--num-inference-steps", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    rows = []
    for preset in args.presets:
        model = build(preset, args.resolution).to(args.device)
        params = {k: sum(p.numel() for p in getattr(model, k).parameters()) for k in ("tokenizer", "dynamics",
                                                                                     "decoder")}
        for b in args.batches:
            row = {"preset": preset, "resolution": model.resolution, "params_m": {k: round(v / 1e6, 2)
                                                                                  for k, v in params.items()},
                   **bench(model, b, args)}
            rows.append(row)
            print(json.dumps(row), flush=True)
    machine = machine_record(device=args.device)
    result = {"protocol": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows, "machine": machine,
              "date": machine["date"]}
    print("\n| preset | batch | dynamics ms/step | decoder ms/step | dynamics share | frames/s | p50 ms | p99 ms |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['preset']} | {r['batch']} | {r['dynamics_ms_per_step']} | {r['decoder_ms_per_step']} | "
              f"{r['dynamics_share']:.0%} | {r['frames_per_s']} | {r['latency_ms_p50']} | {r['latency_ms_p99']} |")
    if args.out:
        from wm_video.utils.atomic import atomic_write_json

        atomic_write_json(args.out, result)


if __name__ == "__main__":
    main()
