"""Does an EMA of the weights help the tokenizer? Held-out reconstruction PSNR of the export, with and without it.

    OMP_NUM_THREADS=1 python eval/tokenizer/ema_ablation.py --data data/boxing --out runs/ema_ablation \
        --max-steps 300 --decays 0 0.99 0.999 --seeds 0

Protocol (recorded in the output): for each ``--seeds`` seed and ``--decays`` decay, ``wm-video train tokenizer
--preset PRESET --data DATA --out OUT/ema<decay>_s<seed> --max-steps N ema_decay=<decay> trainer.seed=<seed>`` (plus
``--overrides``), run as a process; same data, same steps, same batches (the stream follows ``trainer.seed``).
Each export (the EMA weights when the decay is > 0) is scored by :func:`eval_tokenizer.evaluate` on the held-out
clips the run held out (PSNR per frame in [-1, 1], peak-to-peak 2, averaged over every held-out frame). A run with
the EMA on also records its raw last-step weights (``current_model_state`` of ``last.ckpt``) scored the same way,
so ``ema - raw`` compares two weight sets of one training trajectory. A run folder that already holds an export is
scored again, not retrained.
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from eval_tokenizer import evaluate

from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.consolidate import part_state_dict
from wm_video.utils import emit_json

KEYS = ("psnr_db", "ssim", "psnr_moving_db", "codebook_usage")


def train(data: str, run: Path, preset: str, steps: int, decay: float, seed: int, overrides: list[str]) -> float:
    """Train one tokenizer with the ``wm-video`` verb; returns the wall-clock seconds (0 when already trained)."""
    if (run / "export" / "model.safetensors").is_file():
        return 0.0
    cmd = [sys.executable, "-m", "wm_video", "train", "tokenizer", "--preset", preset, "--data", data, "--out",
           str(run), "--max-steps", str(steps), f"ema_decay={decay}", f"trainer.seed={seed}", *overrides]
    print(" ".join(cmd), flush=True)
    t0 = datetime.datetime.now()
    subprocess.run(cmd, check=True)
    return (datetime.datetime.now() - t0).total_seconds()


def raw_export(run: Path) -> Path | None:
    """The run's raw last-step weights (kept beside the EMA in ``last.ckpt``) saved as an export; None without EMA."""
    ckpt = torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    if "current_model_state" not in ckpt:
        return None
    model = VQTokenizer.from_pretrained(run / "export")
    model.load_state_dict(part_state_dict(ckpt["current_model_state"]))
    out = run / "raw_export"
    model.save_pretrained(out)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="frame dataset folder (e.g. from `wm-video data collect`)")
    parser.add_argument("--out", required=True, help="folder for the runs and results.json")
    parser.add_argument("--preset", default="tiny")
    parser.add_argument("--max-steps", type=int, default=300)
    parser.add_argument("--decays", type=float, nargs="+", default=[0.0, 0.99, 0.999])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--overrides", nargs="*", default=[], help="extra FIELD=VALUE overrides for every run")
    args = parser.parse_args()
    out = Path(args.out)
    rows = []
    for seed in args.seeds:
        for decay in args.decays:
            run = out / f"ema{decay:g}_s{seed}"
            seconds = train(args.data, run, args.preset, args.max_steps, decay, seed, args.overrides)
            row = {"decay": decay, "seed": seed, "train_seconds": round(seconds, 1)}
            row.update({k: evaluate(str(run / "export"), args.data)[k] for k in KEYS})
            raw = raw_export(run)
            if raw is not None:
                row["raw"] = {k: evaluate(str(raw), args.data)[k] for k in KEYS}
            print(row, flush=True)
            rows.append(row)
    emit_json({"rows": rows, "protocol": {
        "script": "eval/tokenizer/ema_ablation.py", "argv": sys.argv[1:], "preset": args.preset,
        "max_steps": args.max_steps, "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="minutes")}}, str(out / "results.json"))


if __name__ == "__main__":
    main()
