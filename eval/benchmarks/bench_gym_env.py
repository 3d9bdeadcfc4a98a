"""Gymnasium vector-env speed beside the bare ``WorldModelEnv``: steps/s at each batch, side by side in one run.

    python eval/benchmarks/bench_gym_env.py                                      # tiny, batch 1, 16, 64
    python eval/benchmarks/bench_gym_env.py --batches 1 16 --steps 4 --repeats 3 # a minute on 2 cores
    python eval/benchmarks/bench_gym_env.py --model runs/wm --device cuda        # your world model

Protocol. Without ``--model``, a world model is built from the ``tiny`` presets (``tokenizer``, ``dynamics``,
``decoder``) with random weights (speed does not depend on them) and ``--num-actions`` discrete actions, saved to
a temporary folder and loaded back as a user would. For each batch ``N`` of ``--batches``, the same
``WorldModelEnv`` settings (``--maskgit-steps``, temperature 1, the diffusion decoder at ``--num-inference-steps``)
are timed two ways, alternating, ``--repeats`` times each: ``bare``, ``WorldModelEnv.step`` on an int64 action
tensor, frames left as float tensors; ``vector``, ``WorldModelVectorEnv.step`` on a numpy action batch, with the
action-space check, uint8 ``(N, h, w, 3)`` observations and numpy rewards and flags. Both start from the same
random context of ``context_frames`` frames; each repeat takes one untimed warm-up step then ``--steps`` timed
ones. The termination threshold is above 1 and the horizon past the run, so no episode ends and no autoreset is
timed (an autoreset costs one tokenizer pass of a context per ended row). Steps/s counts env steps of every batch
row (``N`` per call); the table gives the median over repeats and the vector env's overhead against the bare env.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def build_tiny(num_actions: int, out: Path) -> Path:
    """The tiny random world model, saved to ``out``."""
    import wm_video.registry  # noqa: F401  (the model presets)
    from wm_video.config import load_config
    from wm_video.models.decoder.model import DiffusionDecoder
    from wm_video.models.dynamics.model import DynamicsModel
    from wm_video.models.tokenizer.model import VQTokenizer
    from wm_video.world_model import WorldModel, WorldModelInfo

    tcfg = load_config("tokenizer", preset_name="tiny")
    tok = VQTokenizer(tcfg)
    grid = tcfg.resolution // tcfg.downsample
    dcfg = dataclasses.replace(load_config("dynamics", preset_name="tiny"), vocab_size=tok.vocab_size, token_h=grid,
                               token_w=grid, action_type="discrete", num_actions=num_actions)
    dec = DiffusionDecoder.from_tokenizer(tok, load_config("decoder", preset_name="tiny"))
    info = WorldModelInfo(resolution=tcfg.resolution, action_space={"kind": "discrete", "n": num_actions})
    return WorldModel(tok, DynamicsModel(dcfg), dec, info).save_pretrained(out)


def sync(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def time_bare(env, context: torch.Tensor, batch: int, steps: int, rng: np.random.Generator, n: int,
              device: str) -> float:
    env.reset(context.expand(batch, *context.shape[1:]))
    env.step(torch.as_tensor(rng.integers(0, n, batch)))  # warm-up
    sync(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(torch.as_tensor(rng.integers(0, n, batch)))
    sync(device)
    return batch * steps / (time.perf_counter() - t0)


def time_vector(vec, steps: int, seed: int) -> float:
    vec.reset(seed=seed)
    vec.action_space.seed(seed)
    vec.step(vec.action_space.sample())  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        vec.step(vec.action_space.sample())  # returns numpy arrays: the device is synchronised by the copy
    return vec.num_envs * steps / (time.perf_counter() - t0)


def main(argv: list[str] | None = None) -> int:
    from wm_video.envs.world_model_gym import WorldModelVectorEnv
    from wm_video.utils.machine import machine_record
    from wm_video.world_model import RenderSettings, WorldModel
    from wm_video.world_model_env import WorldModelEnv

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default=None, help="a world-model folder (default: the tiny random one, built here)")
    ap.add_argument("--batches", nargs="+", type=int, default=[1, 16, 64], help="batch sizes (default: 1 16 64)")
    ap.add_argument("--steps", type=int, default=8, help="timed steps per repeat (default: 8)")
    ap.add_argument("--repeats", type=int, default=3, help="timed repeats per row and env (default: 3)")
    ap.add_argument("--num-actions", type=int, default=9, help="discrete actions of the tiny model (default: 9)")
    ap.add_argument("--maskgit-steps", type=int, default=8, help="MaskGIT passes per frame (default: 8)")
    ap.add_argument("--num-inference-steps", type=int, default=1, help="diffusion decoder steps (default: 1)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    ap.add_argument("--out", default=None, help="also write the results as JSON here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.model or build_tiny(args.num_actions, Path(tmp) / "wm")
        model = WorldModel.from_pretrained(folder, map_location=args.device)
        res, t0 = model.resolution, model.context_frames
        context = torch.randint(0, 256, (1, t0, 3, res, res), generator=torch.Generator().manual_seed(0),
                                dtype=torch.uint8)
        frames = context[0].permute(0, 2, 3, 1).numpy()  # (t0, h, w, 3): the vector env's start state
        render = RenderSettings(num_inference_steps=args.num_inference_steps) if model.decoder is not None else True
        n = model.dynamics.config.num_actions if model.action_type == "discrete" else 0
        if not n:
            raise SystemExit(f"{folder}: this benchmark steps discrete actions; the model's are {model.action_type}")
        rows = []
        for b in args.batches:
            bare = WorldModelEnv(model, args.maskgit_steps, 1.0, render=render,
                                 generator=torch.Generator(model.device).manual_seed(0))
            vec = WorldModelVectorEnv(b, model, context=frames, horizon=10 ** 9, maskgit_steps=args.maskgit_steps,
                                      render=render, termination_threshold=1.1, device=args.device)
            rng = np.random.default_rng(0)
            speeds: dict[str, list[float]] = {"bare": [], "vector": []}
            for r in range(args.repeats):
                speeds["bare"].append(time_bare(bare, context.to(args.device), b, args.steps, rng, n, args.device))
                speeds["vector"].append(time_vector(vec, args.steps, seed=r))
                print(f"batch {b}, repeat {r + 1}/{args.repeats}: bare {speeds['bare'][-1]:.1f}, vector "
                      f"{speeds['vector'][-1]:.1f} steps/s", flush=True)
            row = {"batch": b, **{f"{k}_steps_per_s": round(statistics.median(v), 1) for k, v in speeds.items()},
                   "repeats": speeds}
            row["vector_over_bare"] = round(row["vector_steps_per_s"] / row["bare_steps_per_s"], 3)
            rows.append(row)
    machine = machine_record(device=args.device)
    result = {"protocol": {k: v for k, v in vars(args).items() if k != "out"}, "rows": rows, "machine": machine,
              "date": machine["date"]}
    print("\n| batch | bare WorldModelEnv, steps/s | WorldModelVectorEnv, steps/s | vector / bare |")
    print("| --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['batch']} | {r['bare_steps_per_s']} | {r['vector_steps_per_s']} | {r['vector_over_bare']} |")
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
