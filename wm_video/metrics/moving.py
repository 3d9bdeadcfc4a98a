"""Scores restricted to what moves: PSNR over the pixels that change, token accuracy over the tokens that change.

A world model's frames are mostly static background; whole-frame PSNR hardly notices a missing ball, paddle or arm
(Breakout: 0.4% of the pixels change from one frame to the next). These scores look only where the truth changes
between consecutive frames, so they measure the part of the frame an agent controls.

- A pixel *moves* at step ``i`` when any channel of the true frame ``i`` differs from the true frame ``i - 1`` by
  more than ``MOVING_THRESHOLD`` (8/255 of the 0-255 range, in [-1, 1] units): what codec and resize noise stay
  under.
- A token *changes* when the tokenizer's token of the true frame ``i`` differs from the one at the same position of
  frame ``i - 1``.

Both are pooled: squared errors (or hits) are summed over every moving pixel (changing token) of every clip at a
horizon, then turned into one PSNR (accuracy). A per-frame mean would be dominated by frames where only a handful of
pixels move.
"""

from __future__ import annotations

import math

import torch

MOVING_THRESHOLD = 16 / 255  # 8 grey levels, in [-1, 1] units


def moving_mask(prev: torch.Tensor, cur: torch.Tensor, threshold: float = MOVING_THRESHOLD) -> torch.Tensor:
    """Frames ``(b, 3, h, w)`` in [-1, 1] -> ``(b, 3, h, w)`` bool: every channel of the pixels where any channel of
    ``cur`` differs from ``prev`` by more than ``threshold``."""
    return ((cur.float() - prev.float()).abs() > threshold).any(1, keepdim=True).expand_as(cur)


def pooled_psnr(squared_error: float, count: int, data_range: float = 2.0) -> float:
    """PSNR in dB of ``count`` values whose squared errors sum to ``squared_error``; NaN when ``count`` is 0 (nothing
    moved: there is nothing to score, and 0 or infinity would both mislead)."""
    if count == 0:
        return float("nan")
    return 10 * math.log10(data_range**2 / max(squared_error / count, 1e-10))


class MovingScores:
    """Running sums of the moving-pixel squared error and the changed-token hits, at one horizon step."""

    def __init__(self) -> None:
        self.se, self.px, self.hits, self.changed = 0.0, 0, 0, 0

    def add_pixels(self, pred: torch.Tensor, truth: torch.Tensor, prev_truth: torch.Tensor) -> None:
        """``pred``, ``truth``, ``prev_truth``: ``(b, 3, h, w)`` in [-1, 1]."""
        mask = moving_mask(prev_truth, truth)
        self.se += float(((pred.float() - truth.float()) ** 2)[mask].sum())
        self.px += int(mask.sum())

    def add_tokens(self, tokens: torch.Tensor, true_tokens: torch.Tensor, prev_true_tokens: torch.Tensor) -> None:
        """``(b, h', w')`` token ids each."""
        changed = true_tokens != prev_true_tokens
        self.hits += int((tokens == true_tokens)[changed].sum())
        self.changed += int(changed.sum())

    @property
    def psnr_db(self) -> float:
        return pooled_psnr(self.se, self.px)

    @property
    def token_accuracy(self) -> float:
        return self.hits / self.changed if self.changed else float("nan")
