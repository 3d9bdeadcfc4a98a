"""The fidelity suite: does the world model follow its actions? One command builds a world model per simulator with
the project's own verbs and a fixed step-budgeted recipe (:mod:`wm_video.recipes`), then scores it on held-out episodes.

    python eval/fidelity/run.py --out runs/fidelity                       # 3 environments, ~15 min each on 2 cores
    python eval/fidelity/run.py --out runs/fidelity --envs ALE/Boxing-v5  # one of them
    python eval/fidelity/run.py --out /tmp/fid_smoke --smoke              # minutes; the numbers mean nothing
    make fidelity

Per environment, each stage is one ``wm-video`` command run as its own process, skipped when its output exists
(rerun the same command to resume; delete a stage's folder to redo it):

    collect -> train tokenizer -> tokenize -> train dynamics [-> train decoder (--decoder)] -> export -> eval

The recipes (:mod:`wm_video.recipes`) are those ``wm-video demo --env E`` builds from.

The evaluation (``wm-video eval``, :mod:`wm_video.evaluation.rollout_eval`) gives per horizon 1..8, after 4 context
frames: PSNR with the true actions, shuffled actions and the null action, copy-last-frame, the tokenizer ceiling,
PSNR on the pixels that move and token accuracy on the tokens that change. The suite adds the CPU seconds of
every stage (user + system time of the stage's process tree) and the verdicts of
:mod:`wm_video.evaluation.verdicts`: beats copy-last-frame (by 2 dB at h=8), follows its actions (true beat
shuffled actions by 1.5 dB on average), h=1 within 2 dB of the tokenizer ceiling, and the tokens keep what moves.

Writes ``OUT/<env>/`` (data, runs, world model, eval report) and ``OUT/results.json`` / ``OUT/results.md``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from wm_video.evaluation.verdicts import Targets, format_verdicts, verdicts
from wm_video.recipes import DEFAULT_ENVS, Recipe, recipe_for
from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json
from wm_video.utils.machine import machine_record, machine_summary
from wm_video.utils.stages import run_stages

HORIZON, CONTEXT = 8, 4


def slug(env: str) -> str:
    return env.replace("/", "_")


def check_env_renders(env: str, size: int = 64) -> None:
    """Make ``env``, reset it and take one step; a clear error naming it when it gives no RGB frames."""
    import numpy as np

    from wm_video.envs.registry import make_env

    try:
        sim = make_env(env, size=size)
    except Exception as e:  # any failure to build it is reported with the env's name
        raise SystemExit(f"fidelity: environment '{env}' cannot be used: {e}") from e
    try:
        first = sim.reset(seed=0).frame
        step = sim.step(sim.sample_action(np.random.default_rng(0))).frame
    finally:
        sim.close()
    for frame in (first, step):
        if not isinstance(frame, np.ndarray) or frame.dtype != np.uint8 or frame.shape != (size, size, 3):
            got = type(frame).__name__ if not isinstance(frame, np.ndarray) else f"{frame.dtype} {frame.shape}"
            raise SystemExit(f"fidelity: environment '{env}' renders no {size}x{size} RGB frames (got {got})")


def stage_commands(r: Recipe, root: Path, decoder: bool = False) -> list[tuple[str, Path, list[str]]]:
    """``(stage, output that marks it done, wm-video arguments)`` in order."""
    data, tokens, runs, wm = root / "data", root / "tokens", root / "runs", root / "world_model"
    collect = ["data", "collect", "--env", r.env, "--episodes", str(r.episodes), "--policy", r.policy,
               "--noise", str(r.noise), "--size", "64", "--clip-len", "16", "--workers", "2",
               "--episodes-per-shard", str(r.episodes_per_shard), "--seed", "0", "--out", str(data)]
    if r.max_episode_steps:
        collect += ["--max-episode-steps", str(r.max_episode_steps)]
    if r.stride:
        collect += ["--stride", str(r.stride)]
    if r.hold > 1:
        collect += ["--hold", str(r.hold)]
    stages = [
        ("collect", data / "dataset.json", collect),
        ("tokenizer", runs / "tokenizer" / "export", ["train", "tokenizer", "--preset", "tiny", "--data", str(data),
                                                      "--out", str(runs / "tokenizer"), "--max-steps",
                                                      str(r.tokenizer_steps), *r.tokenizer]),
        ("tokenize", tokens / "dataset.json", ["data", "tokenize", "--tokenizer", str(runs / "tokenizer" / "export"),
                                               "--data", str(data), "--out", str(tokens)]),
        ("dynamics", runs / "dynamics" / "export", ["train", "dynamics", "--preset", "tiny", "--data", str(tokens),
                                                    "--out", str(runs / "dynamics"), "--max-steps",
                                                    str(r.dynamics_steps), *r.dynamics]),
    ]
    export = ["export", "--tokenizer", str(runs / "tokenizer"), "--dynamics", str(runs / "dynamics"),
              "--data", str(data), "--out", str(wm)]
    if decoder:
        stages.append(("decoder", runs / "decoder" / "export",
                       ["train", "decoder", "--preset", "tiny", "--data", str(data), "--tokenizer",
                        str(runs / "tokenizer" / "export"), "--out", str(runs / "decoder"), "--max-steps",
                        str(r.decoder_steps or Recipe.decoder_steps)]))
        export += ["--decoder", str(runs / "decoder")]
    stages.append(("export", wm / "world_model.json", export))
    ev = ["eval", "--model", str(wm), "--data", str(data), "--horizon", str(HORIZON), "--context-frames",
          str(CONTEXT), "--max-clips", str(r.max_clips), "--batch-size", "16", "--temperature", str(r.temperature),
          "--maskgit-steps", str(r.maskgit_steps), "--out", str(root / "eval")]
    if r.guidance_scale != 1.0:
        ev += ["--guidance-scale", str(r.guidance_scale)]
    stages.append(("eval", root / "eval" / "report.json", ev))
    return stages


def run_env(r: Recipe, root: Path, decoder: bool = False) -> dict[str, Any]:
    """Run (or resume) every stage for one environment; returns its timing record."""
    root.mkdir(parents=True, exist_ok=True)
    return run_stages(stage_commands(r, root, decoder), root / "stage_seconds.json", f"fidelity {r.env}")


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


ROWS = ("model", "shuffled_actions", "null_actions", "copy_last_frame", "tokenizer_ceiling")


def env_table(env: str, report: dict[str, Any], v: dict[str, Any], timings: dict[str, Any]) -> str:
    res = report["results"]
    hs = report["horizons"]
    lines = [f"### {env}", "", f"{report['clips']} held-out clips, context {CONTEXT}, "
             f"temperature {report['protocol']['temperature']}, "
             f"guidance {report['protocol'].get('guidance_scale', 1.0)}.", ""]
    for metric, label in (("psnr_db", "PSNR (dB)"), ("psnr_moving_db", "PSNR on moving pixels (dB)"),
                          ("changed_token_accuracy", "token accuracy on changing tokens")):
        lines += [f"| {label} | " + " | ".join(f"h={h}" for h in hs) + " | mean |",
                  "| --- |" + " --- |" * (len(hs) + 1)]
        for row in ROWS:
            vals = res.get(row, {}).get(metric)
            if vals is None:
                continue
            ok = [x for x in vals if x is not None]
            cells = ["-" if x is None else f"{x:.2f}" if metric != "changed_token_accuracy" else f"{x:.3f}"
                     for x in vals]
            avg = f"{mean(ok):.3f}" if ok and metric == "changed_token_accuracy" else f"{mean(ok):.2f}" if ok else "-"
            lines.append(f"| {row} | " + " | ".join(cells) + f" | {avg} |")
        lines.append("")
    for note_row, note in report.get("notes", {}).items():
        lines.append(f"- {note_row}: {note}")
    lines += ["- " + line for line in format_verdicts(v).splitlines()]
    lines += ["- CPU seconds per stage: " + ", ".join(f"{k} {t['cpu_s']:.0f}" for k, t in timings.items()), ""]
    return "\n".join(lines)


def recipe_changes(items: list[str], base: Recipe | None = None) -> dict[str, Any]:
    """``FIELD=VALUE`` strings -> changes of :class:`Recipe`'s scalar fields, each value of the field's type;
    ``FIELD+=OVERRIDE`` appends a dotted override to a list field (``tokenizer`` or ``dynamics``) of ``base``."""
    fields = {f.name: type(f.default) for f in dataclasses.fields(Recipe)
              if isinstance(f.default, (int, float, str)) and f.name != "env"}
    lists = {f.name for f in dataclasses.fields(Recipe) if f.name in ("tokenizer", "dynamics")}
    changes: dict[str, Any] = {}
    for item in items:
        name, sep, value = item.partition("=")
        if sep and name.endswith("+") and name[:-1] in lists:
            key = name[:-1]
            changes[key] = [*changes.get(key, getattr(base, key) if base else []), value]
            continue
        if not sep or name not in fields:
            raise SystemExit(f"fidelity: --set {item!r}: expected FIELD=VALUE with FIELD one of {sorted(fields)}, "
                             f"or LIST+=OVERRIDE with LIST one of {sorted(lists)}")
        try:
            changes[name] = fields[name](value)
        except ValueError:
            raise SystemExit(f"fidelity: --set {item!r}: {name} takes a {fields[name].__name__}") from None
    return changes


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--out", default="runs/fidelity", help="output folder (default runs/fidelity)")
    p.add_argument("--envs", nargs="+", default=list(DEFAULT_ENVS), help=f"environments (default {DEFAULT_ENVS})")
    p.add_argument("--smoke", action="store_true", help="a few steps per stage: checks the plumbing only")
    p.add_argument("--decoder", action="store_true", help="train the diffusion decoder too and score its frames "
                   "(default: frames from the VQ decoder)")
    p.add_argument("--set", nargs="+", default=[], metavar="FIELD=VALUE",
                   help="change recipe fields for an experiment, e.g. --set hold=4 dynamics_steps=1200 (scalar "
                   "fields), "
                   "or append an override to the tokenizer's or dynamics' list: tokenizer+=model.downsample=16")
    args = p.parse_args(argv)
    out = Path(args.out)
    recipe_changes(args.set)  # refuses a bad --set before anything runs
    for env in args.envs:
        check_env_renders(env)
    results: dict[str, Any] = {}
    # no threads: the stages run as `wm-video` processes, so this process's torch threads say nothing about them
    machine = machine_record(threads=False, argv=["eval/fidelity/run.py", *(sys.argv[1:] if argv is None else argv)])
    md = ["# Fidelity suite", "", f"{machine['date']}, {machine_summary(machine)}, command: {machine['command']}", ""]
    for env in args.envs:
        base = recipe_for(env, args.smoke)
        r = dataclasses.replace(base, **recipe_changes(args.set, base))
        timings = run_env(r, out / slug(env), args.decoder)
        report = json.loads((out / slug(env) / "eval" / "report.json").read_text())
        v = verdicts(report)
        results[env] = {"recipe": r.__dict__, "verdicts": v, "stage_seconds": timings,
                        "results": report["results"], "notes": report.get("notes", {})}
        md.append(env_table(env, report, v, timings))
    summary = {**machine, "smoke": args.smoke, "targets": Targets().__dict__, "envs": results}
    atomic_write_json(out / "results.json", summary)
    atomic_write_bytes(out / "results.md", ("\n".join(md) + "\n").encode())
    print("\n".join(md))
    return summary


if __name__ == "__main__":
    main()
