"""The world model's card: ``README.md`` at the top of a world-model folder, and the evaluation summary it shows.

The card's front matter is what the Hugging Face Hub reads (``library_name: wm-video``, ``license``, ``tags``:
world-model, video-prediction, the action type, the environment and the dataset; ``datasets``: hub dataset ids,
where known); its body says what the model is (parts, resolution, fps, action space, token grid, parameters per
part), how to load it, and, when the model was evaluated, the per-horizon PSNR of the model beside its baselines.

The evaluation comes from a ``wm-video eval`` report (``report.json``, :mod:`wm_video.evaluation.rollout_eval`),
reduced by :func:`eval_summary` to what the card shows and recorded in the index (``world_model.json``'s
``evaluation``), so it travels with the model through load, save and push. ``wm-video eval --out MODEL/eval`` puts
the report inside the model's folder, and loading the folder picks it up (:func:`folder_eval_summary`).

This module renders from the index and the parts (it does not import :mod:`wm_video.world_model`, which calls it);
the parts' own cards are :func:`wm_video.models.card.part_card`.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from huggingface_hub import ModelCard
from torch import nn

from wm_video.models.card import ABOUT, CARD, is_generated_card, parameters, render, tag

log = logging.getLogger(__name__)

EVAL_REPORT = Path("eval") / "report.json"  # where `wm-video eval --out MODEL/eval` writes, inside the folder
# the card's columns (the model and the baselines the report holds, in this order): label, what it is
METHODS = {"model": ("model", "the world model given the true actions"),
           "copy_last_frame": ("copy last frame", "the last context frame, repeated"),
           "shuffled_actions": ("shuffled actions", "the model given another clip's actions"),
           "null_actions": ("null action", "the model given no actions"),
           "tokenizer_ceiling": ("tokenizer ceiling", "the tokenizer's reconstruction of the true frames, the best "
                                                      "any token prediction can do")}
SHOWN_HORIZONS = (1, 2, 4, 8, 16, 32)  # and the last
EvalReport = dict[str, Any] | str | os.PathLike  # a report's dict, its report.json or the folder holding it
_HUB_DATASET = re.compile(r"datasets--([\w.-]+)--([\w.-]+)")  # a hub cache path: datasets--owner--name/snapshots/...


def eval_summary(report: dict[str, Any], where: str = "evaluation report") -> dict[str, Any]:
    """What the card shows of a ``wm-video eval`` report: the data, the clips, the protocol's main settings and
    the PSNR (dB) of every method at every horizon. ValueError naming ``where`` when it is not such a report."""
    results, horizons = report.get("results"), report.get("horizons")
    if not isinstance(results, dict) or not isinstance(horizons, list) or not horizons:
        raise ValueError(f"{where}: not a 'wm-video eval' report (expected 'results' and 'horizons')")
    psnr = {m: r["psnr_db"] for m, r in results.items() if isinstance(r, dict) and "psnr_db" in r}
    if "model" not in psnr or any(not isinstance(v, list) or len(v) != len(horizons) for v in psnr.values()):
        raise ValueError(f"{where}: 'results' must give the model's psnr_db at each of its {len(horizons)} horizons")
    protocol = report.get("protocol") if isinstance(report.get("protocol"), dict) else {}
    return {"data": report.get("data"), "clips": report.get("clips"), "horizons": horizons, "psnr_db": psnr,
            "protocol": {k: protocol[k] for k in ("name", "context_frames", "temperature", "decoder", "date")
                         if k in protocol}}


def load_eval_summary(report: dict[str, Any] | str | os.PathLike) -> dict[str, Any]:
    """:func:`eval_summary` of a report given as a dict, a ``report.json`` file or the folder holding one."""
    if isinstance(report, dict):
        return eval_summary(report)
    file = Path(report)
    file = file / "report.json" if file.is_dir() else file
    try:
        data = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise ValueError(f"{file}: not a readable evaluation report ({e})") from e
    return eval_summary(data if isinstance(data, dict) else {}, str(file))


def folder_eval_summary(folder: Path, index_file: Path) -> dict[str, Any] | None:
    """The summary of ``folder/eval/report.json`` when it was written after ``index_file``; None otherwise.

    A report older than the index scored whatever the folder held before it was last written (``wm-video export``
    over a previous export keeps the ``eval/`` folder it does not own), so it does not describe these weights."""
    file = folder / EVAL_REPORT
    try:
        if not file.is_file() or file.stat().st_mtime_ns < index_file.stat().st_mtime_ns:
            return None
        return load_eval_summary(file)
    except (OSError, ValueError) as e:
        log.warning("%s: left out of the model card (%s)", file, e)
        return None


def may_write_card(folder: Path) -> bool:
    """Whether a save may write ``folder/README.md``: there is none, or it is a card this project wrote. Another
    README (written by someone, or a card whose :data:`~wm_video.models.card.MARKER` line was deleted) is kept."""
    file = folder / CARD
    if not os.path.lexists(file) or (file.is_file() and is_generated_card(file.read_text(errors="replace"))):
        return True
    log.warning("%s was not written by wm-video: kept as it is, and no model card written there", file)
    return False


def hub_datasets(source: Any) -> list[str]:
    """Hub dataset ids (``owner/name``) the source paths show: data read from a hub cache folder
    (``.../datasets--lerobot--pusht/snapshots/...``)."""
    if isinstance(source, dict):
        return [d for v in source.values() for d in hub_datasets(v)]
    if isinstance(source, list):
        return [d for v in source for d in hub_datasets(v)]
    return [f"{m[1]}/{m[2]}" for m in _HUB_DATASET.finditer(source)] if isinstance(source, str) else []


def card_tags(index: dict[str, Any]) -> list[str]:
    """Hub tags from the index: world-model, video-prediction, the action type, the environment or robot, the
    dataset's folder name."""
    kind = (index.get("action_space") or {}).get("kind", "none")
    source = index.get("source") or {}
    dataset = source.get("dataset") if isinstance(source.get("dataset"), dict) else {}
    data = source.get("data")
    tags = ["world-model", "video-prediction", {"none": "action-free", "domains": "multi-domain-actions"}.get(
        kind, f"{kind}-actions")]
    tags += [tag(v) for v in (dataset.get("env"), dataset.get("robot_type")) if v]
    if isinstance(data, str) and data.strip("/"):
        tags.append(tag(Path(data).name))
    return tags + (["diffusion-decoder"] if "decoder" in index.get("parts", {}) else [])


