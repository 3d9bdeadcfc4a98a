"""The end of every ``wm-video train`` verb: how training stopped, held-out metrics beside their baselines, and the
quality gates that name a part that came out unusable before anything is built on it.

:func:`finish_training` runs on the main process once the part is exported (and, with only the stop record, when
the preemption signal stopped training). It prints a summary block and writes it to ``OUT/train_summary.json``; the
metrics and gate verdicts also go to ``OUT/export/quality.json``, which travels with the part (``wm-video export``
copies it into a world-model folder, where ``WorldModel.head_quality`` gives generation the dynamics heads'
verdicts, and ``data tokenize`` reads the tokenizer's held-out PSNR from it).

Gates never raise: a failed one logs a WARNING starting with ``QUALITY GATE FAILED:`` and is recorded with
``passed: false`` and the reason; ``passed: null`` means it could not apply (nothing held out, no rewards in the
data). Metrics come from at most ``quality.eval_batches`` batches of the held-out clips (the split validation
uses), all of them read on the main process:

- tokenizer: codebook usage (share of the vocabulary used at least once on the held-out frames) and reconstruction
  PSNR (per frame, peak-to-peak 2 in [-1, 1], averaged), each against a floor;
- dynamics: teacher-forced next-frame token accuracy (every frame predicted in one shot from its clean past and
  its true action, argmax, clips cut to the model's window: the metric of ``DynamicsModel.teacher_forced_accuracy``)
  against copying the last frame; the reward head's mean squared error against predicting the held-out mean reward
  (the best constant guess), when the data has rewards; the termination head's AUROC against the 0.5 of the
  majority ("never ends") baseline, when the data has terminations;
- decoder: PSNR of its 1-step render of the held-out frames' tokens against the VQ decoder's render of them.
"""

from __future__ import annotations

import datetime
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.callbacks import Timer
from torchmetrics.functional.classification import binary_auroc

from wm_video.data.tokenizer_fit import GATE_PREFIX, frame_psnr
from wm_video.evaluation.dynamics_scores import score_dynamics
from wm_video.models.export import QUALITY
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

SUMMARY = "train_summary.json"


@dataclass
class QualityConfig:
    """Floors of the quality gates run at the end of training.

    Args:
        eval_batches: held-out batches scored, at most (batches of the run's ``loader.batch_size`` clips).
        min_codebook_usage: tokenizer: share of the codebook used on the held-out frames (0.10; a collapsed
            tokenizer that draws flat colour uses about 0.02, healthy ones 0.5 and more).
        min_psnr_db: tokenizer: held-out reconstruction PSNR in dB (20; the small presets reach 28-45 on Atari and
            Meta-World).
        min_reward_gain: dynamics: the reward head must cut the mean squared error of the mean-reward guess by at
            least this share (0.05).
        min_termination_auroc: dynamics: the termination head's AUROC must exceed this (0.55; the majority
            baseline scores 0.5).
        max_decoder_psnr_drop_db: decoder: its 1-step render may fall at most this many dB below the VQ decoder's
            (3).
    """

    eval_batches: int = 8
    min_codebook_usage: float = 0.10
    min_psnr_db: float = 20.0
    min_reward_gain: float = 0.05
    min_termination_auroc: float = 0.55
    max_decoder_psnr_drop_db: float = 3.0


def gate(passed: bool | None, value: float | None, baseline: float | None, baseline_name: str, reason: str
         ) -> dict[str, Any]:
    """One gate's record: ``value`` set against ``baseline`` (a floor or a baseline model's score)."""
    return {"passed": passed, "value": value, "baseline": baseline, "baseline_name": baseline_name, "reason": reason}


def _bounded(batches: Iterable[dict[str, Any]], n: int) -> Iterator[dict[str, Any]]:
    for i, batch in enumerate(batches):
        if i >= n:
            return
        yield batch


# ---- the parts' held-out metrics and gates ------------------------------------------------------------------------


