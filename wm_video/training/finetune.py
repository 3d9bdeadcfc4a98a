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
and the optimizer never sees them.

LoRA. ``finetune.lora`` (e.g. ``finetune.lora.rank=8`` on the command line) wraps the chosen Linear layers with
peft's LoRA layers, ``W x + (alpha / r) B A x`` with ``B`` zero at the start (so the model starts as the
pretrained one), and trains only ``A`` and ``B`` plus the parameters ``finetune.lora.train`` names (by default the
action encoder, which the new action space needs in full). By default the adapted layers are every block's
attention projections (``qkv``, ``proj``), MLP and adaLN modulation, and the final modulation: the modulation
layers are where actions act, and a model pretrained on action-free video has only ever fed them its null action,
so frozen ones would pass a new action through a nearly rank-one map. Training checkpoints hold the adapter form
(``...qkv.base_layer.weight``, ``...qkv.lora_A.default.weight``); the export folds the adapters into the weights
they adapt (:func:`merge_lora`), so ``OUT/export`` is a plain :class:`DynamicsModel` that loads without peft, and
``wm-video export --checkpoint`` does the same for a LoRA run's checkpoints.

Evaluation. Before the first step and after the last, the held-out clips (the split training validates on) are
scored as in ``eval/dynamics/eval_dynamics.py``: every frame predicted in one shot from its clean past and the
true actions (``mask_ratio=1``, argmax), and again with each clip given another clip's actions and with the null
action (the gaps measure how much the model uses the actions). Both results go to ``OUT/finetune_eval.json`` and
the log.

Tokenizer check. Before that first score, the fine-tuning tokens' tokenizer is set against the frames they were made
from: its reconstruction PSNR there (as ``data tokenize`` measured it) beside its own held-out figure, with a warning
when it is far below, i.e. a tokenizer from another domain (:mod:`wm_video.data.tokenizer_fit`). The record goes to
``finetune_eval.json`` (``tokenizer_fit``).
"""

from __future__ import annotations

import dataclasses
import datetime
import fnmatch
import json
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn

from wm_video.data.schema import DatasetInfo
from wm_video.data.split import split_dataset
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
# The Linear layers LoRA adapts by default: attention projections, MLP and adaLN modulation of every block, and the
# final modulation (not the action encoder, which trains in full, nor the output heads).
DEFAULT_LORA_TARGETS = ("backbone.blocks.*.spatial", "backbone.blocks.*.temporal", "backbone.blocks.*.mlp",
                        "backbone.blocks.*.modulation", "backbone.out_modulation")
LORA_ADAPTER = "default"  # peft's adapter name: the one adapter of a run


@dataclass
class LoraOptions:
    """LoRA adapters (peft) on some Linear layers of the dynamics model, folded into the weights at export.

    Args:
        rank: adapter rank ``r`` (the low-rank update ``B A`` has ``r * (in + out)`` parameters per layer).
        alpha: the update is scaled by ``alpha / rank``; None: ``2 * rank`` (scale 2).
        dropout: dropout on the adapters' input (training only).
        targets: module-name patterns of the layers to adapt (``*`` matches any run of characters); a pattern
            naming a module selects every Linear layer in it, e.g. ``backbone.blocks.*.temporal`` selects each
            block's ``temporal.qkv`` and ``temporal.proj``. Each pattern must select some Linear layer.
        train: parameter-name prefixes trained in full beside the adapters (``*`` wildcards allowed): by default
            the action encoder (``actions``); add ``token_head`` and ``outcome`` to train the output heads too.
    """

    rank: int = 8
    alpha: float | None = None
    dropout: float = 0.0
    targets: list[str] = field(default_factory=lambda: list(DEFAULT_LORA_TARGETS))
    train: list[str] = field(default_factory=lambda: ["actions"])

    def __post_init__(self) -> None:
        if self.rank < 1:
            raise ValueError(f"finetune.lora: field 'rank' must be >= 1, got {self.rank}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"finetune.lora: field 'dropout' must be in [0, 1), got {self.dropout}")
        if not self.targets:
            raise ValueError("finetune.lora: field 'targets' is empty: name the Linear layers to adapt")

    @property
    def scale_alpha(self) -> float:
        return float(self.alpha) if self.alpha is not None else 2.0 * self.rank


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
        lora: train LoRA adapters instead of the full model (:class:`LoraOptions`; None: no adapters). On the
            command line ``finetune.lora.rank=8`` turns them on with the other options at their defaults.
    """

    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    fresh_actions: bool = False
    eval_batches: int | None = None
    eval_batch_size: int = 8
    lora: LoraOptions | None = None


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
    # A fresh action encoder starts as the null action, so the fine-tune starts exactly as the pretrained model.
    base = dataclasses.replace(pretrained, **training, action_init="zero")
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


