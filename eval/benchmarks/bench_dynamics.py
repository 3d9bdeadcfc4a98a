"""Dynamics transformer: training throughput and MFU per preset, rollout frames/s with and without the KV cache,
and the cost of one frame early and late in a rollout.

    python eval/benchmarks/bench_dynamics.py                                         # small preset, CPU
    python eval/benchmarks/bench_dynamics.py --device cuda --dtype bf16 --presets small base large
    python eval/benchmarks/bench_dynamics.py --presets debug --train-steps 2 --rollout-preset debug \\
        --rollout-grid 4 --rollout-batches 1 2 --rollout-frames 2 --frames-at 2 6   # a smoke test, seconds

Protocol.
Training: each preset runs in its own process (clean memory figures): ``--train-batch`` clips of
``context_frames`` frames (random tokens, actions, rewards, terminations of the preset's action type), AdamW,
``compute_loss`` + backward + step, 2 warm-up steps then ``--train-steps`` timed steps. Tokens/s counts input
tokens (``b * t * h * w``); achieved FLOP/s is tokens/s times ``training_flops_per_token`` (the analytic model
FLOPs); MFU divides it by a dense square matmul's FLOP/s measured in this run on the same device, dtype and
threads (``--matmul-size``). ``bf16`` is autocast over fp32 weights (mixed precision, as Lightning's
``bf16-mixed``). Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` over the steps (weights, optimizer
state, activations); on CPU the peak resident memory (VmHWM, reset after the model is built) minus the
resident memory before the steps, so it holds optimizer state and activations but not the weights.
Rollout: ``--rollout-preset`` with a ``--rollout-grid`` x ``--rollout-grid`` token grid (default 16x16),
``--maskgit-steps`` passes per frame, temperature 1; after a ``--rollout-context``-frame context and two
warm-up steps, ``--rollout-frames`` steps are timed: frames/s = batch * frames / seconds, with the KV cache and
with recomputation of the window. Per-frame cost: the time of the step that makes frame ``f`` after an
``f``-frame context (median of ``--repeats``, the context re-encoded outside the timing) at batch 1, for each
``--frames-at``; with the cache it should stop growing past ``context_frames``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time
from contextlib import nullcontext

import torch

from wm_video.utils import emit_json
from wm_video.utils.machine import machine_record, machine_summary


def _sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _autocast(device: str, dtype: str):
    if dtype == "bf16":
        return torch.autocast(device.split(":")[0], dtype=torch.bfloat16)
    return nullcontext()


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def _batch(cfg, b: int, t: int, device: str) -> dict[str, torch.Tensor]:
    batch = {"tokens": torch.randint(0, cfg.vocab_size, (b, t, cfg.token_h, cfg.token_w), device=device),
             "rewards": torch.randn(b, t, device=device), "terminations": torch.rand(b, t, device=device) < 0.05}
    if cfg.action_type == "discrete":
        batch["actions"] = torch.randint(0, cfg.num_actions, (b, t), device=device)
    elif cfg.action_type == "continuous":
        batch["actions"] = torch.randn(b, t, cfg.action_dim, device=device)
    return batch


def train_child(preset: str, batch_size: int, steps: int, device: str, dtype: str, checkpointing: bool) -> dict:
    """Runs in a fresh process: one preset's training throughput and peak memory."""
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import preset as get_preset
    from wm_video.models.dynamics import DynamicsModel, training_flops_per_token

    cfg = dataclasses.replace(get_preset("dynamics", preset), gradient_checkpointing=checkpointing)
    model = DynamicsModel(cfg).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4, fused=device.startswith("cuda"))
    t = cfg.context_frames
    batch = _batch(cfg, batch_size, t, device)
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    times = []
    for i in range(steps + 2):
        _sync(device)
        t0 = time.perf_counter()
        with _autocast(device, dtype):
            loss, _ = model.compute_loss(batch)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        if i >= 2:
            times.append(time.perf_counter() - t0)
    step_s = statistics.median(times)
    tokens_per_s = batch_size * t * cfg.tokens_per_frame / step_s
    row = {"preset": preset, "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
           "batch": batch_size, "frames": t, "tokens_per_frame": cfg.tokens_per_frame, "step_s": round(step_s, 4),
           "tokens_per_s": round(tokens_per_s, 1),
           "achieved_tflops": tokens_per_s * training_flops_per_token(cfg, t) / 1e12}
    if device.startswith("cuda"):
        row.update(peak_mb=round(torch.cuda.max_memory_allocated() / 2**20), memory="cuda allocated (all)")
    else:
        row.update(peak_mb=round(_status_mb("VmHWM") - before), memory="CPU resident above the built model")
    return row


