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

With ``mixture`` (a list of token datasets of one tokenizer, instead of ``--data``) one model trains on all of them,
each an action domain (``model.domains``: its own action encoder and statistics); every batch is of one domain,
drawn by weight (:class:`~wm_video.data.mixture.DomainMixLoader`, an endless stream: validation runs every
``trainer.val_check_interval`` batches, by default where checkpoints are written). Validation logs each domain's
metrics as ``val/DOMAIN/token_ce`` (and so on) and, as ``val/token_ce``, their mean over the domains (each domain
counts once, whatever its batches); the quality gates score the domains' held-out clips together. The rollout
videos are per domain: each domain's held-out clips, rolled out in that domain with its actions, under
``rollout/DOMAIN/truth_true-actions_shuffled-actions``, decoded with the tokenizer the first source records (the
sources share it); an action-free domain's shuffled column repeats its one rollout (:mod:`wm_video.training.visuals`).

    wm-video train dynamics --config configs/dynamics/mixture_small.yaml --out runs/dyn_mix

Both together fine-tune a pretrained export on a mixture: each source's domain continues the pretrained model's
encoder of that name or is added to it (:meth:`~wm_video.training.finetune.Finetuning.mixture_config`).

With ``text_encoder=PATH`` (a local T5 or CLIP text model) the model is conditioned on each clip's task text, its
embeddings added to every batch before it moves to the device (:mod:`wm_video.training.text_conditioning`); the
validation metrics and quality gates score the model given its text.

    wm-video train dynamics --preset small --data data/metaworld_tokens --out runs/dyn_text text_encoder=models/t5