def _matches(name: str, pattern: str) -> bool:
    """``pattern`` (``*`` wildcards) is ``name`` or a prefix of it that ends at a name boundary."""
    return fnmatch.fnmatchcase(name, pattern) or fnmatch.fnmatchcase(name, f"{pattern}.*")


def _params_matching(model: nn.Module, prefixes: Iterable[str], what: str) -> list[str]:
    """Names of the parameters under ``prefixes``, in model order; an unmatched prefix is an error naming
    ``what`` (the config field) and listing the model's modules."""
    names = [name for name, _ in model.named_parameters()]
    hits: set[str] = set()
    for prefix in prefixes:
        hit = [n for n in names if _matches(n, prefix)]
        if not hit:
            modules = [n for n, _ in model.named_modules() if n and n.count(".") <= 1]
            raise ValueError(f"{what}: {prefix!r} matches no parameter name; modules: {modules} "
                             "(e.g. backbone.blocks, or backbone.blocks.*.spatial for every block's spatial attention)")
        hits.update(hit)
    return [n for n in names if n in hits]


def freeze(model: nn.Module, prefixes: Iterable[str]) -> list[str]:
    """Set ``requires_grad=False`` on the parameters whose names start with one of ``prefixes`` (``*``
    wildcards allowed; a prefix ends at a name boundary); returns their names. An unmatched prefix is an error
    listing the model's modules."""
    frozen = _params_matching(model, prefixes, "finetune.freeze")
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