def describe_actions(space: dict[str, Any]) -> str:
    kind = space.get("kind", "none")
    if kind == "domains":  # a model of several action domains (trained on a mixture): each domain's space
        domains = space.get("domains") or {}
        return f"{len(domains)} action domains: " + "; ".join(
            f"{name}: {describe_actions(s).split(' (')[0]}" for name, s in domains.items())
    if kind == "discrete":
        return f"discrete, {space.get('n')} actions"
    if kind == "continuous":
        bounds = f" in [{space['low']}, {space['high']}]" if space.get("low") is not None else ""
        return f"continuous, {space.get('dim')} dims{bounds}"
    return "none (action-free video; a learned null action stands in)"


def eval_lines(summary: dict[str, Any]) -> list[str]:
    """The card's evaluation section: PSNR (dB) per horizon, one column per method."""
    horizons, psnr, p = summary["horizons"], summary["psnr_db"], summary.get("protocol", {})
    shown = sorted({h for h in (*SHOWN_HORIZONS, horizons[-1]) if h in horizons})
    methods = [m for m in METHODS if m in psnr]
    settings = ", ".join(f"{k.replace('_', ' ')} {p[k]}" for k in ("context_frames", "temperature", "decoder")
                         if k in p)
    lines = ["## Evaluation", "",
             f"Open-loop rollouts on {summary.get('clips', '?')} held-out clips of `{summary.get('data')}`"
             + (f" ({settings})" if settings else "") + (f", {p['date']}" if "date" in p else "")
             + ": PSNR (dB) of the frames predicted h steps ahead, higher is better; "
             + "; ".join(f"{METHODS[m][0]}: {METHODS[m][1]}" for m in methods) + ".", "",
             "| h | " + " | ".join(METHODS[m][0] for m in methods) + " |", "| --- |" + " --- |" * len(methods)]
    for h in shown:
        cells = [psnr[m][horizons.index(h)] for m in methods]
        lines.append(f"| {h} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |")
    return [*lines, ""]


