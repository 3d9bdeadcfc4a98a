"""The dynamics training run's config (:class:`DynamicsTrainConfig`, with its fine-tuning section
:class:`FinetuneConfig`) and the model config a token dataset implies (:func:`model_config_for_data`), or a mixture
of token datasets, one action domain each (:func:`model_config_for_mixture`).

Below :mod:`.finetune` and :mod:`.dynamics_module`, which both read them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from wm_video.data.loader import LoaderConfig
from wm_video.data.mixture import Domain, MixtureSource, MixtureSpec, open_sources
from wm_video.data.schema import ActionSpace, DatasetInfo
from wm_video.models.dynamics import DynamicsConfig
from wm_video.models.dynamics.config import ActionDomain
from wm_video.training.lora import LoraOptions
from wm_video.training.optim import OptimConfig
from wm_video.training.quality import QualityConfig
from wm_video.training.trainer_config import TrainerConfig

log = logging.getLogger(__name__)


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
        domain: the action domain the fine-tuning data is of, so the model keeps one action encoder per domain:
            a name the pretrained model has continues that domain's encoder (the data's action space must be
            its kind and size); a new name adds an encoder that starts as the null action, and every other
            domain's encoder stays as it was (a model of one action space becomes one whose first domain is
            ``default``). Required for a pretrained model of several domains; None (the default) otherwise: the
            data's action space then replaces or continues the model's one.
    """

    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    fresh_actions: bool = False
    eval_batches: int | None = None
    eval_batch_size: int = 8
    lora: LoraOptions | None = None
    domain: str | None = None