@torch.no_grad()
def assess_tokenizer(model: Any, batches: Iterable[dict[str, Any]], q: QualityConfig) -> dict[str, Any]:
    device, counts, psnrs = next(model.parameters()).device, torch.zeros(model.vocab_size, dtype=torch.long), []
    for batch in _bounded(batches, q.eval_batches):
        x = to_model_frames(batch["frames"]).to(device)  # (b, t, c, h, w)
        out = model(x)
        psnrs.append(frame_psnr(x, out.recon).cpu())
        counts += torch.bincount(out.tokens.flatten().cpu(), minlength=model.vocab_size)
    p = counts.float() / counts.sum().clamp(min=1)
    usage = float((counts > 0).float().mean())
    m = {"frames": sum(len(v) for v in psnrs), "psnr_db": float(torch.cat(psnrs).mean()), "codebook_usage": usage,
         "codes_used": int((counts > 0).sum()), "vocab_size": model.vocab_size,
         "perplexity": float(torch.exp(-(p * p.clamp(min=1e-12).log()).sum()))}
    return {"metrics": m, "gates": {
        "codebook_usage": gate(usage >= q.min_codebook_usage, usage, q.min_codebook_usage, "floor",
                               f"{m['codes_used']} of {model.vocab_size} codes used on {m['frames']} held-out frames"),
        "psnr_db": gate(m["psnr_db"] >= q.min_psnr_db, m["psnr_db"], q.min_psnr_db, "floor",
                        f"reconstruction PSNR (dB) on {m['frames']} held-out frames")}}


@torch.no_grad()
def assess_dynamics(model: Any, batches: Iterable[dict[str, Any]], q: QualityConfig,
                    stats: dict[str, Any] | None = None) -> dict[str, Any]:
    """``stats``: the dataset's statistics (``dataset.json``), which say whether the data has rewards that vary and
    terminations at all (a head the data never taught is not applicable, not failed). Scored by
    :func:`~wm_video.evaluation.dynamics_scores.score_dynamics` on at most ``q.eval_batches`` batches."""
    s = score_dynamics(model, batches, max_batches=q.eval_batches, action_gaps=False)
    n = max(s.tokens, 1)
    m: dict[str, Any] = {"predicted_tokens": s.tokens, "token_acc": s.correct / n,
                         "copy_last_frame_acc": s.copy_correct / n}
    gates = {"token_accuracy": gate(m["token_acc"] > m["copy_last_frame_acc"], m["token_acc"],
                                    m["copy_last_frame_acc"], "copy-last-frame",
                                    f"teacher-forced next-frame token accuracy on {s.tokens} held-out tokens")}
    stats = stats or {}
    reward_std = ((stats.get("rewards") or {}).get("std") or [None])[0]
    r, pred = s.head_values("rewards"), s.head_values("reward_pred")
    if r is not None and (reward_std is None or reward_std > 0):
        mse, base = float((pred - r).pow(2).mean()), float((r - r.mean()).pow(2).mean())
        m.update(reward_mse=mse, reward_mse_mean_guess=base, reward_mae=float((pred - r).abs().mean()))
        if base == 0:
            gates["reward_head"] = gate(False, mse, base, "mean-reward guess", f"the {len(r)} held-out rewards are "
                                        "all equal: the head cannot be checked")
        else:
            gates["reward_head"] = gate(mse <= (1 - q.min_reward_gain) * base, mse, base, "mean-reward guess",
                                        f"reward MSE on {len(r)} held-out steps must be at most "
                                        f"{1 - q.min_reward_gain:.2f} x the mean guess's")
    y, prob = s.head_values("terminations"), s.head_values("termination_prob")
    if y is not None and stats.get("terminations", 1) > 0:
        positives = int(y.sum())
        m.update(termination_steps=len(y), termination_positive=positives)
        if 0 < positives < len(y):
            m["termination_auroc"] = auroc = float(binary_auroc(prob, y))
            gates["termination_head"] = gate(auroc > q.min_termination_auroc, auroc, q.min_termination_auroc,
                                             "floor (majority 0.5)", f"AUROC over {len(y)} held-out steps, "
                                             f"{positives} terminal")
        else:
            gates["termination_head"] = gate(False, None, q.min_termination_auroc, "floor (majority 0.5)",
                                             f"{positives} of {len(y)} held-out steps are terminal: the head cannot "
                                             "be checked")
    heads = {name: (gates[f"{name}_head"]["passed"] if f"{name}_head" in gates else None)
             for name in ("reward", "termination")}
    return {"metrics": m, "gates": gates, "heads": heads}