def world_model_card(index: dict[str, Any], parts: dict[str, nn.Module], license: str | None = None,
                     datasets: Iterable[str] = (), repo_id: str | None = None) -> ModelCard:
    """The card of a world-model folder.

    Args:
        index: the folder's ``world_model.json`` (``WorldModel.index()``), with ``evaluation`` when known.
        parts: the parts by name (``tokenizer``, ``dynamics``, optionally ``decoder``).
        license: the license's hub id (default apache-2.0).
        datasets: hub dataset ids it was trained on (those in the index's source paths are added).
        repo_id: the hub repo it is for: the title and the load example name it (else a folder path).
    """
    space, grid = index.get("action_space") or {}, int(index.get("tokens_per_frame", 0))
    dyn = parts["dynamics"].config
    title = repo_id.split("/")[-1] if repo_id else "wm-video world model"
    rows = [("resolution", f"{index['resolution']}x{index['resolution']} pixels"), ("fps", f"{index['fps']:g}"),
            ("action space", describe_actions(space)),
            ("token grid", f"{dyn.token_h}x{dyn.token_w} = {grid} tokens per frame, vocabulary "
                           f"{index.get('vocab_size')}"),
            ("context", f"{index.get('context_frames')} frames"),
            ("frames drawn by", "the diffusion decoder" if "decoder" in parts else "the tokenizer's VQ decoder")]
    data = (index.get("source") or {}).get("data")
    if data:
        rows.append(("training data", f"`{data}`"))
    where = repo_id or "path/to/world_model"
    body = [f"# {title}", "",
            "A video-prediction world model made with wm-video: given context frames and actions it predicts the "
            "next frames, the reward and whether the episode ends, and can be stepped like an environment.", "",
            "| property | value |", "| --- | --- |", *(f"| {k} | {v} |" for k, v in rows), "",
            "## Parts", "", "| part | parameters | what it does |", "| --- | --- | --- |",
            *(f"| [`{p}/`]({p}/README.md) | {parameters(m):,} | {ABOUT[p]} |" for p, m in parts.items()), "",
            "## Use it", "", "```python", "from wm_video.world_model import WorldModel",
            "from wm_video.world_model_env import WorldModelEnv", "",
            f'wm = WorldModel.from_pretrained("{where}")  # a local folder or a hub repo id',
            "env = WorldModelEnv(wm)",
            "env.reset(context_frames)  # (b, t0, 3, h, w) uint8", "out = env.step(actions)  # out.frames, "
            "out.rewards, out.terminations", "```", "",
            f"From the command line: `wm-video generate --model {where} --context clip.mp4 --out future.mp4`.", ""]
    if index.get("evaluation"):
        body += eval_lines(index["evaluation"])
    versions = ", ".join(f"{k} {v}" for k, v in (index.get("versions") or {}).items())
    body += ["## Files", "", "`world_model.json` (the index: resolution, fps, action space, normalisation "
             "statistics, part fingerprints" + (f"; made with {versions}" if versions else "") + "), and one folder "
             "per part, each `config.json` + `model.safetensors` with a card of its own."]
    all_datasets = list(dict.fromkeys([*datasets, *hub_datasets(index.get("source"))]))
    return render(card_tags(index), body, license, all_datasets)
