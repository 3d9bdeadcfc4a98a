"""Fine-tuning a pretrained dynamics model on new token shards, most often robot data with a new action space.

    wm-video train dynamics --config configs/dynamics/finetune_small.yaml --init-from runs/dyn_video/export \
        --data data/robot_tokens --out runs/dyn_robot

What carries over. The architecture (width, depth, heads, window, positions, reward bins) is the pretrained
model's ``config.json``; the run config's model section only contributes its training-time fields
(:data:`TRAINING_FIELDS`: dropout, null-action rate, loss weights, ...). The action space and its normalisation
statistics come from the shards' ``dataset.json``, as for a fresh model. Vocabulary and token grid must match
the pretrained model's: the shards must be tokenized by the same (frozen) tokenizer, otherwise the token ids mean
nothing to it and the run stops with an error naming both values. Every weight whose name and shape match is
copied. The action encoder's embedding (discrete table or continuous MLP) is copied only when the action space
has the same kind and size and ``finetune.fresh_actions`` is off; otherwise it starts fresh, zero-initialised, so
every real action starts equal to the kept learned null action and the fine-tuned model starts as exactly the
pretrained one. A model pretrained on action-free video has only the null action, so its new action encoder
always starts fresh.

Freezing. ``finetune.freeze`` lists parameter-name prefixes (``*`` matches any run of characters), e.g.
``backbone.blocks.*.spatial`` for every block's spatial attention; frozen parameters keep ``requires_grad=False``
and the optimizer never sees them. LoRA adapters are not offered: they need ``peft``, which is not a dependency.

Evaluation. Before the first step and after the last, the held-out shards (the split training validates on) are
scored as in ``eval/dynamics/eval_dynamics.py``: every frame predicted in one shot from its clean past and the
true actions (``mask_ratio=1``, argmax). Both results go to ``OUT/finetune_eval.json`` and the log.
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from wm_video.data.schema import DatasetInfo
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel

if TYPE_CHECKING:
    from wm_video.training.dynamics_module import DynamicsTrainConfig

log = logging.getLogger(__name__)

EVAL_FILE = "finetune_eval.json"
# DynamicsConfig fields that shape no weight and may differ between pretraining and fine-tuning: taken from the
# run config. Every other field (the architecture) comes from the pretrained config.json.
TRAINING_FIELDS = ("dropout", "null_action_prob", "termination_pos_weight", "mask_schedule", "token_loss_weight",
                   "reward_loss_weight", "termination_loss_weight", "gradient_checkpointing")
_ACTION_WEIGHTS = ("actions.embed.", "actions.mlp.")  # the action-space-specific part of the action encoder


@dataclass
class FinetuneConfig:
    """Starting a dynamics run from a pretrained export.

    Args:
        init_from: pretrained dynamics export folder (``config.json`` + ``model.safetensors``); None trains from
            scratch. ``--init-from`` on the command line sets it.
        freeze: parameter-name prefixes to keep fixed (``*`` wildcards allowed), e.g. ``token_embed``,
            ``backbone.blocks`` or ``backbone.blocks.*.spatial``; each must match some parameter.
        fresh_actions: start the action encoder's embedding fresh even when the pretrained model has an action
            space of the same kind and size (another robot whose actions mean something else).
        eval_batches: held-out batches scored before and after fine-tuning (None: every held-out clip).
        eval_batch_size: clips per evaluation batch.
    """

    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    fresh_actions: bool = False
    eval_batches: int | None = None
    eval_batch_size: int = 8


@dataclass
class TransferReport:
    """What :func:`transfer_weights` did, by parameter (or buffer) name."""

    kept: list[str] = field(default_factory=list)  # copied from the pretrained model
    fresh: list[str] = field(default_factory=list)  # left at the new model's initialisation
    dropped: list[str] = field(default_factory=list)  # in the pretrained model only

    def summary(self) -> dict[str, Any]:
        return {"kept": len(self.kept), "fresh": self.fresh, "dropped": self.dropped}


def finetune_model_config(cfg: DynamicsTrainConfig, pretrained: DynamicsConfig, info: DatasetInfo,
                          where: str, init_from: str = "the pretrained model") -> DynamicsConfig:
    """The fine-tuned model's config: the pretrained architecture, the run's :data:`TRAINING_FIELDS`, and the
    data's action space and statistics. Raises ``ValueError`` naming the fields when the data's vocabulary or
    token grid differ from the pretrained model's."""
    from wm_video.training.dynamics_module import model_config_for_data

    training = {k: getattr(cfg.model, k) for k in TRAINING_FIELDS}
    base = dataclasses.replace(pretrained, **training)
    config = model_config_for_data(dataclasses.replace(cfg, model=base), info, where)
    wrong = [f"{k}: {getattr(pretrained, k)} in {init_from}, {getattr(config, k)} in {where}"
             for k in ("vocab_size", "token_h", "token_w") if getattr(pretrained, k) != getattr(config, k)]
    if wrong:
        raise ValueError(f"cannot fine-tune {init_from} on {where}: the tokens do not match ({'; '.join(wrong)}). "
                         "Tokenize the data with the tokenizer the pretrained model was trained on "
                         "('wm-video data tokenize --tokenizer DIR ...').")
    return config


