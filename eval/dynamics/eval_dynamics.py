"""Held-out quality of a dynamics export on token shards: next-frame tokens, reward, termination, actions.

    python eval/dynamics/eval_dynamics.py --dynamics runs/dyn_breakout/export --data data/breakout_tokens \
        --out runs/dyn_breakout/eval.json

Protocol (recorded in the output): :func:`wm_video.evaluation.dynamics_scores.score_dynamics`, the one that
fine-tuning and the end-of-training quality gates use. Held-out clips are those training held out
(``--val-fraction``; default: the split ``dataset.json`` records), each cut to its last ``context_frames`` frames
(a clip that ends its episode ends with the termination). Every frame 1..t-1 of every clip is predicted in one
shot from its clean past and the true action (``mask_ratio=1``, argmax):

- next-frame token accuracy, against the baseline that copies the last frame's tokens; also on the tokens that
  change between the two frames (where copying is always wrong);
- reward F1: a step is predicted rewarding when the expected reward exceeds half the smallest non-zero
  |reward| in the data (0.5 for Atari's clipped rewards); the majority baseline predicts "no reward" (F1 0);
- termination AUROC of the termination probability; the majority baseline (never terminates) scores 0.5;
- action sensitivity: the token cross-entropy with the true actions, against the same clips each given the
  previous held-out clip's actions (so batches of one clip too), and with the null action.
"""

from __future__ import annotations

import argparse
import time

import torch
from torchmetrics.functional.classification import binary_auroc, binary_f1_score

from wm_video.data.loader import heldout_loader
from wm_video.data.split import VAL_FRACTION_HELP
from wm_video.evaluation.dynamics_scores import PROTOCOL, DynamicsScores, score_dynamics
from wm_video.models.dynamics import DynamicsModel
from wm_video.utils import emit_json
from wm_video.utils.machine import machine_record


def head_metrics(s: DynamicsScores) -> dict:
    """Reward F1 and termination AUROC, each beside its majority baseline (empty when the data lacks the field)."""
    out: dict = {}
    r, p = s.head_values("rewards"), s.head_values("reward_pred")
    if r is not None:
        nonzero = r[r != 0].abs()
        threshold = 0.5 * float(nonzero.min()) if len(nonzero) else 0.5
        out.update(reward_steps=len(r), reward_positive=int((r.abs() >= threshold).sum()),
                   reward_f1=float(binary_f1_score((p.abs() >= threshold).int(), (r.abs() >= threshold).int())),
                   reward_f1_majority=0.0, reward_threshold=threshold)
    y, prob = s.head_values("terminations"), s.head_values("termination_prob")
    if y is not None:
        out.update(termination_steps=len(y), termination_positive=int(y.sum()),
                   termination_auroc=float(binary_auroc(prob, y)) if 0 < int(y.sum()) < len(y) else None,
                   termination_auroc_majority=0.5)
    return out


@torch.no_grad()
def evaluate(dynamics: str, data: str, val_fraction: float | None = None, batch_size: int = 8,
             max_clips: int | None = None) -> dict:
    model = DynamicsModel.from_pretrained(dynamics).eval()
    loader, split = heldout_loader(data, val_fraction, batch_size)
    t0 = time.perf_counter()
    scores = score_dynamics(model, loader, max_clips=max_clips)
    summary = scores.summary()
    summary.pop("next_frame_token_acc_shuffled_actions", None)  # not part of this script's report
    result: dict = {"dynamics": str(dynamics), "data": str(data), "heldout_shards": len(split.heldout.shards),
                    "split": split.rule, **summary, **head_metrics(scores)}
    result["seconds"] = round(time.perf_counter() - t0, 1)
    result["protocol"] = {"script": "eval/dynamics/eval_dynamics.py", "val_fraction": val_fraction,
                          "prediction": PROTOCOL, "shuffled_actions": "the previous held-out clip's",
                          **machine_record()}
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
