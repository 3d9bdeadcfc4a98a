"""Training checkpoints to release weights: a Lightning ``.ckpt`` file or a DeepSpeed ZeRO folder in, a part's
export (``config.json`` + ``model.safetensors``, what ``from_pretrained`` reads) out.

ZeRO shards the fp32 master weights (and with stage 3 the parameters) over the ranks that trained; DeepSpeed's
``zero_to_fp32`` utilities merge them back into one full fp32 state dict, on one CPU process, whatever the
number of ranks was. Every file is read with ``weights_only=True`` (DeepSpeed's own loads included, see
:class:`~wm_video.training.checkpointing.weights_only_loads`).

Which model a checkpoint holds: each checkpoint written through :func:`wm_video.training.build_trainer` records
``export`` = the part's class and its actual config (the decoder's, say, includes its tokenizer's config and
fingerprint, which the run config does not), so :func:`export_part` rebuilds exactly that model. With an EMA of the
weights (``ema_decay``, :mod:`wm_video.training.ema`) a checkpoint's ``state_dict`` holds the average, so the export
is the EMA's, as at the end of training; the raw weights stay in ``current_model_state`` for resuming. A whole world
model's export can call :func:`export_part` once per part folder.

Export folders are written by :func:`save_part`, which loses nothing: a previous part export is replaced, a folder
holding anything else (a run folder given as ``--out``, say) is refused unless ``overwrite``, and even then only
the :data:`PART_FILES` in it are replaced (:func:`wm_video.utils.atomic.write_folder`).
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
import pickle
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn

from wm_video.models.export import CONFIG, QUALITY, WEIGHTS, one_line
from wm_video.training.checkpointing import load_checkpoint_meta, weights_only_loads
from wm_video.training.lora import LoraOptions, apply_lora, merge_lora
from wm_video.utils.atomic import check_output_folder, write_folder
from wm_video.utils.extras import MissingExtraError

log = logging.getLogger(__name__)

MODULE_ATTR = "model"  # the LightningModule attribute that holds the exported part (every *_module.py)
_WRAPPER_PREFIXES = ("_forward_module.", "module.")  # Lightning's and DeepSpeed's wrappers, when they show
PART_CLASSES = {  # export config class -> model class, for checkpoints written before ``export`` was recorded
    "wm_video.models.tokenizer.config:TokenizerConfig": "wm_video.models.tokenizer.model:VQTokenizer",
    "wm_video.models.dynamics.config:DynamicsConfig": "wm_video.models.dynamics.model:DynamicsModel",
    "wm_video.models.decoder.config:DecoderConfig": "wm_video.models.decoder.model:DiffusionDecoder",
}
PART_FILES = (CONFIG, WEIGHTS, QUALITY, "README.md")  # all a part export holds (README.md: the mixin's model card)


def _import(target: str) -> Any:
    module, _, name = target.partition(":")
    if not module.startswith("wm_video.models.") or not name:  # only the project's models load from a checkpoint
        raise ValueError(f"checkpoint names {target!r}: only classes under wm_video.models are exported")
    try:
        return getattr(importlib.import_module(module), name)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"checkpoint names {target!r}, which does not exist ({e})") from e


def load_state_dict(checkpoint: str | Path) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """``(full fp32-or-saved-dtype state dict of the LightningModule, checkpoint dict without weights)``."""
    path = Path(checkpoint)
    if not path.exists():
        raise FileNotFoundError(f"{path}: no such checkpoint (a .ckpt file or a DeepSpeed checkpoint folder)")
    if path.is_dir():
        try:  # DeepSpeed is an optional heavy dependency (the 'deepspeed' extra), needed for ZeRO folders only
            from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
        except ImportError as e:
            raise MissingExtraError(f"{path} is a DeepSpeed checkpoint: reading it needs DeepSpeed, the 'deepspeed' "
                                    'extra (pip install -e ".[deepspeed]")') from e

        meta = read_checkpoint(path, load_checkpoint_meta)
        with weights_only_loads():
            state = read_checkpoint(path, lambda p: get_fp32_state_dict_from_zero_checkpoint(str(p)))
        return dict(state), meta
    ckpt = read_checkpoint(path, lambda p: torch.load(p, map_location="cpu", weights_only=True))
    if not isinstance(ckpt, dict) or not isinstance(ckpt.get("state_dict"), dict):
        raise ValueError(f"{path}: no 'state_dict' in this file; not a Lightning training checkpoint")
    return ckpt.pop("state_dict"), ckpt


def read_checkpoint(path: Path, load: Callable[[Path], Any]) -> Any:
    """``load(path)``, with a one-line ValueError naming the file when it is truncated, not a torch file (plain
    text) or holds pickled objects other than tensors and plain values (refused, never unpickled)."""
    try:
        return load(path)
    except pickle.UnpicklingError as e:
        found = re.search(r"Unsupported global: GLOBAL (\S+)", str(e))  # torch's weights_only refusal names it
        why = (f"holds a pickled Python object ({found.group(1)}) besides tensors and plain values; refused, "
               "checkpoints load with weights_only" if found else "not a torch checkpoint (plain text or another "
               "format)")
        raise ValueError(f"{path}: {why}") from e
    except (RuntimeError, EOFError, OSError, ValueError, KeyError, AttributeError) as e:  # torn zip, empty, foreign
        if isinstance(e, FileNotFoundError):  # already says which file is missing
            raise
        raise ValueError(f"{path}: not a readable training checkpoint; truncated or not one ({one_line(e)})") from e


def part_state_dict(state: dict[str, torch.Tensor], attr: str = MODULE_ATTR) -> dict[str, torch.Tensor]:
    """The entries of the LightningModule's ``attr`` submodule, without the prefix (training-only networks such as
    a discriminator are left out)."""
    out = {}
    for key, value in state.items():
        for wrapper in _WRAPPER_PREFIXES:
            if key.startswith(wrapper):
                key = key[len(wrapper):]
        if key.startswith(attr + "."):
            out[key[len(attr) + 1:]] = value
    return out


def _rebuild(meta: dict[str, Any], path: Path) -> nn.Module:
    info = meta.get("export")
    if info is None:  # older checkpoints: match the run config's model section against the part configs
        model_cfg = ((meta.get("hyper_parameters") or {}).get("config") or {}).get("model")
        if not isinstance(model_cfg, dict):
            raise ValueError(f"{path}: neither 'export' nor hyper_parameters.config.model; cannot tell which model "
                             "this checkpoint holds")
        for cfg_target, model_target in PART_CLASSES.items():
            fields = {f.name for f in dataclasses.fields(_import(cfg_target))}
            if set(model_cfg) <= fields:
                info = {"target": model_target, "config": model_cfg}
                break
        else:
            raise ValueError(f"{path}: hyper_parameters.config.model matches no part config ({sorted(model_cfg)})")
    if not (isinstance(info, dict) and isinstance(info.get("target"), str) and isinstance(info.get("config"), dict)):
        raise ValueError(f"{path}: field 'export' must be {{'target': 'module:Class', 'config': {{...}}}}")
    cls = _import(info["target"])
    try:
        return cls(info["config"])
    except (TypeError, ValueError, ZeroDivisionError) as e:
        raise ValueError(f"{path}: field 'export.config': {one_line(e)}") from e


def is_part_export(path: Path) -> bool:
    """Whether ``path`` holds a part export this project wrote: weights, and a config.json whose fields all belong
    to one part's config (a Hugging Face model folder, say, has other fields)."""
    try:
        config = json.loads((path / CONFIG).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or not (path / WEIGHTS).is_file():
        return False
    return any(set(config) <= {f.name for f in dataclasses.fields(_import(target))} for target in PART_CLASSES)


def save_part(model: nn.Module, out: str | Path, overwrite: bool = False) -> Path:
    """``model.save_pretrained`` into export folder ``out``, whole or not at all; returns ``out``.

    ``out`` may be absent, empty or a previous part export (replaced); a folder holding anything else is refused
    (:class:`~wm_video.utils.atomic.OutputRefused`) unless ``overwrite``, and even then only the :data:`PART_FILES`
    in it are replaced (a stale ``quality.json`` included), the rest kept."""
    return write_folder(out, model.save_pretrained, previous=is_part_export, marker=CONFIG, owned=PART_FILES,
                        what="part export", overwrite=overwrite)


def export_part(checkpoint: str | Path, out: str | Path, overwrite: bool = False) -> Path:
    """Consolidate ``checkpoint`` (``.ckpt`` file or ZeRO folder) into the part's export folder ``out``
    (:func:`save_part`, with ``overwrite``); returns ``out``."""
    path, out = Path(checkpoint), Path(out)
    check_output_folder(out, is_part_export, PART_FILES, "part export", overwrite)  # before any work
    state, meta = load_state_dict(path)
    model = _rebuild(meta, path)
    weights = part_state_dict(state)
    # a LoRA fine-tuning checkpoint holds the adapter form: rebuild it, load, then fold the adapters in
    lora = (((meta.get("hyper_parameters") or {}).get("config") or {}).get("finetune") or {}).get("lora")
    if lora:
        apply_lora(model, LoraOptions(**lora))
    result = model.load_state_dict(weights, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise ValueError(f"{path}: weights do not fit {type(model).__name__}: missing {result.missing_keys[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}")
    if lora:
        merge_lora(model)
    save_part(model, out, overwrite)
    log.info("exported %s (step %s) from %s to %s", type(model).__name__, meta.get("global_step"), path, out)
    return out
