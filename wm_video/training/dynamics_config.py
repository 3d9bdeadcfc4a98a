"""The dynamics training run's config (:class:`DynamicsTrainConfig`, with its fine-tuning section
:class:`FinetuneConfig`) and the model config a token dataset implies (:func:`model_config_for_data`).

Below :mod:`.finetune` and :mod:`.dynamics_module`, which both read them.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Any

from wm_video.data.loader import LoaderConfig
from wm_video.data.schema import DatasetInfo
from wm_video.models.dynamics import DynamicsConfig
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
    """

    init_from: str | None = None
    freeze: list[str] = field(default_factory=list)
    fresh_actions: bool = False
    eval_batches: int | None = None
    eval_batch_size: int = 8
    lora: LoraOptions | None = None


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
            model's window, is predicted; at most the clip's length - 1).

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

    def __post_init__(self) -> None:
        if self.model.gradient_checkpointing:
            log.warning("model.gradient_checkpointing=true is read as trainer.activation_checkpointing=true, the one "
                        "switch for it; set that instead")
            self.trainer = dataclasses.replace(self.trainer, activation_checkpointing=True)
            self.model = dataclasses.replace(self.model, gradient_checkpointing=False)


def model_config_for_data(cfg: DynamicsTrainConfig, info: DatasetInfo, where: str) -> DynamicsConfig:
    """The model config with vocabulary, token grid, action space and statistics taken from a token dataset."""
    if info.frame_storage != "tokens" or not info.tokens:
        raise ValueError(f"{where} holds {info.frame_storage} frames, not tokens: tokenize it first with "
                         f"'wm-video data tokenize --tokenizer DIR --src {where} --out DIR'")
    space = info.action_space
    token_h, token_w = info.resolution  # a token dataset's resolution is its token grid
    fields: dict[str, Any] = {"vocab_size": int(info.tokens["vocab_size"]), "token_h": token_h, "token_w": token_w,
                              "action_type": space.kind}
    if space.kind == "discrete":
        fields["num_actions"] = int(space.n)
    elif space.kind == "continuous":
        stats = info.stats.get("actions") or {}
        fields.update(action_dim=int(space.dim), action_mean=[float(v) for v in stats.get("mean", [])],
                      # a constant dimension (std 0) is left unscaled: dividing by ~0 would blow up any other value
                      action_std=[float(v) if float(v) > 1e-6 else 1.0 for v in stats.get("std", [])])
    if cfg.termination_pos_weight_from_data:
        steps, terms = info.stats.get("frames", 0), info.stats.get("terminations", 0)
        if steps and terms:
            fields["termination_pos_weight"] = float(min(1000.0, max(1.0, (steps - terms) / terms)))
    changed = {k: v for k, v in fields.items() if getattr(cfg.model, k) != v}
    if changed:
        log.info("model fields set from %s/dataset.json: %s", where, changed)
    return dataclasses.replace(cfg.model, **fields)