def same_action_space(a: DynamicsConfig, b: DynamicsConfig) -> bool:
    """Whether the action encoders of ``a`` and ``b`` take the same inputs (kind and size)."""
    if a.action_type != b.action_type:
        return False
    if a.action_type == "discrete":
        return a.num_actions == b.num_actions
    return a.action_type == "none" or a.action_dim == b.action_dim


@torch.no_grad()
def transfer_weights(pretrained: DynamicsModel, model: DynamicsModel, fresh_actions: bool = False
                     ) -> TransferReport:
    """Copy every weight of ``pretrained`` into ``model`` whose name and shape match, except the action-space
    part of the action encoder when the action spaces differ (or ``fresh_actions``); the learned null action is
    always kept."""
    reuse_actions = not fresh_actions and same_action_space(pretrained.config, model.config)
    source = pretrained.state_dict()
    report = TransferReport()
    target = model.state_dict()
    for name, value in target.items():
        old = source.get(name)
        if old is None or old.shape != value.shape or (name.startswith(_ACTION_WEIGHTS) and not reuse_actions):
            report.fresh.append(name)
            continue
        value.copy_(old)
        report.kept.append(name)
    report.dropped = sorted(set(source) - set(target))
    return report


def freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters whose names start with one of ``prefixes`` (``*``
    wildcards allowed; a prefix ends at a name boundary); returns their names. An unmatched prefix is an error
    listing the model's modules."""
    names = [name for name, _ in model.named_parameters()]
    frozen: set[str] = set()
    for prefix in prefixes:
        hit = [n for n in names if fnmatch.fnmatchcase(n, prefix) or fnmatch.fnmatchcase(n, f"{prefix}.*")]
        if not hit:
            modules = [n for n, _ in model.named_modules() if n and n.count(".") <= 1]
            raise ValueError(f"finetune.freeze: {prefix!r} matches no parameter name; modules: {modules} "
                             "(e.g. backbone.blocks, or backbone.blocks.*.spatial for every block's spatial attention)")
        frozen.update(hit)
    for name, p in model.named_parameters():
        if name in frozen:
            p.requires_grad_(False)
    return [n for n in names if n in frozen]