def measure_training(args: argparse.Namespace, matmul_flops: float) -> list[dict]:
    rows = []
    for name in args.presets:
        cmd = [sys.executable, __file__, "--train-child", name, "--train-batch", str(args.train_batch),
               "--train-steps", str(args.train_steps), "--device", args.device, "--dtype", args.dtype]
        if args.grad_checkpointing:
            cmd.append("--grad-checkpointing")
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode:
            err = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"
            row = {"preset": name, "error": err}
        else:
            row = json.loads(proc.stdout.strip().splitlines()[-1])
            row["mfu"] = round(row["achieved_tflops"] * 1e12 / matmul_flops, 4)
            row["achieved_tflops"] = round(row["achieved_tflops"], 4)
        rows.append(row)
        print(row, flush=True)
    return rows


def _rollout_model(args: argparse.Namespace):
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import preset as get_preset
    from wm_video.models.dynamics import DynamicsModel

    cfg = dataclasses.replace(get_preset("dynamics", args.rollout_preset), token_h=args.rollout_grid,
                              token_w=args.rollout_grid)
    return DynamicsModel(cfg).to(args.device).eval()


def _action(cfg, b: int, device: str) -> torch.Tensor | None:
    if cfg.action_type == "discrete":
        return torch.zeros(b, dtype=torch.long, device=device)
    if cfg.action_type == "continuous":
        return torch.zeros(b, cfg.action_dim, device=device)
    return None


def _started(model, args: argparse.Namespace, b: int, context: int, use_cache: bool):
    from wm_video.models.dynamics import Rollout

    cfg = model.config
    roll = Rollout(model, steps=args.maskgit_steps, temperature=1.0, use_cache=use_cache,
                   generator=torch.Generator(args.device).manual_seed(0))
    tokens = torch.randint(0, cfg.vocab_size, (b, context, cfg.token_h, cfg.token_w), device=args.device)
    with _autocast(args.device, args.dtype):
        roll.start(tokens)
    return roll


def measure_rollout(args: argparse.Namespace, model) -> list[dict]:
    rows = []
    for use_cache in (True, False):
        for b in args.rollout_batches:
            roll = _started(model, args, b, args.rollout_context, use_cache)
            action = _action(model.config, b, args.device)
            with _autocast(args.device, args.dtype):
                for _ in range(2):  # warm-up
                    roll.step(action)
                _sync(args.device)
                t0 = time.perf_counter()
                for _ in range(args.rollout_frames):
                    roll.step(action)
                _sync(args.device)
            dt = time.perf_counter() - t0
            rows.append({"kv_cache": use_cache, "batch": b, "frames": args.rollout_frames,
                         "frames_per_s": round(b * args.rollout_frames / dt, 2)})
            print(rows[-1], flush=True)
    return rows