@torch.no_grad()
def assess_decoder(model: Any, tokenizer: Any, batches: Iterable[dict[str, Any]], q: QualityConfig,
                   frames_per_clip: int = 4, seed: int = 0) -> dict[str, Any]:
    device = next(model.parameters()).device
    tokenizer = tokenizer.to(device).eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    vq, rendered = [], []
    for batch in _bounded(batches, q.eval_batches):
        x = to_model_frames(batch["frames"][:, :frames_per_clip]).to(device)  # consecutive: prev-frame decoders
        tokens = tokenizer.tokenize(x)
        vq.append(frame_psnr(x, tokenizer.detokenize(tokens)).cpu())
        rendered.append(frame_psnr(x, model.render(tokens, num_inference_steps=1, generator=gen)).cpu())
    m = {"frames": sum(len(v) for v in vq), "psnr_1step_db": float(torch.cat(rendered).mean()),
         "psnr_vq_db": float(torch.cat(vq).mean())}
    floor = m["psnr_vq_db"] - q.max_decoder_psnr_drop_db
    return {"metrics": m, "gates": {"psnr_1step_db": gate(
        m["psnr_1step_db"] >= floor, m["psnr_1step_db"], m["psnr_vq_db"], "VQ decoder",
        f"1-step render PSNR on {m['frames']} held-out frames, at most {q.max_decoder_psnr_drop_db:g} dB below "
        "the VQ decoder's")}}


# ---- the end of a run ---------------------------------------------------------------------------------------------


def stop_record(trainer: Any, max_steps: int, max_minutes: float | None, preempted: bool = False,
                fit_seconds: float | None = None) -> dict[str, Any]:
    """Steps done out of planned and why training stopped: ``step budget``, ``time cap`` (``trainer.max_minutes``,
    warned about), ``preemption`` or ``other``; ``fit_seconds``: this invocation's wall-clock time in ``fit``;
    ``capped_seconds`` (only with a time cap): the training time the cap counts, over every resume."""
    steps = int(trainer.global_step)
    timer = next((c for c in trainer.callbacks if isinstance(c, Timer)), None)
    remaining = timer.time_remaining() if timer is not None else None
    if preempted:
        reason = "preemption"
    elif steps >= max_steps:
        reason = "step budget"
    elif remaining is not None and remaining <= 0:
        reason = "time cap"
    else:
        reason = "other"
    record = {"steps_done": steps, "max_steps": max_steps, "stop_reason": reason, "max_minutes": max_minutes,
              "capped_seconds": round(timer.time_elapsed(), 1) if timer is not None else None,
              "fit_seconds": None if fit_seconds is None else round(fit_seconds, 1)}
    if reason == "time cap":
        log.warning("TRAINING CUT SHORT: the time cap trainer.max_minutes=%g stopped training after %d of %d planned "
                    "optimizer steps (%.0f%%; the cap counts training time over every resume of this run). The "
                    "schedule was planned for %d steps: rerun with a larger trainer.max_minutes (or none) to resume",
                    max_minutes, steps, max_steps, 100 * steps / max(max_steps, 1), max_steps)
    return record


