"""Assemble a world-model folder from its trained parts: what ``wm-video export --tokenizer ... --dynamics ...`` and
the demo run.

Each part may be an export folder, a run folder (its ``export/`` is used) or a training checkpoint, consolidated
first with :func:`wm_video.training.consolidate.export_part`; this module therefore sits above ``training/`` (see
docs/architecture.md), and below the commands and the demo that call it.

A dynamics model of several action domains (trained on a mixture: ``DynamicsConfig.domains``) gets the index's
``action_space`` ``{"kind": "domains", "domains": {NAME: action space, ...}}``, each space as its domain's
``ActionSpace`` dict (``kind`` with ``n``, or ``dim`` with the bounds the domain's dataset recorded, where the
model config has them), whatever ``--data`` says;
``--data`` (one of its datasets) still gives fps, statistics and provenance.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import ActionSpace
from wm_video.models.decoder import DiffusionDecoder
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.export import read_quality
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.consolidate import export_part
from wm_video.world_model import WorldModel, WorldModelInfo


def part_folder(spec: str | Path) -> Path | None:
    """The export folder a part ``spec`` names (itself, or a run folder's ``export/``); None for a checkpoint."""
    p = Path(spec)
    for folder in (p, p / "export"):
        if (folder / "config.json").exists():
            return folder
    return None


def load_part(spec: str | Path, cls: type, kind: str) -> Any:
    """A part of class ``cls`` from an export folder, a run folder (``spec/export``) or a training checkpoint;
    ``kind`` names it in errors (``tokenizer``, ``dynamics``, ``decoder``)."""
    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--{kind} {p}: no such file or folder")
    folder = part_folder(p)
    if folder is not None:
        return cls.from_pretrained(folder)
    with tempfile.TemporaryDirectory() as tmp:  # a checkpoint: consolidate, then load
        model = cls.from_pretrained(export_part(p, Path(tmp) / "export"))
    if not isinstance(model, cls):
        raise ValueError(f"--{kind} {p}: holds a {type(model).__name__}, not a {cls.__name__}")
    return model


def export_world_model(tokenizer: str, dynamics: str, decoder: str | None, data: str | None, out: str | Path,
                       overwrite: bool = False) -> Path:
    """Write the world-model folder ``out`` from a tokenizer, a dynamics model and an optional diffusion decoder
    (each an export folder, a run folder or a checkpoint); ``data``, the training dataset, gives the index its fps,
    action space and statistics. Each part's quality.json is copied beside it. Returns the folder written."""
    tok = load_part(tokenizer, VQTokenizer, "tokenizer")
    dyn = load_part(dynamics, DynamicsModel, "dynamics")
    dec = load_part(decoder, DiffusionDecoder, "decoder") if decoder else None
    info = WorldModelInfo(resolution=tok.config.resolution, source={"tokenizer": tokenizer, "dynamics": dynamics,
                                                                    "decoder": decoder, "data": data})
    if data:
        d = load_dataset_info(data)
        info.fps, info.action_space, info.stats = d.fps, d.action_space.to_dict(), d.stats
        # where the data came from (simulator env, robot, source folder): the model card's tags and datasets
        info.source["dataset"] = {k: d.source[k] for k in ("kind", "env", "robot_type", "src") if d.source.get(k)}
    if dyn.config.domains:
        info.action_space = domains_action_space(dyn)
    specs = {"tokenizer": tokenizer, "dynamics": dynamics, "decoder": decoder}
    quality = {part: read_quality(folder) for part, spec in specs.items() if spec and (folder := part_folder(spec))}
    return WorldModel(tok, dyn, dec, info, quality).save_pretrained(out, overwrite=overwrite)


def domains_action_space(dyn: DynamicsModel) -> dict[str, Any]:
    """The index's ``action_space`` of a multi-domain dynamics model: each domain's space by name."""
    spaces = {}
    for d in dyn.config.domains:
        continuous = d.action_type == "continuous"
        space = ActionSpace(d.action_type, n=d.num_actions if d.action_type == "discrete" else None,
                            dim=d.action_dim if continuous else None,
                            low=list(d.action_low) if continuous and d.action_low else None,
                            high=list(d.action_high) if continuous and d.action_high else None)
        spaces[d.name] = space.to_dict()
    return {"kind": "domains", "domains": spaces}
