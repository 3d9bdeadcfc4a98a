"""The config of a tokenizer training run (:class:`TokenizerTrainConfig`) and of starting one from an export
(:class:`TokenizerFinetuneConfig`): plain dataclasses, apart from the run (:mod:`.tokenizer_module`) and the
fine-tuning steps (:mod:`.tokenizer_finetune`) that both read them."""

from __future__ import annotations

from dataclasses import dataclass, field

from wm_video.data.loader import LoaderConfig
from wm_video.models.tokenizer import TokenizerConfig
from wm_video.training.ema import EMA_DECAY
from wm_video.training.optim import OptimConfig
from wm_video.training.quality import QualityConfig
from wm_video.training.trainer_config import TrainerConfig


@dataclass
class TokenizerFinetuneConfig:
    """Starting a tokenizer run from a tokenizer export (see :mod:`wm_video.training.tokenizer_finetune`).

    Args:
        init_from: tokenizer export folder (``config.json`` + ``model.safetensors``); None trains from scratch.
            ``--init-from`` on the command line sets it.
        freeze_codebook: keep the quantizer (VQ codebook and projections) as it is, so token ids keep their meaning
            for models trained on the export's tokens (off: it goes on learning, and ids may drift).
        freeze: parameter-name prefixes to keep fixed as well (``*`` wildcards), e.g. ``encoder``.
    """

    init_from: str | None = None
    freeze_codebook: bool = True
    freeze: list[str] = field(default_factory=list)


@dataclass
class TokenizerTrainConfig:
    """A tokenizer training run.

    Args:
        model: the tokenizer.
        trainer: Trainer settings (devices, precision, steps, logging, checkpoints).
        loader: streaming settings for the training shards.
        optim: optimizer and schedule.
        frames_per_clip: frames sampled from each clip per step (frames are tokenized one by one, so a few
            frames of many clips beat many frames of few clips).
        val_fraction: None: validate on the held-out episodes ``dataset.json`` records (the last shards of one
            written before splits were recorded); a number: the last that fraction of the episodes instead; 0:
            no validation (:mod:`wm_video.data.split`).
        val_batches: validation batches per validation run.
        image_every_n_val: log a reconstruction grid every this many validation runs.
        quality: floors of the end-of-training quality gates (codebook usage, held-out PSNR).
        ema_decay: keep an exponential moving average of the weights with this decay (warmed up, see
            :mod:`wm_video.training.ema`), validate on it and export it instead of the last step's weights; 0: off.
        finetune: start from a tokenizer export (``finetune.init_from``, ``--init-from``), its codebook frozen by
            default (:mod:`wm_video.training.tokenizer_finetune`).
    """

    model: TokenizerConfig = field(default_factory=TokenizerConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    loader: LoaderConfig = field(default_factory=LoaderConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    frames_per_clip: int = 4
    val_fraction: float | None = None
    val_batches: int = 8
    image_every_n_val: int = 1
    quality: QualityConfig = field(default_factory=QualityConfig)
    ema_decay: float = EMA_DECAY
    finetune: TokenizerFinetuneConfig = field(default_factory=TokenizerFinetuneConfig)
