"""Training the dynamics transformer on token shards: the LightningModule and the run (its config is in
:mod:`.dynamics_config`).

    wm-video train dynamics --config configs/dynamics/atari_small.yaml --data data/breakout_tokens --out runs/dyn

The token shards' ``dataset.json`` fixes what the model must match: vocabulary, token grid, action space and
the continuous actions' normalisation statistics are copied from it into the model config (logged), and the
termination class weight follows the data's termination rate unless set. Clips longer than the model's window
are cropped to a random window each step. Logs: masked-token cross-entropy and accuracy, the teacher-forced
next-frame accuracy against copying the last frame (validation), reward and termination losses, tokens/s and
MFU; every ``video_every_n_steps`` steps, open-loop rollouts of held-out clips with true and shuffled actions, decoded
with the data's tokenizer, as a TensorBoard video (:mod:`wm_video.training.visuals`). The run ends with an export in
``OUT/export`` and a summary whose quality gates check, on held-out clips, that the model beats copying the last frame
and that its reward and termination heads beat their constant baselines (``quality.*``, see
:mod:`wm_video.training.quality`); rerunning the command resumes from ``last.ckpt``.

With ``finetune.init_from`` (``--init-from DIR``) the run starts from a pretrained export instead, keeping its
architecture and weights and adding the data's action space; see :mod:`wm_video.training.finetune`.
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from wm_video.data.reader import load_dataset_info
from wm_video.models.checks import validated
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.dynamics.config import training_flops_per_token
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.dynamics_config import DynamicsTrainConfig, model_config_for_data
from wm_video.training.finetune import Finetuning
from wm_video.training.optim import build_optimizer
from wm_video.training.quality import assess_dynamics
from wm_video.training.run import fit_and_export
from wm_video.training.throughput import throughput_callback
from wm_video.training.visuals import VIDEO_TAG, log_rollout, rollout_video, video_tokenizer

log = logging.getLogger(__name__)

_BATCH_TIME_FIELDS = ("tokens", "actions", "rewards", "terminations")


def crop_window(batch: dict[str, Any], window: int, generator: torch.Generator | None = None) -> dict[str, Any]:
    """A random ``window``-frame crop (the same for the whole batch) of clips longer than the model's window."""
    t = batch["tokens"].shape[1]
    if t <= window:
        return batch
    start = int(torch.randint(0, t - window + 1, (1,), generator=generator))
    return {k: (v[:, start:start + window] if k in _BATCH_TIME_FIELDS else v) for k, v in batch.items()}


class DynamicsModule(L.LightningModule):
    """Thin Lightning wrapper: the loss is the model's ``compute_loss``; validation adds the teacher-forced
    next-frame accuracy and the copy-last-frame baseline; every ``video_every_n_steps`` steps, a rollout video
    (:mod:`wm_video.training.visuals`), decoded with ``tokenizer`` (None: token ids drawn)."""

    def __init__(self, cfg: DynamicsTrainConfig, tokenizer: VQTokenizer | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DynamicsModel(cfg.model)
        self._tokenizer = [tokenizer]  # a list: not a submodule, not checkpointed
        self._video_clips: dict[str, torch.Tensor] | None = None  # held-out clips for the videos (CPU)
        self._last_video_step = 0
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

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        if batch_idx == 0 and self._video_clips is None and self.cfg.video_every_n_steps:
            self._video_clips = self._clips_for_video(batch)
        batch = crop_window(batch, self.frames)
        with validated():  # checked in on_before_batch_transfer
            _, logs = self.model.compute_loss(batch)
            tf = self.model.teacher_forced_accuracy(batch["tokens"], batch.get("actions"))
        logs.update({f"tf_{k}": v for k, v in tf.items()})
        self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=len(batch["tokens"]))

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        """Every ``video_every_n_steps`` optimizer steps, on the main process: the rollout video (eval mode and
        ``no_grad`` inside :func:`~wm_video.training.visuals.rollout_video`, the training mode restored)."""
        every = self.cfg.video_every_n_steps
        step = self.trainer.global_step
        if not every or step % every or step <= self._last_video_step or not self.trainer.is_global_zero:
            return
        self._last_video_step = step  # once per optimizer step, also under gradient accumulation
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_image") or self.cfg.trainer.strategy.startswith("deepspeed_stage_3"):
            return  # no image logger; or ZeRO-3, whose partitioned weights rank 0 alone cannot run
        clips = self._video_clips or self._clips_for_video(batch)
        context = min(self.cfg.video_context_frames, clips["tokens"].shape[1] - 1)  # at least one frame predicted
        if context < 1:
            return
        tok = self._tokenizer[0]
        if tok is not None and next(tok.parameters()).device != self.device:
            self._tokenizer[0] = tok = tok.to(self.device)
        clips = {k: v.to(self.device) for k, v in clips.items()}
        panels = rollout_video(self.model, tok, clips["tokens"], clips.get("actions"), context)
        log_rollout(experiment, VIDEO_TAG, panels.cpu(), step)

    def _clips_for_video(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The first ``video_clips`` clips of ``batch`` (tokens and actions, whole length up to the model's
        window), on the CPU."""
        n, t = self.cfg.video_clips, self.cfg.model.context_frames
        return {k: batch[k][:n, :t].detach().cpu() for k in ("tokens", "actions") if batch.get(k) is not None}

    def configure_optimizers(self) -> Any:
        opt, sched = build_optimizer(self.model, self.cfg.optim, self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def train_dynamics(cfg: DynamicsTrainConfig, data: str | Path, out: str | Path) -> Path:
    """Train on the token shards in ``data`` into run folder ``out``; resumes from ``out/checkpoints/last.ckpt``;
    returns the export folder."""
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
    tokenizer = None
    if cfg.video_every_n_steps:
        tokenizer = video_tokenizer(info, data, cfg.model.vocab_size)
    module = DynamicsModule(cfg, tokenizer)
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
