"""Fine-tuning a tokenizer export on new frames (few-shot adaptation to a new domain) while its tokens keep their
meaning, so a dynamics model pretrained on that tokenizer's tokens still reads the new domain's tokens.

    wm-video train tokenizer --init-from runs/tok_video/export --data data/robot64 --out runs/tok_robot

What carries over. The model config is the export's ``config.json``; the run's YAML ``model:`` section and
``model.*`` overrides may change its training-time fields (loss weights, the adversarial and perceptual terms,
...), but a field of :data:`ARCHITECTURE_FIELDS` set there to another value than the export's is an error naming
the file (or the overrides), the field and both values; the preset's model section is not used at all. Every
weight is copied, so at step 0 the run's model reconstructs exactly as the export does.

The codebook. With ``finetune.freeze_codebook`` (the default) the quantizer is not trained: the VQ codebook gets no
EMA update and no dead-code restart (:attr:`VectorQuantizerEMA.codebook_frozen`), and the quantizer's projections
(into the lookup space and from a code to the decoder's latent; FSQ has only these) keep ``requires_grad=False``.
Each token id then stands for the same latent code as before, bitwise; encoder and decoder train, the encoder
pulled towards the fixed codes by the commitment loss. ``finetune.freeze`` lists more parameter-name prefixes to
keep fixed (``*`` wildcards), e.g. ``encoder`` to adapt the decoder alone.

Fingerprints. :meth:`VQTokenizer.fingerprint` hashes the weights that turn tokens into pixels (quantizer and
decoder); a fine-tune trains the decoder, so the fine-tuned tokenizer has a new fingerprint, and a diffusion decoder
trained on the original (which holds its own copy of that decoder and checks the fingerprint) refuses it: train or
fine-tune a decoder for the new tokenizer. That is deliberate: the fingerprint names rendering weights, and those
changed. What a frozen codebook keeps is :meth:`VQTokenizer.token_fingerprint` (the quantizer alone): a dynamics
model checks only vocabulary and token grid, so a pretrained dynamics model fine-tunes on (and predicts) the new
tokenizer's tokens as it did the original's, and ``data tokenize`` records the token fingerprint in
``dataset.json`` so that token datasets of the original and of the fine-tune may share one dynamics mixture. The
export's ``config.json`` records where it came from (``finetuned_from``: the original's folder, fingerprint and
token fingerprint, and whether the codebook was frozen).

Evaluation. The end-of-run summary (:mod:`wm_video.training.quality`) scores the original export on the same
held-out frames as the fine-tuned one: ``psnr_db_before`` and ``codebook_usage_before`` beside ``psnr_db`` and
``codebook_usage``, and a ``finetune`` record in ``train_summary.json`` and ``export/quality.json``. Resuming works
as for any run: the rerun starts from the export again and then loads ``checkpoints/last.ckpt``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from torch import nn

from wm_video.config import ConfigError, apply
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.lora import params_matching
from wm_video.training.quality import QualityConfig, assess_tokenizer

if TYPE_CHECKING:
    from wm_video.training.tokenizer_config import TokenizerTrainConfig

log = logging.getLogger(__name__)

# TokenizerConfig fields that shape the weights or what a token id means: always the export's.
ARCHITECTURE_FIELDS = ("resolution", "downsample", "base_channels", "channel_mult", "layers_per_block", "norm_groups",
                       "mid_attention", "encoder", "previous_frame", "latent_channels", "quantizer", "codebook_size",
                       "codebook_dim", "fsq_levels", "finetuned_from")


ModelFields = list[tuple[str, dict[str, Any]]]  # (where they were set, the model fields set there), in order


def finetune_config(cfg: TokenizerTrainConfig, model_fields: ModelFields | None = None) -> TokenizerTrainConfig:
    """``cfg`` with the model config of the export ``cfg.finetune.init_from``, its training-time fields changed by
    ``model_fields`` (the YAML's ``model:`` section and ``model.*`` overrides; ConfigError naming the source, the
    field and both values for an architecture field that differs from the export's) and ``finetuned_from`` set."""
    source = str(cfg.finetune.init_from)
    pretrained = VQTokenizer.from_pretrained(source)
    base, model = pretrained.config, pretrained.config
    for where, values in model_fields or []:
        model = apply(model, values, where, "model.")
        for name in values:
            if name in ARCHITECTURE_FIELDS and getattr(model, name) != getattr(base, name):
                raise ConfigError(
                    f"{where}: field 'model.{name}' is {getattr(model, name)!r}, but the tokenizer export {source} "
                    f"has {getattr(base, name)!r}: a fine-tune keeps the export's architecture (drop the field, or "
                    "train a new tokenizer without --init-from)")
    codebook = "frozen" if cfg.finetune.freeze_codebook else "trained"
    model = dataclasses.replace(model, finetuned_from={
        "tokenizer": source, "fingerprint": pretrained.fingerprint(),
        "token_fingerprint": pretrained.token_fingerprint(), "codebook": codebook})
    log.info("fine-tuning tokenizer %s (fingerprint %s): its architecture, codebook %s", source,
             pretrained.fingerprint(), codebook)
    return dataclasses.replace(cfg, model=model)


def start_from_export(model: VQTokenizer, cfg: TokenizerTrainConfig) -> list[str]:
    """Copy the export's weights into ``model`` (every one: the configs' architectures are equal), freeze the
    codebook (``finetune.freeze_codebook``) and the parameters ``finetune.freeze`` names; returns their names."""
    ft = cfg.finetune
    pretrained = VQTokenizer.from_pretrained(str(ft.init_from))
    model.load_state_dict(pretrained.state_dict())
    prefixes = [*ft.freeze, "quantizer"] if ft.freeze_codebook else ft.freeze
    if ft.freeze_codebook and hasattr(model.quantizer, "codebook_frozen"):
        model.quantizer.codebook_frozen = True  # no EMA update, no restart: the codebook buffers stay as they are
    frozen = params_matching(model, prefixes, "finetune.freeze")
    params = dict(model.named_parameters())
    for name in frozen:
        params[name].requires_grad_(False)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("tokenizer fine-tune: weights of %s copied; codebook %s; %d frozen tensors, %s of %s parameters "
             "trainable", ft.init_from, "frozen" if ft.freeze_codebook else "trained", len(frozen), f"{trainable:,}",
             f"{sum(p.numel() for p in model.parameters()):,}")
    return frozen


def assess_finetune(cfg: TokenizerTrainConfig, q: QualityConfig
                    ) -> Callable[[nn.Module, Iterable[dict[str, Any]]], dict[str, Any]]:
    """The end-of-run assessment of a fine-tune: :func:`assess_tokenizer` of the trained model, with the export it
    started from scored on the same held-out frames (``*_before`` metrics and a ``finetune`` record)."""

    def assess(model: nn.Module, heldout: Iterable[dict[str, Any]]) -> dict[str, Any]:
        after = assess_tokenizer(model, heldout, q)
        device = next(model.parameters()).device
        pretrained = VQTokenizer.from_pretrained(str(cfg.finetune.init_from)).to(device).eval()
        before = assess_tokenizer(pretrained, heldout, q)["metrics"]
        m = after["metrics"]
        record = {**model.config.finetuned_from, "before": before, "after": dict(m),
                  "psnr_gain_db": m["psnr_db"] - before["psnr_db"],
                  "token_fingerprint_kept": model.token_fingerprint() == model.config.finetuned_from.get(
                      "token_fingerprint")}
        m.update(psnr_db_before=before["psnr_db"], codebook_usage_before=before["codebook_usage"])
        return {**after, "finetune": record}

    return assess

