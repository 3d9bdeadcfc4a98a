"""Held-out scoring of a dynamics model: the one protocol behind ``eval/dynamics/eval_dynamics.py``, fine-tuning's
before/after scores (:mod:`wm_video.training.finetune`) and the end-of-training quality gates
(:mod:`wm_video.training.quality`).

Each clip is cut to the model's last ``context_frames`` frames, and every frame ``1..t-1`` is predicted in one shot
from its clean past and the true actions (``mask_ratio=1``, argmax): the metric of
:meth:`~wm_video.models.dynamics.DynamicsModel.teacher_forced_accuracy`, summed over clips here instead of
averaged per batch. Beside it:

- the copy-last-frame baseline, and the accuracy on the tokens that change between two frames (where copying is
  always wrong);
- action sensitivity: the token cross-entropy (nats per token) with each clip given another clip's actions, and
  with the null action. The other clip is the one before it in the scored set (the first clip takes the last
  one's): a roll by one across the whole set, so batches of one clip still get another clip's actions and the
  figure does not depend on the batch size; a set of one clip gets its own actions reversed in time.
  Deterministic: no seed to record;
- the reward and termination heads' outputs beside the data's values, for the callers' own head metrics.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

PROTOCOL = ("one-shot (mask_ratio=1), argmax, clean context, true actions; clips cut to the last context_frames "
            "frames")


@dataclass
class DynamicsScores:
    """Sums over the scored clips (token counts, correct predictions, cross-entropy in nats) and the heads' outputs.

    ``rewards``/``reward_pred`` and ``terminations``/``termination_prob`` are flat CPU tensors over every scored
    step (None when the data has no such field).
    """

    clips: int = 0
    frames_per_clip: int = 0
    tokens: int = 0
    correct: float = 0.0
    copy_correct: float = 0.0
    changed: float = 0.0
    changed_correct: float = 0.0
    ce: float = 0.0
    ce_shuffled: float | None = None
    correct_shuffled: float | None = None
    ce_null: float | None = None
    heads: dict[str, list[torch.Tensor]] = field(default_factory=dict)

    def head_values(self, name: str) -> torch.Tensor | None:
        """The flat CPU tensor of ``rewards``, ``reward_pred``, ``terminations`` or ``termination_prob``."""
        return torch.cat(self.heads[name]) if self.heads.get(name) else None

    def summary(self) -> dict[str, Any]:
        """Per-token rates: accuracy and cross-entropy with true actions, copy baseline, changed tokens, and (when
        the data has actions) the shuffled- and null-action figures."""
        n = max(self.tokens, 1)
        out: dict[str, Any] = {
            "clips": self.clips, "frames_per_clip": self.frames_per_clip, "predicted_tokens": self.tokens,
            "next_frame_token_acc": self.correct / n, "copy_last_frame_acc": self.copy_correct / n,
            "changed_token_fraction": self.changed / n,
            "changed_token_acc": self.changed_correct / max(self.changed, 1),
            "token_ce_true_actions": self.ce / n}
        if self.ce_shuffled is not None:
            out.update(token_ce_shuffled_actions=self.ce_shuffled / n, token_ce_null_action=self.ce_null / n,
                       next_frame_token_acc_shuffled_actions=self.correct_shuffled / n)
        return out


def other_actions(actions: torch.Tensor, previous: torch.Tensor) -> torch.Tensor:
    """Each clip's action sequence ``(b, t, ...)`` replaced by the clip's before it: ``previous`` ``(1, t, ...)``
    (the clip before the batch) for the first, ``actions[i-1]`` for the others."""
    return torch.cat([previous.to(actions.device), actions[:-1]])


def _token_scores(logits: torch.Tensor, tokens: torch.Tensor) -> tuple[float, float]:
    """(correct predictions, summed cross-entropy) of ``logits`` ``(b, t-1, h, w, k)`` for frames ``1..t-1``."""
    logits, target = logits.float(), tokens[:, 1:]
    ce = F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="sum")
    return float((logits.argmax(-1) == target).sum()), float(ce)


def _add_true(s: DynamicsScores, out: Any, tokens: torch.Tensor, batch: dict[str, Any], window: int) -> None:
    """Add one batch's true-action scores and head outputs to ``s``."""
    correct, ce = _token_scores(out.logits, tokens)
    target, last = tokens[:, 1:], tokens[:, :-1]
    changed = target != last  # where copying the last frame is wrong
    s.correct, s.ce, s.tokens = s.correct + correct, s.ce + ce, s.tokens + target.numel()
    s.copy_correct += float((~changed).sum())
    s.changed += float(changed.sum())
    s.changed_correct += float((out.logits.argmax(-1) == target)[changed].sum())
    if "rewards" in batch:
        s.heads.setdefault("rewards", []).append(batch["rewards"][:, -window:].flatten().float().cpu())
        s.heads.setdefault("reward_pred", []).append(out.reward.flatten().float().cpu())
    if "terminations" in batch:
        s.heads.setdefault("terminations", []).append(batch["terminations"][:, -window:].flatten().int().cpu())
        s.heads.setdefault("termination_prob", []).append(out.termination_logits.float().sigmoid().flatten().cpu())
    s.clips += len(tokens)
    s.frames_per_clip = int(tokens.shape[1])