@torch.no_grad()
def heldout_eval(model: DynamicsModel, data: str | Path, val_fraction: float, batch_size: int = 8,
                 max_batches: int | None = None) -> dict[str, Any]:
    """Score ``model`` on the held-out shards of ``data`` (the split training uses), each clip cut to its last
    ``context_frames`` frames: one-shot next-frame token accuracy and cross-entropy (nats per token) with the
    true actions and with the null action, and the copy-last-frame accuracy. Runs where the model is; leaves it
    in the mode it found it."""
    from wm_video.training.run import heldout_loader

    loader, _ = heldout_loader(data, val_fraction, batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = model.config.context_frames
    sums = {"correct": 0.0, "copy": 0.0, "ce": 0.0, "ce_null": 0.0, "tokens": 0.0}
    clips = 0
    for i, batch in enumerate(loader):
        if max_batches is not None and i >= max_batches:
            break
        tokens = batch["tokens"][:, -window:].to(device)
        actions = batch.get("actions")
        actions = actions[:, -window:].to(device) if actions is not None else None
        target = tokens[:, 1:]
        logits = model(tokens, actions, mask_ratio=1.0).logits.float()  # (b, t-1, h, w, k)
        sums["ce"] += float(F.cross_entropy(logits.flatten(0, -2), target.flatten(), reduction="sum"))
        sums["correct"] += float((logits.argmax(-1) == target).sum())
        sums["copy"] += float((tokens[:, :-1] == target).sum())
        sums["tokens"] += target.numel()
        if actions is not None:
            null = model(tokens, None, mask_ratio=1.0).logits.float()
            sums["ce_null"] += float(F.cross_entropy(null.flatten(0, -2), target.flatten(), reduction="sum"))
        clips += len(tokens)
    model.train(was_training)
    n = max(sums["tokens"], 1)
    result = {"clips": clips, "predicted_tokens": int(sums["tokens"]), "next_frame_token_acc": sums["correct"] / n,
              "token_ce_true_actions": sums["ce"] / n, "copy_last_frame_acc": sums["copy"] / n}
    if sums["ce_null"]:
        result["token_ce_null_action"] = sums["ce_null"] / n
    return result


class Finetuning:
    """One fine-tuning run's extra steps around the ordinary dynamics training: :meth:`model_config` before the
    module is built, :meth:`prepare` (transfer, freeze, evaluate) before fitting, :meth:`finish` (evaluate, write
    ``finetune_eval.json``) after."""

    def __init__(self, cfg: DynamicsTrainConfig, data: str | Path) -> None:
        if not cfg.finetune.init_from:
            raise ValueError("finetune.init_from is not set: name the pretrained dynamics export (--init-from DIR)")
        self.cfg, self.data = cfg, str(data)
        self.source = str(cfg.finetune.init_from)
        self.pretrained = DynamicsModel.from_pretrained(self.source)
        self.record: dict[str, Any] = {}

    def model_config(self, info: DatasetInfo) -> DynamicsConfig:
        config = finetune_model_config(self.cfg, self.pretrained.config, info, self.data, self.source)
        log.info("fine-tuning from %s: architecture from its config.json, action space %s from %s/dataset.json",
                 self.source, config.action_type, self.data)
        return config

    def prepare(self, model: DynamicsModel) -> None:
        """Copy the pretrained weights into ``model``, freeze the configured parts, and score it on held-out data
        (on the main process only)."""
        ft = self.cfg.finetune
        report = transfer_weights(self.pretrained, model, ft.fresh_actions)
        frozen = freeze(model, ft.freeze)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("fine-tuning: kept %d pretrained tensors, fresh: %s, dropped: %s; %d frozen tensors, %s of %s "
                 "parameters trainable", len(report.kept), report.fresh or "none", report.dropped or "none",
                 len(frozen), f"{trainable:,}", f"{total:,}")
        self.record = {"init_from": self.source, "data": self.data, "transfer": report.summary(),
                       "freeze": list(ft.freeze), "frozen_tensors": len(frozen), "trainable_parameters": trainable,
                       "parameters": total, "action_type": model.config.action_type}
        del self.pretrained  # its weights are in ``model`` now
        if _main_process():
            self.record["before"] = self._evaluate(model, "before")

    def finish(self, model: DynamicsModel, out: str | Path, steps: int) -> Path | None:
        """Score the trained ``model`` and write ``out/finetune_eval.json`` (main process); returns its path."""
        if not _main_process():
            return None
        self.record["after"] = self._evaluate(model, "after")
        self.record["steps"] = steps
        self.record["protocol"] = {
            "split": f"held-out shards, val_fraction={self.cfg.val_fraction}",
            "prediction": "one-shot (mask_ratio=1), argmax, clean context, true actions; clips cut to the last "
                          "context_frames frames",
            "eval_batches": self.cfg.finetune.eval_batches, "date": datetime.date.today().isoformat()}
        path = Path(out) / EVAL_FILE
        path.write_text(json.dumps(self.record, indent=2) + "\n")
        log.info("fine-tuning evaluation written to %s", path)
        return path

    def _evaluate(self, model: DynamicsModel, when: str) -> dict[str, Any] | None:
        from wm_video.data.reader import load_dataset_info
        from wm_video.training.run import split_shards

        if not split_shards(len(load_dataset_info(self.data).shards), self.cfg.val_fraction)[1]:
            log.warning("no held-out shards in %s (val_fraction=%s, needs 2 or more shards): no %s-fine-tuning "
                        "evaluation", self.data, self.cfg.val_fraction, when)
            return None
        ft, device = self.cfg.finetune, next(model.parameters()).device
        use_gpu = torch.cuda.is_available() and self.cfg.trainer.accelerator not in ("cpu",)
        model.to("cuda" if use_gpu else "cpu")
        try:
            result = heldout_eval(model, self.data, self.cfg.val_fraction, ft.eval_batch_size, ft.eval_batches)
        finally:
            model.to(device)
        log.info("held-out %s fine-tuning: token acc %.4f, token CE %.4f (copy-last-frame acc %.4f, %d clips)", when,
                 result["next_frame_token_acc"], result["token_ce_true_actions"], result["copy_last_frame_acc"],
                 result["clips"])
        return result


def _main_process() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
