"""Task text in dynamics training: the run's frozen text encoder (``DynamicsTrainConfig.text_encoder``), the model
fields it sets (``model.text_dim``, its width, and ``model.text_encoder``, the folder recorded in the export's
``config.json``), the check that the data carries task text, and each batch's embeddings
(``batch["text_embeddings"]`` ``(b, text_dim)`` from the loader's ``batch["task"]``, cached per distinct text).

    wm-video train dynamics --preset small --data data/metaworld_tokens --out runs/dyn_text text_encoder=models/t5
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.models.text_encoder import TextEncoder
from wm_video.training.dynamics_config import DynamicsTrainConfig

log = logging.getLogger(__name__)


def require_task_text(data: str | Path) -> None:
    """ValueError unless the first clip of the dataset at ``data`` carries task text (``meta.json`` ``extra.task``):
    a dataset made before task text was recorded, or from a source without tasks, fails here, before training."""
    info = load_dataset_info(data)
    urls = shard_paths(data, info)
    clip = next(iter_clips(urls[0], info.action_space), None) if urls else None
    if clip is None or clip.meta.task is None:
        raise ValueError(f"train dynamics: {data} has no task text (its clips' meta.json lack extra.task), but the run "
                         "is conditioned on text (text_encoder is set): collect Meta-World or convert a LeRobot "
                         "dataset again (both record each clip's task) and tokenize it, or drop text_encoder")


def setup_text(cfg: DynamicsTrainConfig, datasets: Iterable[str | Path]) -> tuple[DynamicsTrainConfig,
                                                                                  TextEncoder | None]:
    """The run config with the model's text fields set from ``cfg.text_encoder``, and that encoder (None: no text).

    The model's ``text_dim`` is the encoder's width (a ``model.text_dim`` set to another is an error, and one set
    without an encoder too: the encoder is never downloaded); every dataset in ``datasets`` must carry task text.
    A fine-tuned model whose export has text needs the encoder again; one without gains text weights that start at
    zero (it starts as itself)."""
    model = cfg.model
    if not cfg.text_encoder:
        if model.text_dim:
            raise ValueError(f"train dynamics: the model is conditioned on task text (text_dim={model.text_dim}"
                             f"{', trained with ' + model.text_encoder if model.text_encoder else ''}): give "
                             "text_encoder=PATH, a local transformers folder (T5 or CLIP text model; nothing is "
                             "downloaded), or set model.text_dim=0 to train without text")
        return cfg, None
    encoder = TextEncoder(cfg.text_encoder)
    if model.text_dim and model.text_dim != encoder.dim:
        raise ValueError(f"train dynamics: the model's text_dim is {model.text_dim}, text encoder {cfg.text_encoder} "
                         f"gives {encoder.dim}-wide embeddings; leave model.text_dim at 0 (it is taken from the "
                         "encoder), or give the encoder the model was trained with")
    for data in datasets:
        require_task_text(data)
    log.info("task text: %s (%s, %d-wide embeddings, text dropout %.2f)", encoder.name, encoder.pooling, encoder.dim,
             model.text_dropout)
    model = dataclasses.replace(model, text_dim=encoder.dim, text_encoder=encoder.name)
    return dataclasses.replace(cfg, model=model), encoder


def with_text_embeddings(batch: dict[str, Any], encoder: TextEncoder | None) -> dict[str, Any]:
    """``batch`` with ``text_embeddings`` float ``(b, text_dim)`` on the CPU, from its ``task`` texts (no encoder:
    ``batch`` itself). ValueError naming the first clip without task text."""
    if encoder is None:
        return batch
    tasks = batch.get("task") or [None] * len(batch["tokens"])
    missing = [key for key, task in zip(batch.get("key", range(len(tasks))), tasks, strict=False) if task is None]
    if missing:
        raise ValueError(f"train dynamics: clip {missing[0]} (and {len(missing) - 1} more of the batch) has no task "
                         "text (meta.json extra.task), but the model is conditioned on text")
    return {**batch, "text_embeddings": encoder(tasks)}


def embedded(batches: Iterable[dict[str, Any]], encoder: TextEncoder | None) -> Iterator[dict[str, Any]]:
    """:func:`with_text_embeddings` of every batch."""
    return (with_text_embeddings(b, encoder) for b in batches)