"""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path
from typing import Any

import lightning as L
import torch

from wm_video.data.mixture import MixtureSpec
from wm_video.data.reader import load_dataset_info
from wm_video.models.checks import validated
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.dynamics.config import training_flops_per_token
from wm_video.models.text_encoder import TextEncoder
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.dynamics_config import (
    DynamicsTrainConfig,
    mixture_domains,
    model_config_for_data,
    model_config_for_mixture,
)
from wm_video.training.finetune import Finetuning
from wm_video.training.optim import build_optimizer
from wm_video.training.quality import assess_dynamics
from wm_video.training.run import fit_and_export
from wm_video.training.text_conditioning import embedded, setup_text, with_text_embeddings
from wm_video.training.throughput import throughput_callback
from wm_video.training.visuals import log_rollouts, video_tokenizer

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
    (:mod:`wm_video.training.visuals`; a mixture's: one per domain), decoded with ``tokenizer`` (None: token ids
    drawn). ``text_encoder``: the frozen encoder of each batch's task texts (a model with ``text_dim`` > 0)."""

    def __init__(self, cfg: DynamicsTrainConfig, tokenizer: VQTokenizer | None = None,
                 text_encoder: TextEncoder | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        self.model = DynamicsModel(cfg.model)
        self._tokenizer = [tokenizer]  # a list: not a submodule, not checkpointed
        self._text_encoder = [text_encoder]  # likewise: frozen, and not part of the export
        # held-out clips for the videos (CPU), per domain (a one-dataset run's: one key, its domain or None)
        self._video_clips: dict[str | None, dict[str, torch.Tensor]] = {}
        self._last_video_step = 0
        self.frames = min(cfg.train_frames or cfg.model.context_frames, cfg.model.context_frames)
        if self.frames < 2:
            raise ValueError(f"train_frames must be >= 2 (a context frame and a target), got {cfg.train_frames}")
        self.save_hyperparameters({"config": dataclasses.asdict(cfg)})  # plain values: weights_only-safe
        self._val_sums: dict[str, dict[str, list[torch.Tensor]]] = {}  # per domain: metric -> [sum, clips]
        # a one-dataset run of a multi-domain model (a fine-tune into one domain): every batch is of this domain
        self.domain: str | None = cfg.finetune.domain if cfg.model.domains else None

    def on_before_batch_transfer(self, batch: dict[str, Any], dataloader_idx: int) -> dict[str, Any]:
        """Check each batch's token ids and actions once, where it arrives: on the CPU, before the copy to the
        device, so the check waits for no kernel. The steps then run inside ``validated()``, where the model skips
        its own value checks (:mod:`wm_video.models.checks`). A text model's batch gains its task texts'
        embeddings here too, on the CPU."""
        batch = with_text_embeddings(batch, self._text_encoder[0])
        tokens = batch["tokens"]
        if self.domain is not None and batch.get("domain") is None:
            batch = {**batch, "domain": self.domain}
        self.model.check_tokens(tokens, sliding_window=True)  # longer clips are cropped to the window in the step
        self.model.check_actions(batch.get("actions"), tuple(tokens.shape[:2]), domain=batch.get("domain"))
        return batch

    def training_step(self, batch: dict[str, Any], _: int) -> torch.Tensor:
        batch = crop_window(batch, self.frames)
        with validated():  # checked in on_before_batch_transfer
            loss, logs = self.model.compute_loss(batch)
        self.log_dict({f"train/{k}": v for k, v in logs.items()}, batch_size=len(batch["tokens"]))
        return loss

    def validation_step(self, batch: dict[str, Any], batch_idx: int, dataloader_idx: int = 0) -> None:
        if self.cfg.video_every_n_steps and batch.get("domain") not in self._video_clips:
            self._video_clips[batch.get("domain")] = self._clips_for_video(batch)  # each domain's first batch
        batch = crop_window(batch, self.frames)
        domain, n = batch.get("domain"), len(batch["tokens"])
        with validated():  # checked in on_before_batch_transfer
            _, logs = self.model.compute_loss(batch)
            tf = self.model.teacher_forced_accuracy(batch["tokens"], batch.get("actions"), domain=domain,
                                                    text=batch.get("text_embeddings"))
        logs.update({f"tf_{k}": v for k, v in tf.items()})
        if domain is None:
            self.log_dict({f"val/{k}": v for k, v in logs.items()}, batch_size=n)
            return
        self.log_dict({f"val/{domain}/{k}": v for k, v in logs.items()}, batch_size=n, add_dataloader_idx=False)
        sums = self._val_sums.setdefault(domain, {})
        for k, v in logs.items():
            acc = sums.setdefault(k, [torch.zeros((), device=v.device), 0])
            acc[0], acc[1] = acc[0] + v.detach().float() * n, acc[1] + n

    def on_validation_epoch_start(self) -> None:
        self._val_sums = {}

    def on_validation_epoch_end(self) -> None:
        """Per-domain runs: ``val/KEY`` is the mean over the domains of each domain's clip-weighted mean (a metric
        some domain lacks, e.g. reward loss of action-free video, averages over the domains that have it)."""
        means: dict[str, list[torch.Tensor]] = {}
        for sums in self._val_sums.values():
            for k, (total, clips) in sums.items():
                means.setdefault(k, []).append(total / max(clips, 1))
        if means:
            self.log_dict({f"val/{k}": torch.stack(v).mean() for k, v in means.items()}, add_dataloader_idx=False)
        self._val_sums = {}

    def on_train_batch_end(self, outputs: Any, batch: dict[str, Any], batch_idx: int) -> None:
        """Every ``video_every_n_steps`` optimizer steps, on the main process: the rollout video, one per domain of
        a mixture (eval mode and ``no_grad`` inside :func:`~wm_video.training.visuals.rollout_video`, the training
        mode restored). Before the first validation (a resumed run), of this training batch's domain alone."""
        every = self.cfg.video_every_n_steps
        step = self.trainer.global_step
        if not every or step % every or step <= self._last_video_step or not self.trainer.is_global_zero:
            return
        self._last_video_step = step  # once per optimizer step, also under gradient accumulation
        experiment = getattr(self.logger, "experiment", None)
        if not hasattr(experiment, "add_image") or self.cfg.trainer.strategy.startswith("deepspeed_stage_3"):
            return  # no image logger; or ZeRO-3, whose partitioned weights rank 0 alone cannot run
        clips = self._video_clips or {batch.get("domain"): self._clips_for_video(batch)}
        tok = self._tokenizer[0]
        if tok is not None and next(tok.parameters()).device != self.device:
            self._tokenizer[0] = tok = tok.to(self.device)
        clips = {d: {k: v.to(self.device) for k, v in c.items()} for d, c in clips.items()}
        mixture = bool(self.model.config.domains) and self.domain is None  # a domain per source, a video each
        log_rollouts(experiment, self.model, tok, clips, self.cfg.video_context_frames, step, mixture)

    def _clips_for_video(self, batch: dict[str, Any]) -> dict[str, torch.Tensor]:
        """The first ``video_clips`` clips of ``batch`` (tokens and actions, whole length up to the model's
        window), on the CPU."""
        n, t = self.cfg.video_clips, self.cfg.model.context_frames
        return {k: batch[k][:n, :t].detach().cpu() for k in ("tokens", "actions") if batch.get(k) is not None}

    def configure_optimizers(self) -> Any:
        opt, sched = build_optimizer(self.model, self.cfg.optim, self.cfg.trainer.max_steps)
        return {"optimizer": opt, "lr_scheduler": sched}


def train_dynamics(cfg: DynamicsTrainConfig, data: str | Path | None, out: str | Path) -> Path:
    """Train on the token shards in ``data``, or on the datasets of ``cfg.mixture`` (``data`` None), into run
    folder ``out``; resumes from ``out/checkpoints/last.ckpt``; returns the export folder."""
    if cfg.mixture:
        return _train_mixture(cfg, data, out)
    if data is None:
        raise ValueError("train dynamics: --data is required (a token-shard folder), or a mixture of them in the "
                         "config's 'mixture' field")
    info = load_dataset_info(data)
    L.seed_everything(cfg.trainer.seed, verbose=False)  # weights init from trainer.seed, not torch's random start
    finetuning = None
    if cfg.finetune.init_from:
        finetuning = Finetuning(cfg, data)
        cfg = dataclasses.replace(cfg, model=finetuning.model_config(info))
    else:
        if cfg.finetune.lora is not None or cfg.finetune.domain is not None:
            raise ValueError("finetune.lora and finetune.domain adapt a pretrained model: name it with --init-from "
                             "DIR")
        cfg = dataclasses.replace(cfg, model=model_config_for_data(cfg, info, str(data)))
    cfg, text_encoder = setup_text(cfg, [data])
    tokenizer = None
    if cfg.video_every_n_steps:
        tokenizer = video_tokenizer(info, data, cfg.model.vocab_size)
    module = DynamicsModule(cfg, tokenizer, text_encoder)
    if finetuning:
        finetuning.prepare(module.model)  # pretrained weights in, frozen parts fixed, held-out score before
    export = _fit(module, data, out, info.clip_len, info.stats,
                  before_export=finetuning.before_export if finetuning else None)  # folds LoRA adapters in
    if finetuning:
        finetuning.finish(module.model, out, module.global_step)  # held-out score after: OUT/finetune_eval.json
    return export


def _train_mixture(cfg: DynamicsTrainConfig, data: str | Path | None, out: str | Path) -> Path:
    """:func:`train_dynamics` on ``cfg.mixture``: one action domain per dataset."""
    if data is not None:
        raise ValueError(f"train dynamics: --data {data} and the config's 'mixture' ({len(cfg.mixture)} datasets) "
                         "both name the training data; give one (drop --data, or set mixture=[])")
    if not cfg.finetune.init_from and (cfg.finetune.lora is not None or cfg.finetune.domain is not None):
        raise ValueError("finetune.lora and finetune.domain adapt a pretrained model: name it with --init-from DIR")
    spec = MixtureSpec.from_config(cfg.mixture)
    domains = mixture_domains(spec)
    if cfg.trainer.val_check_interval is None:  # "once per epoch" never comes: the mixture's stream is endless
        t = cfg.trainer
        every = t.checkpoint_every_n_steps * t.accumulate_grad_batches
        log.info("mixture: validating every %d training batches (trainer.checkpoint_every_n_steps x "
                 "accumulate_grad_batches), as trainer.val_check_interval is unset", every)
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(t, val_check_interval=every))
    L.seed_everything(cfg.trainer.seed, verbose=False)  # weights init from trainer.seed, not torch's random start
    finetuning = Finetuning(cfg, spec) if cfg.finetune.init_from else None
    model = (finetuning.mixture_config({n: d.info for n, d in domains.items()}) if finetuning
             else model_config_for_mixture(cfg, domains))
    cfg = dataclasses.replace(cfg, model=model)
    cfg, text_encoder = setup_text(cfg, [src.path for src in spec.sources])
    infos = [d.info for d in domains.values()]
    tokenizer = None  # the sources share one tokenizer (open_sources checks it): the first one's decodes every domain
    if cfg.video_every_n_steps:
        tokenizer = video_tokenizer(infos[0], spec.sources[0].path, cfg.model.vocab_size)
    module = DynamicsModule(cfg, tokenizer, text_encoder)
    if finetuning:
        finetuning.prepare(module.model)  # pretrained weights in, frozen parts fixed, each domain's score before
    export = _fit(module, spec, out, min(i.clip_len for i in infos), mixture_stats(infos),
                  before_export=finetuning.before_export if finetuning else None)
    if finetuning:
        finetuning.finish(module.model, out, module.global_step)  # each domain's score after: finetune_eval.json
    return export


