"""Can the dynamics model learn to follow its actions at the suite's budget, when the tokens keep the agent exactly?

A synthetic token world with no tokenizer in the way: each clip is an ``8 x 8`` grid of static random background
tokens, an *agent* token that moves one cell per step in the direction its action says (18 Atari joystick actions:
noop, fire, the 8 directions, and each of them with fire), and a *distractor* token that moves on its own (a random
direction each step). Clips are drawn fresh for every batch, so there is no overfitting and no held-out split to
keep. The dynamics model (the ``tiny`` preset unless overridden) trains on them as ``wm-video train dynamics`` does
(``compute_loss``, AdamW at the preset's learning rate and warm-up), and every ``--eval-every`` steps reports the
teacher-forced accuracy on the agent's target cell (the token that the action decides) with the clip's true actions
and with another clip's actions, and the accuracy on every token that changes.

If the model learns the agent's cell with true actions and not with shuffled ones within the suite's 600 steps, the
architecture and the action pathway follow actions, and what the suite's models miss is in the data or the tokens;
if it does not, the action pathway or the budget is the limit.

    python eval/fidelity/experiments/synthetic_agent.py --steps 600 --out docs/results/fidelity/synthetic_agent.json
    python eval/fidelity/experiments/synthetic_agent.py --steps 600 --set action_init=zero cond_dim=256
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time

import torch
from tqdm import tqdm

from wm_video.models.dynamics.model import DynamicsModel
from wm_video.training.optim import build_optimizer
from wm_video.training.presets import dynamics_tiny, train_dynamics_tiny
from wm_video.utils.machine import machine_record

AGENT, DISTRACTOR, BACKGROUND = 255, 254, 200  # background tokens are drawn from [0, BACKGROUND)
# the 18 Atari joystick actions as (row, column) steps: NOOP, FIRE, UP, RIGHT, LEFT, DOWN, UPRIGHT, UPLEFT,
# DOWNRIGHT, DOWNLEFT, then the same eight directions with FIRE
_DIRS = [(0, 0), (0, 0), (-1, 0), (0, 1), (0, -1), (1, 0), (-1, 1), (-1, -1), (1, 1), (1, -1)]
MOVES = torch.tensor(_DIRS + _DIRS[2:])


def make_batch(b: int, t: int, grid: int, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``b`` clips of ``t`` frames: tokens ``(b, t, grid, grid)``, actions ``(b, t)`` (action ``i`` moves the agent
    between frames ``i`` and ``i + 1``), and ``agent`` ``(b, t, 2)``, the agent's cell in each frame."""
    background = torch.randint(0, BACKGROUND, (b, grid, grid), generator=gen)
    actions = torch.randint(0, len(MOVES), (b, t), generator=gen)
    pos = torch.randint(0, grid, (b, 2), generator=gen)
    other = torch.randint(0, grid, (b, 2), generator=gen)
    tokens, agent = [], []
    rows = torch.arange(b)
    for i in range(t):
        frame = background.clone()
        frame[rows, other[:, 0], other[:, 1]] = DISTRACTOR
        frame[rows, pos[:, 0], pos[:, 1]] = AGENT  # the agent is drawn over the distractor
        tokens.append(frame)
        agent.append(pos.clone())
        pos = (pos + MOVES[actions[:, i]]).clamp(0, grid - 1)
        other = (other + MOVES[torch.randint(2, 10, (b,), generator=gen)]).clamp(0, grid - 1)
    return {"tokens": torch.stack(tokens, 1), "actions": actions, "agent": torch.stack(agent, 1)}


@torch.no_grad()
def evaluate(model: DynamicsModel, batch: dict[str, torch.Tensor]) -> dict[str, float]:
    """Teacher-forced (one-shot, argmax) accuracy on the agent's cell and on every changed token, with the true
    actions and with the batch's actions rolled by one clip (each clip gets another clip's actions)."""
    model.eval()
    tokens, agent = batch["tokens"], batch["agent"]
    b, t = tokens.shape[:2]
    out = {}
    for name, actions in (("true", batch["actions"]), ("shuffled", batch["actions"].roll(1, 0))):
        pred = model(tokens, actions, mask_ratio=1.0).logits.argmax(-1)  # (b, t-1, h, w)
        target = tokens[:, 1:]
        bi = torch.arange(b)[:, None].expand(b, t - 1)
        ti = torch.arange(t - 1)[None].expand(b, t - 1)
        at = agent[:, 1:]
        out[f"agent_cell_acc_{name}"] = (pred[bi, ti, at[..., 0], at[..., 1]] == AGENT).float().mean().item()
        changed = target != tokens[:, :-1]
        out[f"changed_acc_{name}"] = (pred[changed] == target[changed]).float().mean().item()
    model.train()
    return out


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], epilog=__doc__.split("\n\n", 1)[1],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=600, help="optimizer steps (the suite's dynamics budget: 600)")
    p.add_argument("--batch", type=int, default=8, help="clips per step (the tiny preset's 8)")
    p.add_argument("--frames", type=int, default=8, help="frames per clip (the tiny preset's train_frames, 8)")
    p.add_argument("--eval-every", type=int, default=100)
    p.add_argument("--eval-clips", type=int, default=64)
    p.add_argument("--lr", type=float, default=None, help="peak learning rate (default: the tiny preset's)")
    p.add_argument("--set", nargs="*", default=[], metavar="FIELD=VALUE",
                   help="DynamicsConfig fields to change (numbers, true/false or strings)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--out", help="write the curve and settings as JSON here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    overrides = {}
    for item in args.set:
        key, value = item.split("=", 1)
        overrides[key] = json.loads(value) if value[:1] in "0123456789-tf[" else value
    config = dataclasses.replace(dynamics_tiny(), action_type="discrete", num_actions=len(MOVES), **overrides)
    model = DynamicsModel(config)
    optim = train_dynamics_tiny().optim
    if args.lr:
        optim = dataclasses.replace(optim, lr=args.lr)
    opt, sched = build_optimizer(model, optim, args.steps)  # what train dynamics uses: AdamW, warm-up, cosine
    sched = sched["scheduler"]
    train_gen, eval_gen = torch.Generator().manual_seed(args.seed), torch.Generator().manual_seed(10_000 + args.seed)
    held = make_batch(args.eval_clips, args.frames, config.token_h, eval_gen)
    curve, start = [], time.process_time()
    for step in tqdm(range(args.steps + 1), desc="synthetic agent", unit="step"):
        if step % args.eval_every == 0 or step == args.steps:
            row = {"step": step, "cpu_s": round(time.process_time() - start, 1), **evaluate(model, held)}
            curve.append(row)
            tqdm.write(json.dumps(row))
        if step == args.steps:
            break
        loss, _ = model.compute_loss(make_batch(args.batch, args.frames, config.token_h, train_gen))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
    report = {"protocol": __doc__.split("\n\n")[1], "settings": {**vars(args), "lr": optim.lr, "overrides": overrides},
              "machine": machine_record(), "curve": curve}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(report, f, indent=2)
    return report


if __name__ == "__main__":
    main()
