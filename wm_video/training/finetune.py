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
they adapt (:func:`~wm_video.training.lora.merge_lora`), so ``OUT/export`` is a plain :class:`DynamicsModel` that
loads without peft, and ``wm-video export --checkpoint`` does the same for a LoRA run's checkpoints. The adapters
themselves live in :mod:`wm_video.training.lora`.

Evaluation. Before the first step and after the last, the held-out clips (the split training validates on) are
scored by :func:`wm_video.evaluation.dynamics_scores.score_dynamics`, the protocol of
``eval/dynamics/eval_dynamics.py``: every frame predicted in one shot from its clean past and the true actions
(``mask_ratio=1``, argmax), and again with each clip given another clip's actions and with the null action (the
gaps measure how much the model uses the actions). Both results go to ``OUT/finetune_eval.json`` (written
atomically) and the log.

Mixtures. With a config's ``mixture:`` (no ``--data``) the run fine-tunes on several datasets at once, one action
domain per source (:mod:`wm_video.data.mixture`): a source whose domain the pretrained model has continues that
domain's encoder (its action space must be the domain's kind and size, else an error naming the source's folder,
the domain and both action spaces), a new one is added as ``finetune.domain`` adds one (starting as the null
action), and a model of one action space is domain ``default``. Domains no source names stay as they were, bitwise.
Freezing and LoRA work as for one dataset; the evaluation before and after is per domain, each on its own held-out
clips (``finetune_eval.json``: ``domains.NAME.before`` / ``.after``, and ``new_domains``).

Tokenizer check. Before that first score, the fine-tuning tokens' tokenizer is set against the frames they were made
from: its reconstruction PSNR there (as ``data tokenize`` measured it) beside its own held-out figure, with a warning
when it is far below, i.e. a tokenizer from another domain (:mod:`wm_video.data.tokenizer_fit`). The record goes to
``finetune_eval.json`` (``tokenizer_fit``).
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from lightning.pytorch.utilities import rank_zero_only
from torch import nn

from wm_video.data.loader import heldout_loader
from wm_video.data.mixture import MixtureSpec
from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import DatasetInfo
from wm_video.data.split import split_dataset
from wm_video.data.tokenizer_fit import report_token_dataset_fit
from wm_video.evaluation.dynamics_scores import PROTOCOL, score_dynamics
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.models.dynamics.config import DEFAULT_DOMAIN
from wm_video.training.dynamics_config import DynamicsTrainConfig, action_domain_for, model_config_for_data
from wm_video.training.lora import apply_lora, merge_lora, params_matching
from wm_video.training.trainer_config import DEEPSPEED
from wm_video.utils.atomic import atomic_write_json

log = logging.getLogger(__name__)

EVAL_FILE = "finetune_eval.json"
# DynamicsConfig fields that shape no weight and may differ between pretraining and fine-tuning: taken from the
# run config. Every other field (the architecture) comes from the pretrained config.json. gradient_checkpointing is
# among them so that an old export that set it does not switch recomputation on: trainer.activation_checkpointing
# is the one switch (DynamicsTrainConfig clears the run's model flag).
TRAINING_FIELDS = ("dropout", "null_action_prob", "termination_pos_weight", "mask_schedule", "token_loss_weight",
                   "reward_loss_weight", "termination_loss_weight", "gradient_checkpointing")
_ACTION_WEIGHTS = ("actions.embed.", "actions.mlp.")  # the action-space-specific part of the action encoder


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
    training = {k: getattr(cfg.model, k) for k in TRAINING_FIELDS}
    # A fresh action encoder starts as the null action, so the fine-tune starts exactly as the pretrained model.
    base = dataclasses.replace(pretrained, **training, action_init="zero")
    config = model_config_for_data(dataclasses.replace(cfg, model=base), info, where)
    _check_tokens(pretrained, config, where, init_from)
    return config


def _check_tokens(pretrained: DynamicsConfig, data: DynamicsConfig, where: str, init_from: str) -> None:
    wrong = [f"{k}: {getattr(pretrained, k)} in {init_from}, {getattr(data, k)} in {where}"
             for k in ("vocab_size", "token_h", "token_w") if getattr(pretrained, k) != getattr(data, k)]
    if wrong:
        raise ValueError(f"cannot fine-tune {init_from} on {where}: the tokens do not match ({'; '.join(wrong)}). "
                         "Tokenize the data with the tokenizer the pretrained model was trained on "
                         "('wm-video data tokenize --tokenizer DIR ...').")