@dataclass
class DynamicsTrainConfig:
    """A dynamics training run.

    Args:
        model: the transformer (vocabulary, grid and action fields are filled in from the data).
        trainer: Trainer settings (devices, precision, steps, logging, checkpoints).
        loader: streaming settings for the token shards.
        optim: optimizer and schedule.
        val_fraction: None: validate on the held-out episodes ``dataset.json`` records (the last shards of one
            written before splits were recorded); a number: the last that fraction of the episodes instead; 0:
            no validation (:mod:`wm_video.data.split`).
        val_batches: validation batches per validation run.
        train_frames: frames per training clip, a random crop of each batch's clips (None: the model's
            ``context_frames``); shorter crops buy more optimizer steps per minute where compute is scarce.
        termination_pos_weight_from_data: set ``model.termination_pos_weight`` to the data's ratio of
            non-terminal to terminal steps (clamped to [1, 1000]) instead of the config's value.
        finetune: start from a pretrained export (``finetune.init_from``), freeze parts, evaluate before/after.
        quality: floors of the end-of-training quality gates (reward and termination heads).
        video_every_n_steps: every this many optimizer steps, log open-loop rollouts of a few held-out clips to
            TensorBoard, truth | true actions | shuffled actions, decoded with the data's tokenizer
            (:mod:`wm_video.training.visuals`); 0: off.
        video_clips: clips in each logged video.
        video_context_frames: context frames each logged rollout starts from (the rest of the clip, cut to the
            model's window, is predicted; at most the clip's length - 1); not drawn for a mixture yet.
        mixture: train one model on several token datasets of one tokenizer (:class:`MixtureSource`: ``path``,
            ``weight``, ``domain``; :mod:`wm_video.data.mixture`) instead of ``--data``: each batch comes from one
            dataset, drawn by weight, and each dataset is an action domain of the model (its own action encoder and
            statistics, ``model.domains``); validation scores each domain's held-out clips (``val/DOMAIN/...``) and
            their mean (``val/...``). Empty (the default): the one dataset ``--data`` names. In YAML::

                mixture:
                  - {path: data/pong_tokens, weight: 3}
                  - {path: data/pusht_tokens, weight: 1, domain: pusht}
                  - {path: data/video_tokens}        # action-free video

        text_encoder: condition the model on each clip's task text (``meta.json`` ``extra.task``: Meta-World's task
            names, LeRobot's tasks), embedded by the frozen T5 encoder or CLIP text model in this local
            transformers folder (:mod:`wm_video.models.text_encoder`; nothing is downloaded). ``model.text_dim`` is
            set to its width and ``model.text_encoder`` records it; ``model.text_dropout`` drops clips' text so that
            sampling can guide on it. None (the default): no text. On the command line ``text_encoder=PATH``.

    Activation checkpointing has one switch, ``trainer.activation_checkpointing``: training turns the model's own
    recomputation on from it (:mod:`wm_video.training.parallelize`). ``model.gradient_checkpointing`` stays a field
    of :class:`DynamicsConfig` so that exports and run configs that set it still load, but it is an implementation
    detail: a run config that sets it is read as ``trainer.activation_checkpointing: true`` (with a warning) and
    the model field is cleared, so exports never carry it.
    """

    model: DynamicsConfig = field(default_factory=DynamicsConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    val_fraction: float | None = None
    val_batches: int = 8
    train_frames: int | None = None
    termination_pos_weight_from_data: bool = True
    finetune: FinetuneConfig = field(default_factory=FinetuneConfig)
    quality: QualityConfig = field(default_factory=QualityConfig)
    video_every_n_steps: int = 500
    video_clips: int = 4
    video_context_frames: int = 4
    mixture: list[MixtureSource] = field(default_factory=list)
    text_encoder: str | None = None

    def __post_init__(self) -> None:
        if self.model.gradient_checkpointing:
            log.warning("model.gradient_checkpointing=true is read as trainer.activation_checkpointing=true, the one "
                        "switch for it; set that instead")
            self.trainer = dataclasses.replace(self.trainer, activation_checkpointing=True)
            self.model = dataclasses.replace(self.model, gradient_checkpointing=False)


def _token_fields(info: DatasetInfo, where: str) -> dict[str, Any]:
    """Vocabulary and token grid of a token dataset; ValueError for frame shards."""
    if info.frame_storage != "tokens" or not info.tokens:
        raise ValueError(f"{where} holds {info.frame_storage} frames, not tokens: tokenize it first with "
                         f"'wm-video data tokenize --tokenizer DIR --src {where} --out DIR'")
    token_h, token_w = info.resolution  # a token dataset's resolution is its token grid
    return {"vocab_size": int(info.tokens["vocab_size"]), "token_h": token_h, "token_w": token_w}


def _action_fields(space: ActionSpace, stats: dict[str, Any]) -> dict[str, Any]:
    """The action fields (``action_type``, ``num_actions`` or ``action_dim`` with the normalisation statistics) of
    a dataset's action space and its ``stats.actions``."""
    fields: dict[str, Any] = {"action_type": space.kind}
    if space.kind == "discrete":
        fields["num_actions"] = int(space.n)
    elif space.kind == "continuous":
        fields.update(action_dim=int(space.dim), action_mean=[float(v) for v in stats.get("mean", [])],
                      # a constant dimension (std 0) is left unscaled: dividing by ~0 would blow up any other value
                      action_std=[float(v) if float(v) > 1e-6 else 1.0 for v in stats.get("std", [])])
    return fields


def action_domain_for(name: str, info: DatasetInfo) -> ActionDomain:
    """The :class:`ActionDomain` called ``name`` of a dataset: its action space, statistics and bounds."""
    return ActionDomain(name=name, **_action_fields(info.action_space, info.stats.get("actions") or {}),
                        **_bounds(info.action_space))


def _bounds(space: ActionSpace) -> dict[str, list[float]]:
    """A continuous space's bounds as :class:`ActionDomain`'s ``action_low``/``action_high`` (none when unknown)."""
    if space.kind != "continuous" or space.low is None or space.high is None:
        return {}
    return {"action_low": [float(v) for v in space.low], "action_high": [float(v) for v in space.high]}


def _termination_weight(cfg: DynamicsTrainConfig, infos: list[DatasetInfo]) -> dict[str, Any]:
    """``termination_pos_weight`` from the data's non-terminal to terminal steps (clamped to [1, 1000])."""
    if not cfg.termination_pos_weight_from_data:
        return {}
    steps = sum(info.stats.get("frames", 0) for info in infos)
    terms = sum(info.stats.get("terminations", 0) for info in infos)
    return {"termination_pos_weight": float(min(1000.0, max(1.0, (steps - terms) / terms)))} if steps and terms else {}


def _with_fields(cfg: DynamicsTrainConfig, fields: dict[str, Any], where: str) -> DynamicsConfig:
    changed = {k: v for k, v in fields.items() if getattr(cfg.model, k) != v}
    if changed:
        log.info("model fields set from %s: %s", where, changed)
    return dataclasses.replace(cfg.model, **fields)


def model_config_for_data(cfg: DynamicsTrainConfig, info: DatasetInfo, where: str) -> DynamicsConfig:
    """The model config with vocabulary, token grid, action space and statistics taken from a token dataset."""
    fields = {**_token_fields(info, where), **_action_fields(info.action_space, info.stats.get("actions") or {}),
              **_termination_weight(cfg, [info])}
    return _with_fields(cfg, fields, f"{where}/dataset.json")


def mixture_domains(spec: MixtureSpec) -> dict[str, Domain]:
    """The mixture's domains by name, as :attr:`DomainMixLoader.domains` has them, from the datasets' ``dataset.json``
    alone (no loader): what the model config needs before the trainer knows its ranks."""
    infos = open_sources(spec)
    total = sum(float(src.weight) for src in spec.sources)
    return {src.name: Domain(src.name, i, str(src.path), float(src.weight) / total, info)
            for i, (src, info) in enumerate(zip(spec.sources, infos, strict=True))}


def model_config_for_mixture(cfg: DynamicsTrainConfig, domains: dict[str, Domain]) -> DynamicsConfig:
    """The model config of a mixture (:class:`~wm_video.data.mixture.DomainMixLoader`'s ``domains``): vocabulary
    and token grid of its token datasets (one tokenizer: the mixture checks it), one :class:`ActionDomain` per
    dataset with its action space and statistics, and the termination weight of all of them together. The
    top-level action fields are set to ``none``: a multi-domain model does not use them (``domain=NAME`` picks an
    encoder), and anything reading them alone sees an action-free model rather than one domain's space."""
    for d in domains.values():
        _token_fields(d.info, f"mixture domain {d.name!r} ({d.root})")
    first = next(iter(domains.values()))
    specs = [ActionDomain(name=d.name, **_action_fields(d.action_space, d.action_stats), **_bounds(d.action_space))
             for d in domains.values()]
    fields = {**_token_fields(first.info, first.root), "action_type": "none", "num_actions": 0, "action_dim": 0,
              "action_mean": [], "action_std": [], "domains": specs,
              **_termination_weight(cfg, [d.info for d in domains.values()])}
    return _with_fields(cfg, fields, f"the mixture's {len(domains)} datasets")