def measure_frame_cost(args: argparse.Namespace, model) -> list[dict]:
    rows = []
    for use_cache in (True, False):
        for f in args.frames_at:
            times = []
            for _ in range(args.repeats):
                roll = _started(model, args, 1, f, use_cache)
                action = _action(model.config, 1, args.device)
                with _autocast(args.device, args.dtype):
                    _sync(args.device)
                    t0 = time.perf_counter()
                    roll.step(action)
                    _sync(args.device)
                times.append(time.perf_counter() - t0)
            cached = len(roll.cache) if roll.cache is not None else None
            rows.append({"kv_cache": use_cache, "frame": f, "ms": round(1000 * statistics.median(times), 2),
                         "cached_frames_after": cached})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["small"], help="dynamics presets for the training rows")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=["fp32", "bf16"], default="fp32")
    parser.add_argument("--train-batch", type=int, default=8, help="clips per training step")
    parser.add_argument("--train-steps", type=int, default=5, help="timed training steps (after 2 warm-up)")
    parser.add_argument("--grad-checkpointing", action="store_true")
    parser.add_argument("--matmul-size", type=int, default=None, help="square matmul for the peak (CPU 2048, GPU 8192)")
    parser.add_argument("--rollout-preset", default="small")
    parser.add_argument("--rollout-grid", type=int, default=16, help="token grid side for the rollout rows")
    parser.add_argument("--rollout-batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rollout-context", type=int, default=4)
    parser.add_argument("--rollout-frames", type=int, default=8, help="timed rollout steps")
    parser.add_argument("--maskgit-steps", type=int, default=2, help="MaskGIT passes per frame")
    parser.add_argument("--frames-at", type=int, nargs="+", default=[4, 64], help="frames for the per-frame cost")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--skip-train", action="store_true")
    parser.add_argument("--skip-rollout", action="store_true")
    parser.add_argument("--out", default=None, help="also write the JSON result here")
    parser.add_argument("--train-child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.train_child:
        print(json.dumps(train_child(args.train_child, args.train_batch, args.train_steps, args.device, args.dtype,
                                     args.grad_checkpointing)))
        return
    from wm_video.training.throughput import measured_matmul_flops

    result: dict = {"machine": machine_record(device=args.device), "args": vars(args)}
    if not args.skip_train:
        dtype = torch.bfloat16 if args.dtype == "bf16" else torch.float32
        size = args.matmul_size or (8192 if args.device.startswith("cuda") else 2048)
        matmul = measured_matmul_flops(dtype, size, device=args.device)
        result["matmul_tflops"] = round(matmul / 1e12, 4)
        result["train"] = measure_training(args, matmul)
    if not args.skip_rollout:
        torch.manual_seed(0)
        model = _rollout_model(args)
        with torch.no_grad():
            result["rollout"] = measure_rollout(args, model)
            result["frame_cost"] = measure_frame_cost(args, model)
    print(f"\n{args.device} {args.dtype}, {machine_summary(result['machine'])}")
    if "train" in result:
        print(f"dense matmul peak: {result['matmul_tflops']} TFLOP/s\n")
        print("| preset | params (M) | batch x frames x tokens | tokens/s | TFLOP/s | MFU | peak memory (MB) |")
        print("| --- | --- | --- | --- | --- | --- | --- |")
        for r in result["train"]:
            if "error" in r:
                print(f"| {r['preset']} | error: {r['error']} | | | | | |")
            else:
                print(f"| {r['preset']} | {r['params_m']} | {r['batch']} x {r['frames']} x {r['tokens_per_frame']} "
                      f"| {r['tokens_per_s']} | {r['achieved_tflops']} | {r['mfu']:.1%} | {r['peak_mb']} |")
    if "rollout" in result:
        print(f"\nrollout ({args.rollout_preset}, {args.rollout_grid}x{args.rollout_grid} tokens, "
              f"{args.maskgit_steps} MaskGIT passes)\n| KV cache | batch | frames/s |\n| --- | --- | --- |")
        for r in result["rollout"]:
            print(f"| {'yes' if r['kv_cache'] else 'no'} | {r['batch']} | {r['frames_per_s']} |")
        print("\n| KV cache | frame | ms per frame (batch 1) |\n| --- | --- | --- |")
        for r in result["frame_cost"]:
            print(f"| {'yes' if r['kv_cache'] else 'no'} | {r['frame']} | {r['ms']} |")
    print()
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
