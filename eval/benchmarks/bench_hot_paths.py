"""Hot-path value checks (issue 20): rollout and training step time with the models' value checks on and off.

    OMP_NUM_THREADS=1 python eval/benchmarks/bench_hot_paths.py           # under a minute on 2 idle CPU cores
    python eval/benchmarks/bench_hot_paths.py --device cuda --batches 1 16 64

Protocol. A tiny world model (the ``debug`` tokenizer, dynamics and decoder presets, random weights, 6 discrete
actions) is saved to a temporary folder and loaded back, as a user's would be. Each row times the same work with
``wm_video.models.checks.CHECK_VALUES`` on (every floor reads its input values back again: the action encoder's
id range, the decoder's or VQ decoder's token range, the previous frame's pixels; about what every step did before
issue 20) and off (the default: the inputs are checked once where they enter). On and off alternate within each
repeat, their order flipping from one repeat to the next, so both see the same machine load.

- ``rollout``: ``WorldModelEnv.step`` (``--maskgit-steps`` MaskGIT passes, KV cache, the frame rendered by the VQ
  decoder or by the diffusion decoder at 1 step) from a 3-frame context, ``--steps`` steps per repeat after a
  warm-up step; the actions are CPU tensors, as the generation pipeline hands them over.
- ``train``: one dynamics training step: ``DynamicsModule.on_before_batch_transfer`` on the CPU batch, the device
  copy, ``training_step``, backward and an AdamW step, on ``--train-batch`` clips of 4 frames.

Printed: per row, the median over ``--repeats`` of the mean step time in ms, on and off, and their ratio on / off
(above 1: what the repeated checks cost). A GPU shows the host reads (each waits for the queued kernels); a CPU
mostly shows their arithmetic.
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

from wm_video.config import load_config
from wm_video.models import checks
from wm_video.models.decoder import DiffusionDecoder
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.dynamics_module import DynamicsModule, DynamicsTrainConfig
from wm_video.utils import emit_json
from wm_video.utils.machine import machine_record
from wm_video.world_model import RenderSettings, WorldModel, WorldModelInfo
from wm_video.world_model_env import WorldModelEnv

NUM_ACTIONS = 6


def build(folder: Path, decoder: bool, device: str) -> WorldModel:
    """The tiny world model, written to ``folder`` and loaded back."""
    tok = VQTokenizer(load_config("tokenizer", preset_name="debug"))
    grid = tok.config.token_grid
    dyn = DynamicsModel(dataclasses.replace(load_config("dynamics", preset_name="debug"), vocab_size=tok.vocab_size,
                                            token_h=grid, token_w=grid, num_actions=NUM_ACTIONS))
    dec = DiffusionDecoder.from_tokenizer(tok, load_config("decoder", preset_name="debug")) if decoder else None
    info = WorldModelInfo(resolution=tok.config.resolution, action_space={"kind": "discrete", "n": NUM_ACTIONS})
    WorldModel(tok, dyn, dec, info).save_pretrained(folder)
    return WorldModel.from_pretrained(folder).to(device)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def rollout_step(model: WorldModel, batch: int, args: argparse.Namespace) -> Callable[[], float]:
    """A timer of ``--steps`` env steps (ms per step), each call a new rollout with the same seeds."""
    res = model.resolution
    render = RenderSettings(num_inference_steps=1) if model.decoder is not None else True

    def run() -> float:
        g = torch.Generator().manual_seed(0)
        context = torch.randint(0, 256, (batch, 3, 3, res, res), dtype=torch.uint8, generator=g).to(args.device)
        actions = torch.randint(0, NUM_ACTIONS, (args.steps + 1, batch), generator=g)
        env = WorldModelEnv(model, args.maskgit_steps, 1.0, render=render,
                            generator=torch.Generator(args.device).manual_seed(0))
        env.reset(context)
        env.step(actions[0])  # warm-up
        sync(args.device)
        t0 = time.perf_counter()
        for a in actions[1:]:
            env.step(a)
        sync(args.device)
        return 1e3 * (time.perf_counter() - t0) / args.steps

    return run


def train_step(model: WorldModel, args: argparse.Namespace) -> Callable[[], float]:
    """A timer of ``--steps`` dynamics training steps (ms per step) on one fixed CPU batch."""
    module = DynamicsModule(DynamicsTrainConfig(model=model.dynamics.config)).to(args.device).train()
    opt = torch.optim.AdamW(module.parameters(), lr=1e-4)
    c, g = model.dynamics.config, torch.Generator().manual_seed(1)
    batch = {"tokens": torch.randint(0, c.vocab_size, (args.train_batch, 4, c.token_h, c.token_w), generator=g),
             "actions": torch.randint(0, NUM_ACTIONS, (args.train_batch, 4), generator=g),
             "rewards": torch.randn(args.train_batch, 4, generator=g),
             "terminations": torch.zeros(args.train_batch, 4, dtype=torch.bool)}

    def one() -> None:
        b = module.on_before_batch_transfer(batch, 0)
        loss = module.training_step({k: v.to(args.device) for k, v in b.items()}, 0)
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)

    def run() -> float:
        one()  # warm-up
        sync(args.device)
        t0 = time.perf_counter()
        for _ in range(args.steps):
            one()
        sync(args.device)
        return 1e3 * (time.perf_counter() - t0) / args.steps

    return run


def compare(timers: dict[str, Callable[[], float]], repeats: int) -> list[dict]:
    """Each timer with the checks on and off, alternating; the median ms per step of each, and on / off."""
    times = {(name, on): [] for name in timers for on in (True, False)}
    default = checks.CHECK_VALUES
    try:
        for r in range(repeats):
            for name, run in timers.items():
                for on in ((True, False) if r % 2 == 0 else (False, True)):
                    checks.CHECK_VALUES = on
                    times[name, on].append(run())
    finally:
        checks.CHECK_VALUES = default
    rows = []
    for name in timers:
        on, off = statistics.median(times[name, True]), statistics.median(times[name, False])
        rows.append({"row": name, "checks_on_ms": round(on, 3), "checks_off_ms": round(off, 3),
                     "on_over_off": round(on / off, 3)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16], help="rollout batch sizes")
    ap.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--maskgit-steps", type=int, default=8)
    ap.add_argument("--train-batch", type=int, default=8, help="clips per training batch")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None, help="JSON results file")
    args = ap.parse_args()
    warnings.simplefilter("ignore")  # training_step's self.log without a Trainer warns every step
    with tempfile.TemporaryDirectory() as tmp:
        vq, diffusion = build(Path(tmp) / "vq", False, args.device), build(Path(tmp) / "dm", True, args.device)
        timers = {f"rollout {name} batch {b}": rollout_step(m, b, args)
                  for name, m in (("vq", vq), ("diffusion", diffusion)) for b in args.batches}
        timers["train dynamics"] = train_step(vq, args)
        rows = compare(timers, args.repeats)
    print(f"{'row':<28} {'checks on ms':>13} {'checks off ms':>14} {'on / off':>9}")
    for r in rows:
        print(f"{r['row']:<28} {r['checks_on_ms']:>13.2f} {r['checks_off_ms']:>14.2f} {r['on_over_off']:>9.3f}")
    emit_json({"rows": rows, **machine_record(device=args.device), "steps": args.steps, "repeats": args.repeats,
               "maskgit_steps": args.maskgit_steps}, args.out)


if __name__ == "__main__":
    main()
