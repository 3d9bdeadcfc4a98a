"""One model across several simulators against one model per simulator, at equal total compute; then few-shot
adaptation to an unseen "real" domain (issue 22's figures).

    python eval/multidomain/run.py --out runs/multidomain                  # ~1.5 h on an idle 2-core CPU
    python eval/multidomain/run.py --out runs/multidomain --reuse boxing=demo_out/data   # a dataset collected before
    python eval/multidomain/run.py --out /tmp/md_smoke --smoke             # minutes; the numbers mean nothing

Every stage is one ``wm-video`` command (:func:`wm_video.utils.stages.run_stages`: skipped when its output exists,
so rerunning resumes):

1. collect each source with its fidelity-suite recipe (:mod:`wm_video.recipes`; ``--reuse NAME=DIR`` takes a dataset
   collected with that recipe instead), and the "real" domain: Reacher-v5 seen and moving differently
   (``configs/data/reacher_shifted.yaml``: hue, light, camera, mass, damping), ``--real-episodes`` episodes of which
   the last ``--real-heldout`` are held out;
2. ONE tokenizer over all the sources' frames (the suite's patch tokenizer recipe), every dataset tokenized by it;
3. the shared model: ``train dynamics`` on the mixture of all sources' tokens (one action domain each) for
   ``len(sources) x --steps`` steps; the per-source models: ``--steps`` steps each on their own tokens, so both arms
   spend the same optimizer steps at the same batch size;
4. each source's held-out episodes scored by ``wm-video eval`` (horizons 1..8 after 4 context frames, argmax): the
   shared model with ``--domain NAME`` and that source's own model, each beside copy-last-frame, shuffled actions
   and the tokenizer ceiling;
5. adaptation to the real domain with its training episodes, ``--adapt-steps`` steps each: the shared model
   fine-tuned into a new action domain (``finetune.domain``) in full and with LoRA adapters (rank 8), the same
   recipe from scratch, and the Reacher-only model fine-tuned; scored on the real domain's held-out episodes.

Writes ``OUT/results.json`` and ``OUT/results.md`` (with the machine record and every stage's CPU seconds).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from wm_video.recipes import PATCH, RECIPES, Recipe
from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json
from wm_video.utils.machine import machine_record, machine_summary
from wm_video.utils.stages import Stage, run_stages

SOURCES: dict[str, Recipe] = {
    "boxing": RECIPES["ALE/Boxing-v5"],
    "pong": Recipe(env="ALE/Pong-v5", episodes=48, max_episode_steps=300),
    "reacher": RECIPES["Reacher-v5"],
    "mw_reach": RECIPES["metaworld/reach-v3"],
}
REAL, REAL_CONFIG, REAL_BASE = "reacher_real", "configs/data/reacher_shifted.yaml", "reacher"
HORIZON, CONTEXT = 8, 4
METHODS = ["model", "copy_last_frame", "shuffled_actions", "tokenizer_ceiling"]


def collect_args(r: Recipe, out: Path, smoke: bool) -> list[str]:
    episodes, max_steps = (4, 40) if smoke else (r.episodes, r.max_episode_steps)
    args = ["data", "collect", "--env", r.env, "--episodes", str(episodes), "--policy", r.policy, "--noise",
            str(r.noise), "--size", "64", "--clip-len", "16", "--workers", "2", "--episodes-per-shard",
            str(1 if smoke else r.episodes_per_shard), "--seed", "0", "--out", str(out)]
    args += ["--max-episode-steps", str(max_steps)] if max_steps else []
    return args + (["--stride", str(r.stride)] if r.stride else [])


def eval_args(model: Path, data: Path, out: Path, clips: int, domain: str | None = None,
              val_fraction: float | None = None) -> list[str]:
    args = ["eval", "--model", str(model), "--data", str(data), "--horizon", str(HORIZON), "--context-frames",
            str(CONTEXT), "--max-clips", str(clips), "--batch-size", "16", "--temperature", "0", "--maskgit-steps",
            "1", "--methods", *METHODS, "--out", str(out)]
    args += ["--domain", domain] if domain else []
    return args + (["--val-fraction", str(val_fraction)] if val_fraction is not None else [])


def dynamics_args(out: Path, steps: int, *extra: str) -> list[str]:
    return ["train", "dynamics", "--preset", "tiny", "--out", str(out), "--max-steps", str(steps), *extra]


def stages(root: Path, a: argparse.Namespace, data: dict[str, Path]) -> list[Stage]:
    """Every stage of the comparison, in order (``data``: each source's frame dataset, the real domain's too)."""
    names = list(SOURCES)
    runs, tokens, wm, ev = root / "runs", root / "tokens", root / "world_models", root / "eval"
    out: list[Stage] = []
    for name, r in SOURCES.items():
        if name not in a.reuse:
            out.append((f"collect {name}", data[name] / "dataset.json", collect_args(r, data[name], a.smoke)))
    real = collect_args(SOURCES[REAL_BASE], data[REAL], a.smoke)
    real[real.index("--episodes") + 1] = str(a.real_episodes)
    out.append(("collect real", data[REAL] / "dataset.json", [*real, "--config", REAL_CONFIG, "--hold", "1"]))
    tok = runs / "tokenizer"
    out.append(("tokenizer", tok / "export" / "config.json",
                ["train", "tokenizer", "--preset", "tiny", "--data", *[str(data[n]) for n in names], "--out",
                 str(tok), "--max-steps", str(a.tokenizer_steps), *PATCH]))
    for name in [*names, REAL]:
        out.append((f"tokenize {name}", tokens / name / "dataset.json",
                    ["data", "tokenize", "--tokenizer", str(tok / "export"), "--data", str(data[name]), "--out",
                     str(tokens / name)]))
    mix = root / "mixture.yaml"
    out.append(("shared model", runs / "shared" / "export" / "config.json",
                dynamics_args(runs / "shared", a.steps * len(names), "--config", str(mix))))
    for name in names:
        out.append((f"single {name}", runs / f"single_{name}" / "export" / "config.json",
                    dynamics_args(runs / f"single_{name}", a.steps, "--data", str(tokens / name))))
    vf = f"val_fraction={a.real_heldout / a.real_episodes:.4f}"
    shared = ("--init-from", str(runs / "shared" / "export"), f"finetune.domain={REAL}")
    adapt = {"adapt shared": shared, "adapt single": ("--init-from", str(runs / f"single_{REAL_BASE}" / "export")),
             "adapt scratch": (), "adapt shared lora": (*shared, "finetune.lora.rank=8")}
    for arm, extra in adapt.items():
        folder = runs / arm.replace(" ", "_")
        out.append((arm, folder / "export" / "config.json",
                    dynamics_args(folder, a.adapt_steps, "--data", str(tokens / REAL), vf, *extra)))
    parts = {"shared": (runs / "shared", data[names[0]]),
             **{f"single_{n}": (runs / f"single_{n}", data[n]) for n in names},
             **{arm.replace(" ", "_"): (runs / arm.replace(" ", "_"), data[REAL]) for arm in adapt}}
    for part, (run, d) in parts.items():
        out.append((f"export {part}", wm / part / "world_model.json",
                    ["export", "--tokenizer", str(tok / "export"), "--dynamics", str(run), "--data", str(d), "--out",
                     str(wm / part)]))
    clips = 4 if a.smoke else a.max_clips
    for name in names:
        out.append((f"eval shared {name}", ev / f"shared_{name}" / "report.json",
                    eval_args(wm / "shared", data[name], ev / f"shared_{name}", clips, domain=name)))
        out.append((f"eval single {name}", ev / f"single_{name}" / "report.json",
                    eval_args(wm / f"single_{name}", data[name], ev / f"single_{name}", clips)))
    real_vf = a.real_heldout / a.real_episodes
    for arm in adapt:
        part = arm.replace(" ", "_")
        out.append((f"eval {part}", ev / part / "report.json",
                    eval_args(wm / part, data[REAL], ev / part, clips, REAL if "shared" in arm else None, real_vf)))
    return out


def write_mixture(path: Path, tokens: Path) -> None:
    lines = ["kind: train_dynamics", "mixture:"]
    lines += [f"  - {{path: {tokens / name}, weight: 1, domain: {name}}}" for name in SOURCES]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n")


def summary_row(report: dict[str, Any]) -> dict[str, float]:
    """PSNR (dB) at h=1, h=8 and the mean over h of each scored row, plus the true-minus-shuffled margin."""
    res = report["results"]
    row: dict[str, float] = {}
    for method in METHODS:
        vals = (res.get(method) or {}).get("psnr_db")
        if vals:
            row[f"{method}_h1"], row[f"{method}_h8"], row[f"{method}_mean"] = vals[0], vals[-1], sum(vals) / len(vals)
    if "shuffled_actions_mean" in row:
        row["true_minus_shuffled"] = row["model_mean"] - row["shuffled_actions_mean"]
    row["clips"] = report["clips"]
    return row


def table(title: str, rows: dict[str, dict[str, float]]) -> list[str]:
    cols = [("model_h1", "h=1"), ("model_h8", "h=8"), ("model_mean", "mean"), ("shuffled_actions_mean", "shuffled"),
            ("true_minus_shuffled", "true - shuffled"), ("copy_last_frame_mean", "copy"),
            ("tokenizer_ceiling_mean", "ceiling"), ("clips", "clips")]
    lines = [f"### {title}", "", "| model | " + " | ".join(c[1] for c in cols) + " |", "| --- |" + " --- |" * len(cols)]
    for name, row in rows.items():
        cells = [("-" if k not in row else f"{row[k]:.0f}" if k == "clips" else f"{row[k]:+.2f}" if k.startswith(
            "true_minus") else f"{row[k]:.2f}") for k, _ in cols]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/multidomain", help="output folder (default runs/multidomain)")
    p.add_argument("--steps", type=int, default=400, help="dynamics steps per source: each per-source model's, and "
                   "the shared model's divided by the number of sources (default 400)")
    p.add_argument("--tokenizer-steps", type=int, default=400, help="steps of the shared tokenizer (default 400)")
    p.add_argument("--adapt-steps", type=int, default=300, help="steps of each adaptation arm (default 300)")
    p.add_argument("--real-episodes", type=int, default=14, help="episodes of the real domain (default 14)")
    p.add_argument("--real-heldout", type=int, default=4, help="of which held out for scoring (default 4)")
    p.add_argument("--max-clips", type=int, default=32, help="held-out clips scored per source (default 32)")
    p.add_argument("--reuse", nargs="+", default=[], metavar="NAME=DIR",
                   help=f"use an existing dataset collected with the source's recipe (sources: {list(SOURCES)})")
    p.add_argument("--smoke", action="store_true", help="a few steps per stage: checks the plumbing only")
    a = p.parse_args(argv)
    reuse = dict(item.split("=", 1) for item in a.reuse)
    unknown = sorted(set(reuse) - set(SOURCES))
    if unknown:
        raise SystemExit(f"multidomain: --reuse names unknown sources {unknown}; sources: {list(SOURCES)}")
    a.reuse = reuse
    if a.smoke:
        a.steps, a.tokenizer_steps, a.adapt_steps, a.real_episodes, a.real_heldout = 4, 4, 4, 4, 2
    root = Path(a.out)
    data = {name: Path(reuse[name]) if name in reuse else root / "data" / name for name in SOURCES}
    data[REAL] = root / "data" / REAL
    write_mixture(root / "mixture.yaml", root / "tokens")
    timings = run_stages(stages(root, a, data), root / "stage_seconds.json", "multidomain")
    reports = {f.parent.name: json.loads(f.read_text()) for f in sorted((root / "eval").glob("*/report.json"))}
    rows = {name: summary_row(r) for name, r in reports.items()}
    machine = machine_record(threads=False, argv=["eval/multidomain/run.py", *(sys.argv[1:] if argv is None else argv)])
    md = ["# Multi-domain against single-domain, and few-shot adaptation", "",
          f"{machine['date']}, {machine_summary(machine)}, command: {machine['command']}", "",
          f"Budgets: {a.steps} dynamics steps per source (the shared model {a.steps * len(SOURCES)}), tokenizer "
          f"{a.tokenizer_steps}, adaptation {a.adapt_steps} on {a.real_episodes - a.real_heldout} episodes of the "
          f"real domain ({a.real_heldout} held out). PSNR in dB, VQ decoder frames, argmax, context {CONTEXT}.", ""]
    for name in SOURCES:
        md += table(f"{name} ({SOURCES[name].env}), held out",
                    {"shared (one model, 4 domains)": rows.get(f"shared_{name}", {}),
                     f"single ({name} only)": rows.get(f"single_{name}", {})})
    md += table(f"{REAL}: Reacher-v5 shifted ({REAL_CONFIG}), held out",
                {"shared, adapted (new domain)": rows.get("adapt_shared", {}),
                 "shared, LoRA rank 8 (new domain)": rows.get("adapt_shared_lora", {}),
                 "reacher-only, adapted": rows.get("adapt_single", {}), "scratch": rows.get("adapt_scratch", {})})
    md.append("CPU seconds per stage: " + ", ".join(f"{k} {t['cpu_s']:.0f}" for k, t in timings.items()))
    summary = {**machine, "settings": {k: v for k, v in vars(a).items()}, "sources": {
        n: dataclasses.asdict(r) for n, r in SOURCES.items()}, "rows": rows, "stage_seconds": timings}
    atomic_write_json(root / "results.json", summary)
    atomic_write_bytes(root / "results.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return summary


if __name__ == "__main__":
    main()