def mixture_stats(infos: list[Any]) -> dict[str, Any]:
    """What the quality gates read of ``dataset.json``'s statistics, over several datasets: whether any has
    rewards that vary (the largest reward std) and how many terminations they have together."""
    stds = [((i.stats.get("rewards") or {}).get("std") or [None])[0] for i in infos]
    stds = [s for s in stds if s is not None]
    stats: dict[str, Any] = {"terminations": sum(i.stats.get("terminations", 0) for i in infos)}
    if stds:
        stats["rewards"] = {"std": [max(stds)]}
    return stats


def _fit(module: DynamicsModule, data: str | Path | MixtureSpec, out: str | Path, clip_len: int,
         stats: dict[str, Any], before_export: Any = None) -> Path:
    """Fit, export and assess ``module`` on ``data`` (``clip_len``: the data's clip length; ``stats``: its
    statistics, for the quality gates)."""
    cfg = module.cfg
    n_params = sum(p.numel() for p in module.model.parameters())
    flops = training_flops_per_token(cfg.model, min(clip_len, module.frames))
    log.info("dynamics model: %.1fM parameters, %.3g training FLOPs per token", n_params / 1e6, flops)
    # tokens a step trains on: the batch's clips cut to the training crop
    perf = throughput_callback(flops, lambda batch: batch["tokens"][:, :module.frames].numel(),
                               log_every=max(cfg.trainer.log_every_n_steps, 1))
    text = module._text_encoder[0]  # held-out clips are scored given their task text
    return fit_and_export(module, cfg.trainer, data, cfg.loader, cfg.val_fraction, cfg.val_batches, out,
                          "dynamics", callbacks=[perf], before_export=before_export,
                          assess=lambda model, heldout: assess_dynamics(
                              model.domain_model(module.domain) if module.domain else model, embedded(heldout, text),
                              cfg.quality, stats))
