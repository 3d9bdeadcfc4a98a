"""Held-out quality of a dynamics export on token shards: next-frame tokens, reward, termination, actions.

    python eval/dynamics/eval_dynamics.py --dynamics runs/dyn_breakout/export --data data/breakout_tokens \
        --out runs/dyn_breakout/eval.json

Protocol (recorded in the output). Held-out clips are those of the last shards, the split training used
(``--val-fraction``, default 0.1), each cut to its last ``context_frames`` frames (a clip that ends its
episode ends with the termination). Every frame 1..t-1 of every clip is predicted in one shot from its clean
past and the true action (``mask_ratio=1``, argmax):

- next-frame token accuracy, against the baseline that copies the last frame's tokens; also on the tokens that
  change between the two frames (where copying is always wrong);
- reward F1: a step is predicted rewarding when the expected reward exceeds half the smallest non-zero
  |reward| in the data (0.5 for Atari's clipped rewards); the majority baseline predicts "no reward" (F1 0);
- termination AUROC of the termination probability; the majority baseline (never terminates) scores 0.5;
- action sensitivity: the token cross-entropy with the true actions, against the same clips with their action
  sequences shuffled across clips, and with the null action.
"""

from __future__ import annotations

import argparse
import datetime
import platform
import time

import torch
import torch.nn.functional as F
from torchmetrics.functional.classification import binary_auroc, binary_f1_score

from wm_video.data.loader import heldout_loader
from wm_video.data.split import VAL_FRACTION_HELP
from wm_video.models.dynamics import DynamicsModel
from wm_video.utils import emit_json


def _token_ce(model: DynamicsModel, tokens: torch.Tensor, actions: torch.Tensor | None) -> tuple[torch.Tensor, ...]:
    out = model(tokens, actions, mask_ratio=1.0)
    logits, target = out.logits.float(), tokens[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="sum")
    return ce, logits.argmax(-1), out


@torch.no_grad()
def evaluate(dynamics: str, data: str, val_fraction: float | None = None, batch_size: int = 8,
             max_clips: int | None = None, seed: int = 0) -> dict:
    model = DynamicsModel.from_pretrained(dynamics).eval()
    loader, split = heldout_loader(data, val_fraction, batch_size)
    gen = torch.Generator().manual_seed(seed)
    window = model.config.context_frames
    sums = {"correct": 0.0, "copy_correct": 0.0, "changed": 0.0, "changed_correct": 0.0,
            "ce_true": 0.0, "ce_shuffled": 0.0, "ce_null": 0.0, "tokens": 0.0}
    rewards, reward_pred, terms, term_prob = [], [], [], []
    clips, t0 = 0, time.perf_counter()
    for batch in loader:
        tokens = batch["tokens"][:, -window:]
        actions = batch.get("actions")
        actions = actions[:, -window:] if actions is not None else None
        ce, pred, out = _token_ce(model, tokens, actions)
        target, last = tokens[:, 1:], tokens[:, :-1]
        changed = target != last
        sums["correct"] += float((pred == target).sum())
        sums["copy_correct"] += float((~changed).sum())
        sums["changed"] += float(changed.sum())
        sums["changed_correct"] += float((pred == target)[changed].sum())
        sums["tokens"] += target.numel()
        sums["ce_true"] += float(ce)
        if actions is not None:
            order = torch.randperm(len(tokens), generator=gen)
            perm = torch.empty_like(order)
            perm[order] = order.roll(-1)  # a random cyclic derangement: no clip keeps its own actions
            sums["ce_shuffled"] += float(_token_ce(model, tokens, actions[perm])[0])
            sums["ce_null"] += float(_token_ce(model, tokens, None)[0])
        if "rewards" in batch:
            rewards.append(batch["rewards"][:, -window:].flatten())
            reward_pred.append(out.reward.flatten().float())
        if "terminations" in batch:
            terms.append(batch["terminations"][:, -window:].flatten())
            term_prob.append(out.termination_logits.float().sigmoid().flatten())
        clips += len(tokens)
        if max_clips and clips >= max_clips:
            break
    n = sums["tokens"]
    result: dict = {
        "dynamics": str(dynamics), "data": str(data), "heldout_shards": len(split.heldout.shards),
        "split": split.rule, "clips": clips,
        "frames_per_clip": int(tokens.shape[1]), "predicted_tokens": int(n),
        "next_frame_token_acc": sums["correct"] / n, "copy_last_frame_acc": sums["copy_correct"] / n,
        "changed_token_fraction": sums["changed"] / n,
        "changed_token_acc": sums["changed_correct"] / max(sums["changed"], 1),
        "token_ce_true_actions": sums["ce_true"] / n,
    }
    if sums["ce_shuffled"]:
        result.update(token_ce_shuffled_actions=sums["ce_shuffled"] / n, token_ce_null_action=sums["ce_null"] / n)
    if rewards:
        r, p = torch.cat(rewards), torch.cat(reward_pred)
        nonzero = r[r != 0].abs()
        threshold = 0.5 * float(nonzero.min()) if len(nonzero) else 0.5
        result.update(reward_steps=len(r), reward_positive=int((r.abs() >= threshold).sum()),
                      reward_f1=float(binary_f1_score((p.abs() >= threshold).int(), (r.abs() >= threshold).int())),
                      reward_f1_majority=0.0, reward_threshold=threshold)
    if terms:
        y, p = torch.cat(terms).int(), torch.cat(term_prob)
        result.update(termination_steps=len(y), termination_positive=int(y.sum()),
                      termination_auroc=float(binary_auroc(p, y)) if 0 < int(y.sum()) < len(y) else None,
                      termination_auroc_majority=0.5)
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["protocol"] = {"script": "eval/dynamics/eval_dynamics.py", "val_fraction": val_fraction,
                          "prediction": "one-shot (mask_ratio=1), argmax, clean context, true actions",
                          "machine": platform.machine(), "date": datetime.date.today().isoformat()}
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dynamics", required=True, help="export folder (config.json + model.safetensors)")
    parser.add_argument("--data", required=True, help="token-shard folder (wm-video data tokenize)")
    parser.add_argument("--val-fraction", type=float, default=None, help=VAL_FRACTION_HELP)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--max-clips", type=int, default=None)
    parser.add_argument("--out", default=None, help="write the JSON result here")
    args = parser.parse_args()
    result = evaluate(args.dynamics, args.data, args.val_fraction, args.batch_size, args.max_clips)
    emit_json(result, args.out)


if __name__ == "__main__":
    main()
