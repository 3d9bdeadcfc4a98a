"""An evaluation report on disk: ``report.json`` (everything, with the protocol), ``report.md`` (tables per
metric at a few horizons) and one PNG plot per metric against horizon (matplotlib, Agg backend)."""

from __future__ import annotations

from pathlib import Path

from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json

LABELS = {"psnr_db": "PSNR (dB)", "psnr_moving_db": "PSNR on moving pixels (dB)", "ssim": "SSIM",
          "token_accuracy": "token accuracy", "changed_token_accuracy": "token accuracy on changing tokens",
          "reward_mae": "reward MAE", "termination_precision": "termination precision",
          "termination_recall": "termination recall"}


def _cell(v: float | None) -> str:
    return "-" if v is None else f"{v:.3f}"


def markdown(report: dict, horizons: list[int] | None = None) -> str:
    all_h = report["horizons"]
    shown = horizons or sorted({h for h in (1, 2, 4, 8, 16, 32, all_h[-1]) if h in all_h})
    p = report["protocol"]
    lines = [f"# World-model evaluation: {report['data']}", "",
             f"{report['clips']} held-out clips ({report['heldout_shards']} shards), context {p['context_frames']} "
             f"frames, horizon {p['horizon']}, temperature {p['temperature']}, seed {p['seed']}, decoder "
             f"{p['decoder']}, {p['date']}.", ""]
    if p.get("task") is not None or p.get("text_guidance_scale", 1) != 1:
        task = f"task text {p['task']!r} for every clip" if p.get("task") is not None else "each clip's own task text"
        lines += [f"{task}, text guidance scale {p.get('text_guidance_scale', 1):g}.", ""]
    metrics = [m for m in LABELS if any(m in r for r in report["results"].values())]
    for metric in metrics:
        lines += [f"## {LABELS[metric]}", "", "| method | " + " | ".join(f"h={h}" for h in shown) + " |",
                  "| --- |" + " --- |" * len(shown)]
        for method, res in report["results"].items():
            if metric in res:
                lines.append(f"| {method} | " + " | ".join(_cell(res[metric][h - 1]) for h in shown) + " |")
        lines.append("")
    for method, note in report.get("notes", {}).items():
        lines.append(f"- {method}: {note}")
    return "\n".join(lines)


def plot(report: dict, metric: str, path: Path) -> None:
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2), dpi=110)
    for method, res in report["results"].items():
        if metric in res:
            ys = [float("nan") if v is None else v for v in res[metric]]
            ax.plot(report["horizons"], ys, marker="o", ms=3, label=method)
    ax.set_xlabel("horizon (frames ahead)")
    ax.set_ylabel(LABELS[metric])
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(path, buf.getvalue())


def write_report(report: dict, out: str | Path) -> list[Path]:
    """Write ``report.json``, ``report.md`` and ``<metric>.png`` under ``out``; returns the paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "report.json", report)
    atomic_write_bytes(out / "report.md", (markdown(report) + "\n").encode())
    paths = [out / "report.json", out / "report.md"]
    for metric in LABELS:
        if any(metric in r for r in report["results"].values()):
            plot(report, metric, out / f"{metric}.png")
            paths.append(out / f"{metric}.png")
    return paths