def domain_finetune_config(cfg: DynamicsTrainConfig, pretrained: DynamicsModel, info: DatasetInfo, where: str,
                           init_from: str) -> DynamicsConfig:
    """The config of a fine-tune into action domain ``cfg.finetune.domain`` (:class:`FinetuneConfig`): the
    pretrained architecture and domains, the run's :data:`TRAINING_FIELDS`. A new domain is added to
    ``pretrained`` itself (:meth:`DynamicsModel.add_domain`: a fresh encoder, every other weight as it was), so the
    transfer copies every weight; a known one must take the data's kind and size of actions (ValueError naming
    both otherwise), and keeps its own normalisation statistics."""
    name, known = cfg.finetune.domain, [d.name for d in pretrained.config.action_domains]
    if name is None:
        raise ValueError(f"{init_from} has {len(known)} action domains {known}: name the one {where} is of with "
                         "finetune.domain=NAME (a known name continues that domain's encoder, a new one adds one)")
    _check_tokens(pretrained.config, model_config_for_data(cfg, info, where), where, init_from)
    spec = action_domain_for(name, info)
    if name not in known:
        pretrained.add_domain(spec)
        log.info("fine-tuning into a new action domain %r (%s) beside %s", name, info.action_space.to_dict(), known)
    else:
        have = pretrained.config.domain(name)
        if (have.action_type, have.num_actions, have.action_dim) != (spec.action_type, spec.num_actions,
                                                                     spec.action_dim):
            raise ValueError(f"{where}: its actions ({spec.action_type}, {spec.num_actions or spec.action_dim}) are "
                             f"not those of action domain {name!r} of {init_from} ({have.action_type}, "
                             f"{have.num_actions or have.action_dim}); name a new domain (finetune.domain, or a "
                             "mixture source's 'domain')")
    training = {k: getattr(cfg.model, k) for k in TRAINING_FIELDS}
    return dataclasses.replace(pretrained.config, **training, action_init="zero")


def same_action_space(a: DynamicsConfig, b: DynamicsConfig) -> bool:
    """Whether the action encoders of ``a`` and ``b`` take the same inputs (kind and size)."""
    if a.action_type != b.action_type:
        return False
    if a.action_type == "discrete":
        return a.num_actions == b.num_actions
    return a.action_type == "none" or a.action_dim == b.action_dim


@torch.no_grad()
def transfer_weights(pretrained: DynamicsModel, model: DynamicsModel, fresh_actions: bool = False,
                     action_weights: tuple[str, ...] = _ACTION_WEIGHTS) -> TransferReport:
    """Copy every weight of ``pretrained`` into ``model`` whose name and shape match, except the action-space
    part of the action encoder (the weights named ``action_weights``) when the action spaces differ (or
    ``fresh_actions``); the learned null action is always kept."""
    reuse_actions = not fresh_actions and same_action_space(pretrained.config, model.config)
    source = pretrained.state_dict()
    report = TransferReport()
    target = model.state_dict()
    for name, value in target.items():
        old = source.get(name)
        if old is None or old.shape != value.shape or (name.startswith(action_weights) and not reuse_actions):
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
    frozen = params_matching(model, prefixes, "finetune.freeze")
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    return frozen