def _add_other(s: DynamicsScores, model: Any, tokens: torch.Tensor, other: torch.Tensor,
               domain: str | None = None, text: torch.Tensor | None = None) -> None:
    """Add one batch's scores with other clips' actions (and the batch's own text) to ``s``."""
    correct, ce = _token_scores(model(tokens, other, mask_ratio=1.0, domain=domain, text=text).logits, tokens)
    s.ce_shuffled = (s.ce_shuffled or 0.0) + ce
    s.correct_shuffled = (s.correct_shuffled or 0.0) + correct


@torch.no_grad()
def score_dynamics(model: Any, batches: Iterable[dict[str, Any]], max_batches: int | None = None,
                   max_clips: int | None = None, action_gaps: bool = True) -> DynamicsScores:
    """Score ``model`` (a :class:`~wm_video.models.dynamics.DynamicsModel`, where it is) on ``batches`` of token
    clips (``tokens`` ``(b, t, h, w)``, optional ``actions`` ``(b, t)`` or ``(b, t, a)``, ``rewards``,
    ``terminations``; ``domain``, the action domain of a multi-domain model's batch: absent, its only one;
    ``text_embeddings`` ``(b, text_dim)``, a text model's task texts: absent, no text).
    ``action_gaps`` swaps actions between clips, so their batches must all be of one domain.

    Args:
        max_batches: stop after this many batches (None: all).
        max_clips: stop once this many clips are scored, finishing the batch (None: all).
        action_gaps: also score with other clips' actions and with the null action (two more forward passes per
            batch). Each clip gets the actions of the clip before it in the scored set, the first clip those of the
            last (its batch is scored at the end), so the result does not depend on the batch size; a set of one
            clip gets its own actions reversed in time.

    Leaves the model in the mode it found it.
    """
    was_training = model.training
    model.eval()
    device, window = next(model.parameters()).device, model.config.context_frames
    s = DynamicsScores()
    first: tuple[torch.Tensor, torch.Tensor, torch.Tensor | None] | None = None  # the first batch's tokens, ...
    previous: torch.Tensor | None = None  # the last clip's actions so far, (1, t, ...)
    try:
        for i, batch in enumerate(batches):
            if (max_batches is not None and i >= max_batches) or (max_clips and s.clips >= max_clips):
                break
            tokens = batch["tokens"][:, -window:].to(device)  # (b, t, h, w)
            actions = batch.get("actions")
            actions = actions[:, -window:].to(device) if actions is not None else None
            domain, text = batch.get("domain"), batch.get("text_embeddings")
            text = text.to(device) if text is not None else None
            _add_true(s, model(tokens, actions, mask_ratio=1.0, domain=domain, text=text), tokens, batch, window)
            if actions is None or not action_gaps:
                continue
            _, ce_null = _token_scores(model(tokens, None, mask_ratio=1.0, domain=domain, text=text).logits, tokens)
            s.ce_null = (s.ce_null or 0.0) + ce_null
            if previous is None:
                first = (tokens, actions, text)  # scored last, with the last clip's actions before it
            else:
                _add_other(s, model, tokens, other_actions(actions, previous), domain, text)
            previous = actions[-1:]
        if first is not None:
            tokens, actions, text = first
            lone = s.clips == 1  # no other clip: its own actions, reversed in time
            _add_other(s, model, tokens, actions.flip(1) if lone else other_actions(actions, previous), domain,
                       text)
    finally:
        model.train(was_training)
    return s
