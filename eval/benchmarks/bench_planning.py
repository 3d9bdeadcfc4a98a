"""Planning speed: decisions per second and imagined frames per second of CEM and MCTS at given settings.

    python eval/benchmarks/bench_planning.py                         # tiny preset, the settings of planning_returns
    python eval/benchmarks/bench_planning.py --decisions 2           # seconds
    python eval/benchmarks/bench_planning.py --device cuda --preset small --decisions 20

Protocol. A world model is built from the ``tokenizer`` and ``dynamics`` presets of ``--preset`` with random weights
(speed does not depend on them) at 64x64, twice: with a continuous 1-D action (for CEM) and with ``--num-actions``
discrete actions (for MCTS). Each planner makes ``--decisions`` decisions from a context of 4 random frames (the
first is a warm-up and not timed), exactly as ``wm-video plan`` calls it every real step: tokenizing the context,
then its batched, KV-cached imagined rollouts. Imagined frames count every token frame the planner imagined
(rows x steps). The CEM rows are the settings of ``eval/planning/planning_returns.py`` and the command's defaults;
the MCTS rows likewise.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import torch

CEM_SETTINGS = {  # name -> (horizon, population, elites, iterations)
    "cem h12 p24 i2 (planning_returns)": (12, 24, 5, 2),
    "cem h8 p64 i4 (plan defaults)": (8, 64, 8, 4),
}
MCTS_SETTINGS = {  # name -> (simulations, parallel, max_depth, rollout_depth)
    "mcts 18 sims, 9 parallel, depth 6 + 3": (18, 9, 6, 3),
    "mcts 64 sims, 16 parallel, depth 8 + 4 (plan defaults)": (64, 16, 8, 4),
}


def build(preset: str, action: dict, device: str) -> object:
    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config
    from wm_video.models.dynamics.model import DynamicsModel
    from wm_video.models.tokenizer.model import VQTokenizer
    from wm_video.world_model import WorldModel

    tok = VQTokenizer(dataclasses.replace(load_config("tokenizer", preset_name=preset), resolution=64))
    grid = 64 // tok.config.downsample
    dcfg = dataclasses.replace(load_config("dynamics", preset_name=preset), vocab_size=tok.vocab_size, token_h=grid,
                               token_w=grid, **action)
    return WorldModel(tok, DynamicsModel(dcfg), None).to(device).eval()


def time_decisions(planner: object, context: torch.Tensor, decisions: int, device: str) -> dict:
    planner.plan(context)  # warm-up
    frames0 = planner.imagined_frames
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(decisions):
        planner.plan(context)
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    frames = planner.imagined_frames - frames0
    return {"decisions": decisions, "seconds": round(dt, 3), "decisions_per_s": round(decisions / dt, 3),
            "imagined_frames_per_decision": frames // decisions, "imagined_frames_per_s": round(frames / dt, 1)}


@torch.no_grad()
def main(argv: list[str] | None = None) -> int:
    from wm_video.data.schema import ActionSpace
    from wm_video.planning import CEMConfig, CEMPlanner, MCTSConfig, MCTSPlanner
    from wm_video.utils.machine import machine_record
    from wm_video.world_model_env import WorldModelEnv

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--preset", default="tiny", help="tokenizer and dynamics preset (default: tiny)")
    p.add_argument("--decisions", type=int, default=5, help="timed decisions per setting (default: 5)")
    p.add_argument("--num-actions", type=int, default=9, help="discrete actions for MCTS (default: 9, Ms. Pac-Man)")
    p.add_argument("--maskgit-steps", type=int, default=1, help="MaskGIT passes per imagined frame (default: 1)")
    p.add_argument("--temperature", type=float, default=1.0, help="token sampling temperature (default: 1)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--out", default=None, help="also write the results as JSON here")
    args = p.parse_args(argv)
    torch.manual_seed(0)
    context = torch.randint(0, 256, (4, 3, 64, 64), dtype=torch.uint8)
    rows = []
    cont = build(args.preset, {"action_type": "continuous", "action_dim": 1}, args.device)
    space = ActionSpace("continuous", dim=1, low=[-3.0], high=[3.0])
    for name, (h, pop, el, it) in CEM_SETTINGS.items():
        env = WorldModelEnv(cont, args.maskgit_steps, args.temperature, render=False,
                            generator=torch.Generator(args.device).manual_seed(0))
        planner = CEMPlanner(env, space, CEMConfig(horizon=h, population=pop, elites=el, iterations=it),
                             generator=torch.Generator(args.device).manual_seed(1), device=args.device)
        rows.append({"setting": name, **time_decisions(planner, context, args.decisions, args.device)})
        print(rows[-1], flush=True)
    disc = build(args.preset, {"action_type": "discrete", "num_actions": args.num_actions}, args.device)
    dspace = ActionSpace("discrete", n=args.num_actions)
    for name, (sims, par, depth, roll) in MCTS_SETTINGS.items():
        env = WorldModelEnv(disc, args.maskgit_steps, args.temperature, render=False,
                            generator=torch.Generator(args.device).manual_seed(0))
        cfg = MCTSConfig(simulations=sims, parallel=par, max_depth=depth, rollout_depth=roll)
        planner = MCTSPlanner(env, dspace, cfg, generator=torch.Generator(args.device).manual_seed(1),
                              device=args.device)
        rows.append({"setting": name, **time_decisions(planner, context, args.decisions, args.device)})
        print(rows[-1], flush=True)
    params = sum(x.numel() for x in cont.dynamics.parameters())
    result = {"preset": args.preset, "dynamics_parameters": params, "maskgit_steps": args.maskgit_steps,
              **machine_record(device=args.device), "rows": rows}
    print("\n| setting | decisions/s | imagined frames per decision | imagined frames/s |")
    print("| --- | ---: | ---: | ---: |")
    for r in rows:
        print(f"| {r['setting']} | {r['decisions_per_s']:.2f} | {r['imagined_frames_per_decision']} | "
              f"{r['imagined_frames_per_s']:.0f} |")
    if args.out:
        from wm_video.utils.atomic import atomic_write_json

        atomic_write_json(args.out, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
