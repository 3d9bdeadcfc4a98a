"""Verdicts on an evaluation report: does the world model beat copy-last-frame, and does it follow its actions?

The targets (issue 18, the fidelity suite's):

- ``beats_copy``: the model's PSNR beats copy-last-frame at every horizon, by at least ``copy_margin_db`` at the last;
- ``follows_actions``: PSNR with the true actions beats PSNR with shuffled actions (each clip given another clip's
  actions) by at least ``action_margin_db``, averaged over the horizons;
- ``near_ceiling``: h=1 is within ``ceiling_gap_db`` of the tokenizer ceiling (the best any token prediction can do);
- ``tokens_keep_motion``: the tokenizer ceiling's PSNR on the pixels that move is at least ``moving_ceiling_db``, so
  what the agent controls survives tokenization.

A verdict whose rows the report lacks (no shuffled row on an action-free dataset) is ``None``, with a note saying why.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Targets:
    """The thresholds of the module docstring, in dB."""

    copy_margin_db: float = 2.0
    action_margin_db: float = 1.5
    ceiling_gap_db: float = 2.0
    moving_ceiling_db: float = 25.0


def _mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def verdicts(report: dict[str, Any], targets: Targets = Targets()) -> dict[str, Any]:
    """The verdicts of the module docstring, with the margins behind them, from an evaluation report
    (:func:`wm_video.evaluation.evaluate_world_model`)."""
    res = report["results"]
    model, copy = res["model"]["psnr_db"], res["copy_last_frame"]["psnr_db"]
    margins = [m - c for m, c in zip(model, copy, strict=True)]
    out: dict[str, Any] = {"targets": asdict(targets), "copy_margin_db": [round(x, 2) for x in margins],
                           "beats_copy": all(x > 0 for x in margins) and margins[-1] >= targets.copy_margin_db}
    if "shuffled_actions" in res:
        gap = _mean([m - s for m, s in zip(model, res["shuffled_actions"]["psnr_db"], strict=True)])
        out.update(action_margin_db=round(gap, 2), follows_actions=gap >= targets.action_margin_db)
    else:
        out.update(action_margin_db=None, follows_actions=None,
                   follows_actions_note=report.get("notes", {}).get("shuffled_actions", "no shuffled-actions row"))
    ceiling = res.get("tokenizer_ceiling")
    if ceiling:
        gap = ceiling["psnr_db"][0] - model[0]
        moving = [v for v in ceiling.get("psnr_moving_db", []) if v is not None]
        out.update(ceiling_gap_h1_db=round(gap, 2), near_ceiling=gap <= targets.ceiling_gap_db,
                   ceiling_moving_db=round(_mean(moving), 2) if moving else None,
                   tokens_keep_motion=bool(moving) and _mean(moving) >= targets.moving_ceiling_db)
    return out


def format_verdicts(v: dict[str, Any]) -> str:
    """Plain lines, one per verdict, each with its margin and target."""
    t = v["targets"]

    def word(ok: bool | None) -> str:
        return "n/a" if ok is None else "YES" if ok else "NO"

    lines = [f"beats copy-last-frame (every horizon, >= {t['copy_margin_db']} dB at the last): "
             f"{word(v['beats_copy'])} (margins {v['copy_margin_db']} dB)"]
    if v["follows_actions"] is None:
        lines.append(f"follows its actions: n/a ({v.get('follows_actions_note')})")
    else:
        lines.append(f"follows its actions (true - shuffled >= {t['action_margin_db']} dB, mean over horizons): "
                     f"{word(v['follows_actions'])} ({v['action_margin_db']:+.2f} dB)")
    if "near_ceiling" in v:
        lines.append(f"h=1 within {t['ceiling_gap_db']} dB of the tokenizer ceiling: {word(v['near_ceiling'])} "
                     f"({v['ceiling_gap_h1_db']:.2f} dB below)")
        lines.append(f"tokens keep what moves (ceiling PSNR on moving pixels >= {t['moving_ceiling_db']} dB): "
                     f"{word(v['tokens_keep_motion'])} ({v['ceiling_moving_db']} dB)")
    return "\n".join(lines)
