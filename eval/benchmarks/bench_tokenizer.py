"""Tokenizer throughput (encode = frames -> tokens, decode = tokens -> frames) and training-step peak memory.

    python eval/benchmarks/bench_tokenizer.py                      # small preset, CPU
    python eval/benchmarks/bench_tokenizer.py --device cuda --bf16 # on a GPU

Throughput: frames/s at 64x64 and 256x256 (the same architecture, built for each resolution), batch 1 and 64,
after 2 warm-up calls, median of ``--repeats`` timed calls, ``torch.no_grad``. Memory: peak resident memory
of a separate process that runs ``--train-batch`` clips x 1 frame (default 32) through one training step of
the preset at 64x64 (``compute_loss`` + backward + AdamW step): the peak-RSS mark (VmHWM) is reset just before
the step, and the result is that peak minus the resident memory before it (model, optimizer state excluded
until created by the step). On CUDA, ``torch.cuda.max_memory_allocated``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import subprocess
import sys
import time

import torch


def build(preset: str, resolution: int, device: str):
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import preset as get_preset
    from wm_video.models.tokenizer import VQTokenizer

    cfg = dataclasses.replace(get_preset("tokenizer", preset), resolution=resolution)
    return VQTokenizer(cfg).to(device).eval()


@torch.no_grad()
def throughput(preset: str, resolution: int, batch: int, device: str, bf16: bool, repeats: int) -> tuple[float, float]:
    model = build(preset, resolution, device)
    x = torch.rand(batch, 1, 3, resolution, resolution, device=device) * 2 - 1
    ctx = torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16)

    def timed(fn) -> float:
        times = []
        for i in range(repeats + 2):
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            with ctx:
                fn()
            if device.startswith("cuda"):
                torch.cuda.synchronize()
            if i >= 2:
                times.append(time.perf_counter() - t0)
        return batch / statistics.median(times)

    tokens = model.tokenize(x)
    return timed(lambda: model.tokenize(x)), timed(lambda: model.detokenize(tokens))


def peak_memory_child(preset: str, batch: int, device: str) -> None:
    """Runs in a fresh process: prints the peak memory of one training step in MB."""
    model = build(preset, 64, device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    frames = torch.randint(0, 256, (batch, 1, 3, 64, 64), dtype=torch.uint8, device=device)
    before = _status_mb("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # Linux: reset the peak-RSS mark (VmHWM) to the current RSS
        f.write("5")
    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    loss, _ = model.compute_loss({"frames": frames})
    loss.backward()
    opt.step()
    if device.startswith("cuda"):
        print(json.dumps({"peak_mb": torch.cuda.max_memory_allocated() / 2**20, "kind": "cuda allocated"}))
    else:
        peak = _status_mb("VmHWM")
        print(json.dumps({"peak_mb": peak - before, "kind": "CPU resident, above the pre-step level",
                          "process_peak_mb": peak}))


def _status_mb(field: str) -> float:
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise RuntimeError(f"{field} not in /proc/self/status")


def main() -> None:
    from wm_video.utils.machine import machine_record, machine_summary

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--bf16", action="store_true")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--train-batch", type=int, default=32)
    parser.add_argument("--memory-child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        peak_memory_child(args.preset, args.train_batch, args.device)
        return
    torch.set_num_threads(torch.get_num_threads())
    rows = []
    for res in (64, 256):
        for batch in (1, 64):
            enc, dec = throughput(args.preset, res, batch, args.device, args.bf16, args.repeats)
            rows.append({"resolution": res, "batch": batch, "encode_fps": round(enc, 1), "decode_fps": round(dec, 1)})
            print(rows[-1], flush=True)
    mem = json.loads(subprocess.run([sys.executable, __file__, "--memory-child", "--preset", args.preset,
                                     "--device", args.device, "--train-batch", str(args.train_batch)],
                                    capture_output=True, text=True, check=True).stdout.strip().splitlines()[-1])
    print(f"\n{args.preset} preset, {args.device}{' bf16' if args.bf16 else ' fp32'}, "
          f"{machine_summary(machine_record(device=args.device, git=False))}")
    print("| resolution | batch | encode (frames/s) | decode (frames/s) |\n| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['resolution']} | {r['batch']} | {r['encode_fps']} | {r['decode_fps']} |")
    print(f"\ntraining step peak memory, batch {args.train_batch} x 64x64: {mem['peak_mb']:.0f} MB ({mem['kind']})")


if __name__ == "__main__":
    main()