def finish_training(what: str, out: str | Path, export: Path | None, stop: dict[str, Any],
                    assess: Callable[[Any, Iterable[dict[str, Any]]], dict[str, Any]] | None = None,
                    model: Any = None, heldout: Iterable[dict[str, Any]] | None = None,
                    device: str = "cpu") -> dict[str, Any]:
    """Score ``model`` with ``assess(model, heldout)`` (on ``device``), warn for each failed gate, print the summary,
    write ``out/train_summary.json`` and ``export/quality.json``; returns the summary. No export (preemption): the
    stop record only."""
    summary: dict[str, Any] = {"part": what, "run": str(out), "export": str(export) if export else None, **stop,
                               "metrics": None, "gates": {}, "passed": None,
                               "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}
    if export is not None and assess is not None and model is not None and heldout is not None:
        where, was_training = next(model.parameters()).device, model.training
        model.to(device).eval()
        try:
            summary.update(assess(model, heldout))
        except Exception as e:  # the export is written and other ranks wait at a barrier: report, do not raise
            log.exception("%s %s: the held-out assessment itself failed", GATE_PREFIX, what)
            summary["gates"] = {"assessment": gate(False, None, None, "n/a", f"{type(e).__name__}: {e}")}
        finally:
            model.to(where).train(was_training)
    elif export is not None:
        log.warning("%s: nothing held out (see the held-out split above): quality gates not run", what)
    verdicts = [g["passed"] for g in summary["gates"].values() if g["passed"] is not None]
    summary["passed"] = all(verdicts) if verdicts else None
    for name, g in summary["gates"].items():
        if g["passed"] is False:
            log.warning("%s %s %s is %s against %s %s: %s", GATE_PREFIX, what, name, _fmt(g["value"]),
                        g["baseline_name"], _fmt(g["baseline"]), g["reason"])
    print(format_summary(summary))
    atomic_write_json(Path(out) / SUMMARY, summary)
    if export is not None:
        keep = ("part", "steps_done", "max_steps", "stop_reason", "metrics", "gates", "heads", "finetune", "passed",
                "date")
        atomic_write_json(export / QUALITY, {k: summary[k] for k in keep if k in summary})
    return summary


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}" if isinstance(v, float) else str(v)


def format_summary(s: dict[str, Any]) -> str:
    """The summary as a readable block of lines."""
    took = f" ({s['fit_seconds']:g} s in this run)" if s.get("fit_seconds") is not None else ""
    cap = (f"; time cap {s['max_minutes']:g} min, {s['capped_seconds']:g} s counted over every resume"
           if s.get("max_minutes") else "")
    lines = [f"== {s['part']} training summary ({s['run']}) ==",
             f"steps: {s['steps_done']} of {s['max_steps']} planned; stopped by: {s['stop_reason']}{took}{cap}"]
    if s.get("metrics"):
        lines.append("held-out: " + ", ".join(f"{k} {_fmt(v)}" for k, v in s["metrics"].items()))
    for name, g in s["gates"].items():
        verdict = {True: "ok", False: "FAILED", None: "n/a"}[g["passed"]]
        lines.append(f"  {name:<18} {_fmt(g['value']):>9}   {g['baseline_name']} {_fmt(g['baseline'])}   {verdict}"
                     + ("" if g["passed"] else f"   ({g['reason']})"))
    if s.get("finetune", {}).get("before"):  # a tokenizer fine-tune: the export it started from, same frames
        ft = s["finetune"]
        lines.append(f"  fine-tuned from {ft['tokenizer']}: PSNR {_fmt(ft['before']['psnr_db'])} -> "
                     f"{_fmt(ft['after']['psnr_db'])} dB, codebook usage {_fmt(ft['before']['codebook_usage'])} -> "
                     f"{_fmt(ft['after']['codebook_usage'])} (codebook {ft['codebook']})")
    if s.get("heads"):
        lines.append("  heads (captions drawn only when passed): " + ", ".join(
            f"{k} {({True: 'passed', False: 'FAILED', None: 'n/a'})[v]}" for k, v in s["heads"].items()))
    lines.append({True: "verdict: every gate passed", False: "verdict: QUALITY GATE FAILED (see above)",
                  None: "verdict: no gate checked"}[s["passed"]])
    return "\n".join(lines)