def lora_targets(model: nn.Module, patterns: Iterable[str]) -> list[str]:
    """Names of the ``nn.Linear`` modules the ``patterns`` select (see :class:`LoraOptions`), in model order. A
    pattern that selects none is an error naming it and listing the model's Linear layers (block indices
    written ``*``)."""
    linear = [n for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    chosen: set[str] = set()
    for pattern in patterns:
        hit = [n for n in linear if _matches(n, pattern)]
        if not hit:
            kinds = list(dict.fromkeys(re.sub(r"\.\d+(?=\.|$)", ".*", n) for n in linear))
            raise ValueError(f"finetune.lora.targets: {pattern!r} matches no Linear layer; the model's Linear layers "
                             f"(block indices as *): {kinds}")
        chosen.update(hit)
    return [n for n in linear if n in chosen]


def apply_lora(model: nn.Module, options: LoraOptions) -> list[str]:
    """Wrap the Linear layers ``options.targets`` select with peft LoRA layers, in place (the model keeps its
    class, its forward and its other modules), and leave trainable only the adapters and the parameters under
    ``options.train``. Returns the adapted modules' names. The adapters start with ``B = 0``: the model computes
    exactly what it did before."""
    from peft import LoraConfig, inject_adapter_in_model

    targets = lora_targets(model, options.targets)
    extra = set(_params_matching(model, options.train, "finetune.lora.train"))
    config = LoraConfig(r=options.rank, lora_alpha=options.scale_alpha, lora_dropout=options.dropout,
                        target_modules=targets, bias="none")
    # Full names select exactly these layers (peft also matches name suffixes: "mlp.0" alone would catch the
    # action encoder's "actions.mlp.0" too).
    inject_adapter_in_model(config, model, adapter_name=LORA_ADAPTER)
    for name, p in model.named_parameters():
        p.requires_grad_(".lora_" in name or name in extra)
    return targets


@torch.no_grad()
def merge_lora(model: nn.Module) -> int:
    """Fold every LoRA adapter of ``model`` into the weight it adapts (``W + (alpha / r) B A``) and put the plain
    layer back in its place, in place: afterwards ``model.state_dict()`` has the plain names again and loads into
    a model built without peft. Returns the number of layers merged."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    wrapped = [(name, m) for name, m in model.named_modules() if isinstance(m, BaseTunerLayer)]
    for name, layer in wrapped:
        layer.merge(safe_merge=True)  # raises on NaN in the merged weight
        parent, _, attr = name.rpartition(".")
        setattr(model.get_submodule(parent) if parent else model, attr, layer.get_base_layer())
    return len(wrapped)


@torch.no_grad()
def heldout_eval(model: DynamicsModel, data: str | Path, val_fraction: float | None, batch_size: int = 8,
                 max_batches: int | None = None) -> dict[str, Any]:
    """Score ``model`` on the held-out clips of ``data`` (the split training uses), each clip cut to its last
    ``context_frames`` frames: one-shot next-frame token accuracy and cross-entropy (nats per token) with the
    true actions, with shuffled actions (each clip of a batch gets the next clip's action sequence; batches of
    one clip reverse it in time) and with the null action, and the copy-last-frame accuracy. Runs where the model
    is; leaves it in the mode it found it."""
    from wm_video.data.loader import heldout_loader

    loader, _ = heldout_loader(data, val_fraction, batch_size)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    window = model.config.context_frames
    sums = {"correct": 0.0, "copy": 0.0, "ce": 0.0, "ce_null": 0.0, "ce_shuffled": 0.0, "correct_shuffled": 0.0,
            "tokens": 0.0}
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
            other = actions.roll(1, dims=0) if len(actions) > 1 else actions.flip(1)
            shuffled = model(tokens, other, mask_ratio=1.0).logits.float()
            sums["ce_shuffled"] += float(F.cross_entropy(shuffled.flatten(0, -2), target.flatten(), reduction="sum"))
            sums["correct_shuffled"] += float((shuffled.argmax(-1) == target).sum())
        clips += len(tokens)
    model.train(was_training)
    n = max(sums["tokens"], 1)
    result = {"clips": clips, "predicted_tokens": int(sums["tokens"]), "next_frame_token_acc": sums["correct"] / n,
              "token_ce_true_actions": sums["ce"] / n, "copy_last_frame_acc": sums["copy"] / n}
    if sums["ce_null"]:
        result.update(token_ce_null_action=sums["ce_null"] / n, token_ce_shuffled_actions=sums["ce_shuffled"] / n,
                      next_frame_token_acc_shuffled_actions=sums["correct_shuffled"] / n)
    return result


class Finetuning:
    """One fine-tuning run's extra steps around the ordinary dynamics training: :meth:`model_config` before the
    module is built, :meth:`prepare` (transfer, LoRA, freeze, evaluate) before fitting, :meth:`before_export`
    (fold LoRA adapters into the weights) between fitting and the export, :meth:`finish` (evaluate, write
    ``finetune_eval.json``) after."""

    def __init__(self, cfg: DynamicsTrainConfig, data: str | Path) -> None:
        from wm_video.training.strategy import DEEPSPEED

        if not cfg.finetune.init_from:
            raise ValueError("finetune.init_from is not set: name the pretrained dynamics export (--init-from DIR)")
        if cfg.finetune.lora is not None and cfg.trainer.strategy in DEEPSPEED:
            raise ValueError(f"finetune.lora with trainer.strategy={cfg.trainer.strategy!r} is not supported: LoRA "
                             "trains a small fraction of the weights, so plain data parallelism (ddp) serves it")
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
        adapted = apply_lora(model, ft.lora) if ft.lora is not None else []
        frozen = freeze(model, ft.freeze)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("fine-tuning: kept %d pretrained tensors, fresh: %s, dropped: %s; %d frozen tensors, %s of %s "
                 "parameters trainable", len(report.kept), report.fresh or "none", report.dropped or "none",
                 len(frozen), f"{trainable:,}", f"{total:,}")
        self.record = {"init_from": self.source, "data": self.data, "transfer": report.summary(),
                       "freeze": list(ft.freeze), "frozen_tensors": len(frozen), "trainable_parameters": trainable,
                       "parameters": total, "action_type": model.config.action_type}
        if ft.lora is not None:
            log.info("LoRA rank %d (alpha %g) on %d Linear layers; trained in full: %s", ft.lora.rank,
                     ft.lora.scale_alpha, len(adapted), ft.lora.train or "nothing else")
            self.record["lora"] = {**dataclasses.asdict(ft.lora), "alpha": ft.lora.scale_alpha,
                                   "adapted_layers": len(adapted)}
        del self.pretrained  # its weights are in ``model`` now
        if _main_process():
            from wm_video.data.reader import load_dataset_info
            from wm_video.data.tokenizer_fit import report_token_dataset_fit

            self.record["tokenizer_fit"] = report_token_dataset_fit(load_dataset_info(self.data), self.data)
            self.record["before"] = self._evaluate(model, "before")

    def before_export(self, model: DynamicsModel) -> None:
        """Fold the LoRA adapters into the weights they adapt (in place, on every process), so the export is a
        plain model; nothing to do without LoRA."""
        if self.cfg.finetune.lora is not None:
            log.info("LoRA: merged %d adapters into their layers for the export", merge_lora(model))

    def finish(self, model: DynamicsModel, out: str | Path, steps: int) -> Path | None:
        """Score the trained ``model`` and write ``out/finetune_eval.json`` (main process); returns its path."""
        if not _main_process():
            return None
        self.record["after"] = self._evaluate(model, "after")
        self.record["steps"] = steps
        self.record["protocol"] = {
            "split": split_dataset(self.data, self.cfg.val_fraction).rule,
            "prediction": "one-shot (mask_ratio=1), argmax, clean context, true actions; clips cut to the last "
                          "context_frames frames",
            "eval_batches": self.cfg.finetune.eval_batches, "date": datetime.date.today().isoformat()}
        path = Path(out) / EVAL_FILE
        path.write_text(json.dumps(self.record, indent=2) + "\n")
        log.info("fine-tuning evaluation written to %s", path)
        return path

    def _evaluate(self, model: DynamicsModel, when: str) -> dict[str, Any] | None:
        if not split_dataset(self.data, self.cfg.val_fraction).heldout_clips:
            log.warning("nothing held out of %s (see the held-out split above): no %s-fine-tuning evaluation",
                        self.data, when)
            return None
        ft, device = self.cfg.finetune, next(model.parameters()).device
        use_gpu = torch.cuda.is_available() and self.cfg.trainer.accelerator not in ("cpu",)
        model.to("cuda" if use_gpu else "cpu")
        try:
            result = heldout_eval(model, self.data, self.cfg.val_fraction, ft.eval_batch_size, ft.eval_batches)
        finally:
            model.to(device)
        log.info("held-out %s fine-tuning: token acc %.4f, token CE %.4f (shuffled actions %s; copy-last-frame acc "
                 "%.4f, %d clips)", when, result["next_frame_token_acc"], result["token_ce_true_actions"],
                 f"{result['token_ce_shuffled_actions']:.4f}" if "token_ce_shuffled_actions" in result else "n/a",
                 result["copy_last_frame_acc"], result["clips"])
        return result


def _main_process() -> bool:
    from lightning.pytorch.utilities import rank_zero_only

    return getattr(rank_zero_only, "rank", 0) == 0