class Finetuning:
    """One fine-tuning run's extra steps around the ordinary dynamics training: :meth:`model_config` before the
    module is built, :meth:`prepare` (transfer, LoRA, freeze, evaluate) before fitting, :meth:`before_export`
    (fold LoRA adapters into the weights) between fitting and the export, :meth:`finish` (evaluate, write
    ``finetune_eval.json``) after."""

    def __init__(self, cfg: DynamicsTrainConfig, data: str | Path | MixtureSpec) -> None:
        if not cfg.finetune.init_from:
            raise ValueError("finetune.init_from is not set: name the pretrained dynamics export (--init-from DIR)")
        if cfg.finetune.lora is not None and cfg.trainer.strategy in DEEPSPEED:
            raise ValueError(f"finetune.lora with trainer.strategy={cfg.trainer.strategy!r} is not supported: LoRA "
                             "trains a small fraction of the weights, so plain data parallelism (ddp) serves it")
        self.cfg, self.mixture = cfg, isinstance(data, MixtureSpec)
        if self.mixture and cfg.finetune.domain is not None:
            raise ValueError(f"finetune.domain={cfg.finetune.domain} names the action domain of one dataset (--data); "
                             "a mixture's sources name theirs (field 'domain' of each source, default: the folder's "
                             "name): drop finetune.domain")
        # (domain, dataset folder) of each dataset fine-tuned on: the one --data, or a mixture's sources in order
        self.targets: list[tuple[str | None, str]] = (
            [(src.name, str(src.path)) for src in data.sources] if isinstance(data, MixtureSpec)
            else [(cfg.finetune.domain, str(data))])
        self.source = str(cfg.finetune.init_from)
        self.pretrained = DynamicsModel.from_pretrained(self.source)
        self.pretrained_domains = [d.name for d in self.pretrained.config.domains]
        self.record: dict[str, Any] = {}

    @property
    def domain(self) -> str | None:
        """The action domain of a one-dataset run (``finetune.domain``; None: a model of one action space)."""
        return self.cfg.finetune.domain

    @property
    def data(self) -> str:
        """The dataset folder of a one-dataset run."""
        return self.targets[0][1]

    def model_config(self, info: DatasetInfo) -> DynamicsConfig:
        if self.domain is not None or self.pretrained_domains:
            config = domain_finetune_config(self.cfg, self.pretrained, info, self.data, self.source)
            log.info("fine-tuning from %s into its action domain %r of %s", self.source, self.domain,
                     [d.name for d in config.domains])
            return config
        config = finetune_model_config(self.cfg, self.pretrained.config, info, self.data, self.source)
        log.info("fine-tuning from %s: architecture from its config.json, action space %s from %s/dataset.json",
                 self.source, config.action_type, self.data)
        return config

    def mixture_config(self, infos: dict[str, DatasetInfo]) -> DynamicsConfig:
        """The config of a fine-tune on a mixture (``infos``: each source's ``dataset.json`` by domain, in the
        spec's order): :func:`domain_finetune_config` for each source in turn, so a domain the pretrained model has
        continues its encoder (same kind and size of actions, or an error naming the source's folder, the domain
        and both action spaces) and a new one is added to it; a model of one action space is domain ``default``."""
        config = self.pretrained.config
        for (name, root), info in zip(self.targets, infos.values(), strict=True):
            one = dataclasses.replace(self.cfg, finetune=dataclasses.replace(self.cfg.finetune, domain=name))
            config = domain_finetune_config(one, self.pretrained, info, root, self.source)
        self.record["new_domains"] = [n for n, _ in self.targets if n not in self._known()]
        log.info("fine-tuning from %s on a mixture: domains %s continue their encoders, %s are new; the model's "
                 "domains: %s", self.source, [n for n, _ in self.targets if n in self._known()],
                 self.record["new_domains"], [d.name for d in config.domains])
        return config

    def _known(self) -> list[str]:
        """The pretrained model's domains (``default`` for a model of one action space)."""
        return self.pretrained_domains or [DEFAULT_DOMAIN]

    def prepare(self, model: DynamicsModel) -> None:
        """Copy the pretrained weights into ``model``, freeze the configured parts, and score it on held-out data
        (on the main process only)."""
        ft = self.cfg.finetune
        names = [name for name, _ in self.targets if name is not None]
        fresh = tuple(f"actions.encoders.{name}." for name in names) if model.config.domains else _ACTION_WEIGHTS
        report = transfer_weights(self.pretrained, model, ft.fresh_actions, fresh)
        adapted = apply_lora(model, ft.lora) if ft.lora is not None else []
        frozen = freeze(model, ft.freeze)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        total = sum(p.numel() for p in model.parameters())
        log.info("fine-tuning: kept %d pretrained tensors, fresh: %s, dropped: %s; %d frozen tensors, %s of %s "
                 "parameters trainable", len(report.kept), report.fresh or "none", report.dropped or "none",
                 len(frozen), f"{trainable:,}", f"{total:,}")
        self.record.update({"init_from": self.source, "transfer": report.summary(), "freeze": list(ft.freeze),
                            "frozen_tensors": len(frozen), "trainable_parameters": trainable, "parameters": total})
        # one dataset: its domain's record at the top level (as before mixtures); a mixture: one record per domain
        self.parts = {name: {"data": root, "action_type": model.config.domain(name).action_type, "domain": name}
                      for name, root in self.targets}
        if self.mixture:
            self.record["domains"] = self.parts
        else:
            self.record.update(self.parts[self.domain])
            self.parts = {self.domain: self.record}
        if ft.lora is not None:
            log.info("LoRA rank %d (alpha %g) on %d Linear layers; trained in full: %s", ft.lora.rank,
                     ft.lora.scale_alpha, len(adapted), ft.lora.train or "nothing else")
            self.record["lora"] = {**dataclasses.asdict(ft.lora), "alpha": ft.lora.scale_alpha,
                                   "adapted_layers": len(adapted)}
        del self.pretrained  # its weights are in ``model`` now
        if _main_process():
            for name, root in self.targets:
                self.parts[name]["tokenizer_fit"] = report_token_dataset_fit(load_dataset_info(root), root)
                self.parts[name]["before"] = self._evaluate(model, "before", name, root)

    def before_export(self, model: DynamicsModel) -> None:
        """Fold the LoRA adapters into the weights they adapt (in place, on every process), so the export is a
        plain model; nothing to do without LoRA."""
        if self.cfg.finetune.lora is not None:
            log.info("LoRA: merged %d adapters into their layers for the export", merge_lora(model))

    def finish(self, model: DynamicsModel, out: str | Path, steps: int) -> Path | None:
        """Score the trained ``model`` (each domain's held-out clips) and write ``out/finetune_eval.json`` (main
        process); returns its path."""
        if not _main_process():
            return None
        for name, root in self.targets:
            self.parts[name]["after"] = self._evaluate(model, "after", name, root)
            self.parts[name]["split"] = split_dataset(root, self.cfg.val_fraction).rule
        self.record["steps"] = steps
        self.record["protocol"] = {
            "split": self.parts[self.domain].pop("split") if not self.mixture else "per domain (domains.*.split)",
            "prediction": PROTOCOL,
            "eval_batches": self.cfg.finetune.eval_batches, "date": datetime.date.today().isoformat()}
        path = Path(out) / EVAL_FILE
        atomic_write_json(path, self.record)
        log.info("fine-tuning evaluation written to %s", path)
        return path

    def _evaluate(self, model: DynamicsModel, when: str, domain: str | None, data: str) -> dict[str, Any] | None:
        """``domain``'s score on the held-out clips of ``data`` (None when nothing is held out)."""
        if not split_dataset(data, self.cfg.val_fraction).heldout_clips:
            log.warning("nothing held out of %s (see the held-out split above): no %s-fine-tuning evaluation",
                        data, when)
            return None
        ft, device = self.cfg.finetune, next(model.parameters()).device
        use_gpu = torch.cuda.is_available() and self.cfg.trainer.accelerator not in ("cpu",)
        model.to("cuda" if use_gpu else "cpu")
        try:
            loader, _ = heldout_loader(data, self.cfg.val_fraction, ft.eval_batch_size)
            result = score_dynamics(model.domain_model(domain), loader, max_batches=ft.eval_batches).summary()
        finally:
            model.to(device)
        log.info("held-out %s fine-tuning%s: token acc %.4f, token CE %.4f (shuffled actions %s; copy-last-frame acc "
                 "%.4f, %d clips)", when, f" (domain {domain!r})" if domain else "", result["next_frame_token_acc"],
                 result["token_ce_true_actions"],
                 f"{result['token_ce_shuffled_actions']:.4f}" if "token_ce_shuffled_actions" in result else "n/a",
                 result["copy_last_frame_acc"], result["clips"])
        return result


def _main_process() -> bool:
    return getattr(rank_zero_only, "rank", 0) == 0
