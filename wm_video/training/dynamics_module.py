"""Training the dynamics transformer on token shards: the run's config, the LightningModule, and the run.

    wm-video train dynamics --config configs/dynamics/atari_small.yaml --data data/breakout_tokens --out runs/dyn

The token shards' ``dataset.json`` fixes what the model must match: vocabulary, token grid, action space and
the continuous actions' normalisation statistics are copied from it into the model config (logged), and the
termination class weight follows the data's termination rate unless set. Clips longer than the model's window
are cropped to a random window each step. Logs: masked-token cross-entropy and accuracy, the teacher-forced
next-frame accuracy against copying the last frame (validation), reward and termination losses, tokens/s and
MFU. The run ends with an export in ``OUT/export`` and a summary whose quality gates check, on held-out clips, that
the model beats copying the last frame and that its reward and termination heads beat their constant baselines
(``quality.*``, see :mod:`wm_video.training.quality`); rerunning the command resumes from ``last.ckpt``.

With ``finetune.init_from`` (``--init-from DIR``) the run starts from a pretrained export instead, keeping its
architecture and weights and adding the data's action space; see :mod:`wm_video.training.finetune`.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightning as L
import torch

from wm_video.data.loader import LoaderConfig
from wm_video.data.schema import DatasetInfo
from wm_video.models.checks import validated
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.models.dynamics.config import training_flops_per_token
from wm_video.training.finetune import FinetuneConfig, Finetuning
from wm_video.training.optim import OptimConfig, build_optimizer
from wm_video.training.quality import QualityConfig, assess_dynamics
from wm_video.training.run import fit_and_export
from wm_video.training.throughput import throughput_callback
from wm_video.training.trainer import TrainerConfig

log = logging.getLogger(__name__)

_BATCH_TIME_FIELDS = ("tokens", "actions", "rewards", "terminations")


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


def crop_window(batch: dict[str, Any], window: int, generator: torch.Generator | None = None) -> dict[str, Any]:
    """A random ``window``-frame crop (the same for the whole batch) of clips longer than the model's window."""
    t = batch["tokens"].shape[1]
    if t <= window:
        return batch
    start = int(torch.randint(0, t - window + 1, (1,), generator=generator))
    return {k: (v[:, start:start + window] if k in _BATCH_TIME_FIELDS else v) for k, v in batch.items()}


class DynamicsModule(L.LightningModule):
    """Thin Lightning wrapper: the loss is the model's ``compute_loss``; validation adds the teacher-forced
    next-frame accuracy and the copy-last-frame baseline."""

    def __init__(self, cfg: DynamicsTrainConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DynamicsModel(cfg.model)
        self.frames = min(cfg.train_frames or cfg.model.context_frames, cfg.model.context_frames)
        if self.frames < 2:
            raise ValueError(f"train_frames must be >= 2 (a context frame and a target), got {cfg.train_frames}")
        self.save_hyperparameters({"config": dataclasses.asdict(cfg)})  # plain values: weights_only-safe

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Check each batch's token ids and actions once, where it arrives: on the CPU, before the copy to the
        device, so the check waits for no kernel. The steps then run inside ``validated()``, where the model skips
        its own value checks (:mod:`wm_video.models.checks`)."""
        tokens = batch["tokens"]
        self.model.check_tokens(tokens, sliding_window=True)  # longer clips are cropped to the window in the step
        self.model.actions.check(batch.get("actions"), tuple(tokens.shape[:2]))
        return batch

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        batch = crop_window(batch, self.frames)
        with validated():  # checked in on_before_batch_transfer
            loss, logs = self.model.compute_loss(batch)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=len(batch["tokens"]))
        return loss

    def validation_step(self, batch: dict[str, Any], _: int) -> None:
        batch = crop_window(batch, self.frames)
        with validated():  # checked in on_before_batch_transfer
            _, logs = self.model.compute_loss(batch)
            tf = self.model.teacher_forced_accuracy(batch["tokens"], batch.get("actions"))
        logs.update({f"tf_{k}": v for k, v in tf.items()})
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=len(batch["tokens"]))

    def configure_optimizers(self) -> Any:
        opt, sched = build_optimizer(self.model, self.cfg.optim, self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def train_dynamics(cfg: DynamicsTrainConfig, data: str | Path, out: str | Path) -> Path:
    """Train on the token shards in ``data`` into run folder ``out``; resumes from ``out/checkpoints/last.ckpt``;
    returns the export folder."""
    from wm_video.data.reader import load_dataset_info

    info = load_dataset_info(data)
    L.seed_everything(cfg.trainer.seed, verbose=False)  # weights init from trainer.seed, not torch's random start
    finetuning = None
    if cfg.finetune.init_from:
        finetuning = Finetuning(cfg, data)
        cfg = dataclasses.replace(cfg, model=finetuning.model_config(info))
    else:
        if cfg.finetune.lora is not None:
            raise ValueError("finetune.lora adapts a pretrained model: name it with --init-from DIR")
        cfg = dataclasses.replace(cfg, model=model_config_for_data(cfg, info, str(data)))
    module = DynamicsModule(cfg)
    if finetuning:
        finetuning.prepare(module.model)  # pretrained weights in, frozen parts fixed, held-out score before
    n_params = sum(p.numel() for p in module.model.parameters())
    flops = training_flops_per_token(cfg.model, min(info.clip_len, module.frames))
    log.info("dynamics model: %.1fM parameters, %.3g training FLOPs per token", n_params / 1e6, flops)
    # tokens a step trains on: the batch's clips cut to the training crop
    perf = throughput_callback(flops, lambda batch: batch["tokens"][:, :module.frames].numel(),
                               log_every=max(cfg.trainer.log_every_n_steps, 1))
    export = fit_and_export(module, cfg.trainer, data, cfg.loader, cfg.val_fraction,
                            cfg.val_batches, out, "dynamics", callbacks=[perf],
                            before_export=finetuning.before_export if finetuning else None,  # folds LoRA adapters in
                            assess=lambda model, heldout: assess_dynamics(model, heldout, cfg.quality, info.stats))
    if finetuning:
        finetuning.finish(module.model, out, module.global_step)  # held-out score after: OUT/finetune_eval.json
    return export
