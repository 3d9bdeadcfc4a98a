"""Training steps per second of the ``tiny`` tokenizer and dynamics presets under three thread settings, each in a
fresh process: torch's default threads with OpenMP's default (spinning) wait policy, the same with
``OMP_WAIT_POLICY=PASSIVE``, and one thread.

    python eval/benchmarks/bench_threads.py                      # the machine as it is
    python eval/benchmarks/bench_threads.py --busy 1             # with one CPU-burning process beside it

On a shared machine the default's OpenMP threads spin waiting for each other while another process holds a core;
this measures what that costs. ``--busy N`` starts N processes that burn a core each for the duration. Synthetic
inputs (random frames and tokens), so no dataset is needed; the first ``--warmup`` steps are not timed.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import subprocess
import sys
import time

SETTINGS = {"default": {}, "passive": {"OMP_WAIT_POLICY": "PASSIVE"}, "one_thread": {"OMP_NUM_THREADS": "1"}}

CHILD = r"""
import sys, time, torch
import wm_video.registry  # noqa: F401  (registers every config kind)
from wm_video.config import load_config
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.tokenizer import VQTokenizer
part, steps, warmup = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
torch.manual_seed(0)
if part == "tokenizer":
    model = VQTokenizer(load_config("tokenizer", preset_name="tiny"))
    batch = {"frames": torch.randint(0, 256, (8, 2, 3, 64, 64), dtype=torch.uint8)}  # the preset's 8 clips x 2 frames
else:
    cfg = load_config("dynamics", preset_name="tiny")
    model = DynamicsModel(cfg)
    batch = {"tokens": torch.randint(0, cfg.vocab_size, (8, 8, cfg.token_h, cfg.token_w)),
             "actions": torch.randint(0, cfg.num_actions, (8, 8))}
opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
for i in range(warmup + steps):
    if i == warmup:
        t0 = time.perf_counter()
    loss, _ = model.compute_loss(batch)
    opt.zero_grad(); loss.backward(); opt.step()
print(steps / (time.perf_counter() - t0), torch.get_num_threads())
"""


def _burn(stop: float) -> None:
    while time.time() < stop:
        pass


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--busy", type=int, default=0, help="CPU-burning processes beside the measurement")
    p.add_argument("--parts", nargs="+", default=["tokenizer", "dynamics"])
    args = p.parse_args()
    burners = [mp.Process(target=_burn, args=(time.time() + 3600,), daemon=True) for _ in range(args.busy)]
    for b in burners:
        b.start()
    rows = []
    try:
        for part in args.parts:
            for name, env in SETTINGS.items():
                out = subprocess.run([sys.executable, "-c", CHILD, part, str(args.steps), str(args.warmup)],
                                     env={**os.environ, **env}, capture_output=True, text=True, check=True)
                rate, threads = out.stdout.split()[-2:]
                rows.append({"part": part, "setting": name, "threads": int(threads), "steps_per_s": float(rate)})
                print(f"{part:9s} {name:10s} threads={threads} {float(rate):6.2f} steps/s", flush=True)
    finally:
        for b in burners:
            b.terminate()
    print(json.dumps({"busy": args.busy, "load_before": os.getloadavg(), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
