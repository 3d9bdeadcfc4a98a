"""Training steps per second of the ``tiny`` tokenizer with the convolutional encoder against the patch-local one
(``model.encoder=patch``), measured side by side in one process.

    OMP_NUM_THREADS=1 python eval/benchmarks/bench_encoders.py --rounds 5 --steps 10

Each round times ``--steps`` training steps (``compute_loss`` + backward + AdamW, the preset's batch of 8 clips x 2
frames at 64x64, random frames) of each encoder in turn, after ``--warmup`` untimed steps; the ratio is taken per
round and its median reported, so a load change on a shared machine hits both sides of one round alike. Also:
encoding throughput (frames -> tokens, batch 64, ``no_grad``) and parameter counts.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import torch

from wm_video.utils.machine import machine_record


def build(encoder: str):
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config
    from wm_video.models.tokenizer import VQTokenizer

    torch.manual_seed(0)
    return VQTokenizer(load_config("tokenizer", preset_name="tiny", overrides=[f"encoder={encoder}",
                                                                               "foreground_weight=30"]))


def train_seconds(model, opt, batch: dict, steps: int) -> float:
    t0 = time.perf_counter()
    for _ in range(steps):
        loss, _ = model.compute_loss(batch)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
    return (time.perf_counter() - t0) / steps


@torch.no_grad()
def encode_fps(model, frames: torch.Tensor, repeats: int = 3) -> float:
    model.eval()
    model.tokenize(frames)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        model.tokenize(frames)
        times.append(time.perf_counter() - t0)
    model.train()
    return frames.shape[0] * frames.shape[1] / statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps", type=int, default=10, help="timed training steps per encoder per round")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()

    g = torch.Generator().manual_seed(0)
    batch = {"frames": torch.randint(0, 256, (8, 2, 3, 64, 64), generator=g, dtype=torch.uint8)}
    models = {name: build(name).train() for name in ("conv", "patch")}
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-4) for name, m in models.items()}
    for name, m in models.items():
        train_seconds(m, opts[name], batch, args.warmup)
    per_step: dict[str, list[float]] = {name: [] for name in models}
    for _ in range(args.rounds):
        for name, m in models.items():
            per_step[name].append(train_seconds(m, opts[name], batch, args.steps))
    ratios = [c / p for c, p in zip(per_step["conv"], per_step["patch"], strict=True)]
    frames = torch.randint(0, 256, (64, 1, 3, 64, 64), generator=g, dtype=torch.uint8).float() / 127.5 - 1
    result = {
        "train_steps_per_s": {name: round(1 / statistics.median(v), 3) for name, v in per_step.items()},
        "patch_over_conv_speed_median": round(statistics.median(ratios), 3),
        "ratios_per_round": [round(r, 3) for r in ratios],
        "encode_frames_per_s": {name: round(encode_fps(m, frames), 1) for name, m in models.items()},
        "encoder_params": {name: sum(p.numel() for p in m.encoder.parameters()) for name, m in models.items()},
        "protocol": {"preset": "tiny", "batch": "8 clips x 2 frames, 64x64", "rounds": args.rounds,
                     "steps": args.steps, **machine_record()},
    }
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()
