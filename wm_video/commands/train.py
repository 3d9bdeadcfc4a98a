"""``wm-video train ...``: train each part of the world model from shards."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from wm_video.config import load_config, parse_dotted, read_yaml
from wm_video.training.decoder_module import train_decoder
from wm_video.training.dynamics_module import train_dynamics
from wm_video.training.run import DataMix
from wm_video.training.tokenizer_module import train_tokenizer


def tokenizer(*overrides: str, data: list[str], data_weights: list[float] | None = None,
              out: str | None = None, config: str | None = None, preset: str = "small", max_steps: int | None = None,
              max_minutes: float | None = None, init_from: str | None = None) -> None:
    """Train the VQ tokenizer on episode-clip shards of one or more datasets; ends with an export in OUT/export.

    Several datasets (e.g. action-free video and robot camera frames, so the tokenizer a robot world model is
    fine-tuned with has seen both) train one tokenizer: --data A B --data-weights 0.7 0.3 draws 70% of the
    clips from A and 30% from B. They must share one frame resolution; clips are cut to the shortest clip_len, and
    each dataset validates on its own held-out episodes.

    Rerunning the same command with the same --out resumes from OUT/checkpoints/last.ckpt. Logs (TensorBoard,
    with reconstruction grids) go to OUT/tb. The run ends with a summary (steps done, why it stopped, held-out
    codebook usage and PSNR against their quality-gate floors) printed and written to OUT/train_summary.json and
    OUT/export/quality.json.

    With --init-from the run fine-tunes a tokenizer export on the new data (few-shot adaptation to a new domain): its
    config.json and weights are the start (a model field of the YAML or the overrides that changes the architecture,
    e.g. model.codebook_size, is an error; training-time ones such as loss weights apply), the codebook stays fixed
    (finetune.freeze_codebook, on by default) so token ids keep their meaning for a dynamics model trained on the
    export's tokens, and encoder and decoder train (finetune.freeze=[encoder] keeps the encoder fixed too). The
    summary sets the held-out PSNR and codebook usage of the export beside the fine-tuned model's, on the same
    frames. The export's config.json records the tokenizer it came from (finetuned_from); its fingerprint changes
    (the decoder trained), so a diffusion decoder of the original refuses it, while its token_fingerprint (the
    codebook) stays.

    Example:
        wm-video train tokenizer --config configs/tokenizer/atari_small.yaml --data data/pong --out runs/tok_pong
        wm-video train tokenizer --data data/videos64 data/pusht64 --data-weights 0.7 0.3 --out runs/tok_mix
        wm-video train tokenizer --init-from runs/tok_video/export --data data/robot64 --out runs/tok_robot

    Args:
        overrides: dotted overrides, e.g. ``model.quantizer=fsq`` or ``loader.batch_size=8``.
        data: one or more dataset folders (episode-clip shards + dataset.json); each holds out the episodes its
            dataset.json records (``field=value`` words after them are overrides, as elsewhere).
        data_weights: with several --data: relative rate of each dataset's clips, in the same order (default:
            equal).
        out: run folder (default: trainer.run_dir of the config).
        config: YAML with ``kind: train_tokenizer`` (see configs/tokenizer/).
        preset: starting preset when the YAML names none.
        max_steps: optimizer steps (overrides trainer.max_steps).
        max_minutes: opt-in wall-clock safety cap in minutes, counted over every resume (overrides
            trainer.max_minutes; budgets are max_steps).
        init_from: tokenizer export folder to fine-tune (sets finetune.init_from).
    """
    mix, overrides = _datasets(data, data_weights, overrides)
    cfg = _run_config("train_tokenizer", mix, config, preset, overrides, max_steps, max_minutes)
    if init_from:
        cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init_from=init_from))
    export = train_tokenizer(cfg, mix, out or cfg.trainer.run_dir, _model_fields(config, overrides))
    print(f"tokenizer exported to {export}")


def dynamics(*overrides: str, data: str | None = None, out: str | None = None, config: str | None = None,
             preset: str = "small", max_steps: int | None = None, max_minutes: float | None = None,
             init_from: str | None = None) -> None:
    """Train the action-conditioned dynamics transformer on token shards; ends with an export in OUT/export.

    The model's vocabulary, token grid and action space come from the shards' dataset.json. Rerunning the same
    command with the same --out resumes from OUT/checkpoints/last.ckpt. Logs (TensorBoard: token cross-entropy
    and accuracy, reward and termination losses, tokens/s, MFU) go to OUT/tb.

    With --init-from the run fine-tunes a pretrained export: its architecture and weights are kept (vocabulary
    and token grid must match the shards), the action encoder is built for the shards' action space,
    finetune.freeze=[...] keeps parts fixed, finetune.lora.rank=8 trains LoRA adapters (peft) instead of the
    whole model (merged into the weights at export), and the held-out score before and after goes to
    OUT/finetune_eval.json (configs/dynamics/finetune_small.yaml is a starting point).

    The run ends with a summary (steps done, why it stopped, held-out token accuracy against copying the last
    frame, reward and termination heads against their constant baselines) printed and written to
    OUT/train_summary.json and OUT/export/quality.json.

    Instead of --data, the config's mixture field (YAML 'mixture:', a list of {path, weight, domain}) trains one
    model on several token datasets of one tokenizer whose action spaces differ: each dataset is an action domain of
    the model (model.domains), each batch comes from one of them, drawn by weight, and validation logs each
    domain's metrics (val/DOMAIN/token_ce, ...) and their mean. With --init-from as well, the pretrained export is
    fine-tuned on the mixture: a source whose domain the pretrained model has continues that domain's encoder (its
    action space must match, else an error naming the source's folder, the domain and both action spaces), a new one
    is added as the null action, a model of one action space is domain 'default', and domains no source names stay
    as they were; finetune.freeze and finetune.lora work as for one dataset, and OUT/finetune_eval.json holds each
    domain's held-out score before and after (domains.NAME.before / .after).

    Example:
        wm-video train dynamics --config configs/dynamics/atari_small.yaml --data data/pong_tokens --out runs/dyn
        wm-video train dynamics --init-from runs/dyn_video/export --data data/robot_tokens --out runs/dyn_robot
        wm-video train dynamics --config configs/dynamics/mixture_small.yaml --out runs/dyn_mix
        wm-video train dynamics --config robot_mix.yaml --init-from runs/dyn_mix/export --out runs/dyn_mix_robot

    Args:
        overrides: dotted overrides, e.g. ``model.depth=4`` or ``loader.batch_size=8``.
        data: token-shard folder made by 'wm-video data tokenize'; the episodes its dataset.json records are held
            out (the last shards of one written before splits were recorded). Not with a config's mixture.
        out: run folder (default: trainer.run_dir of the config).
        config: YAML with ``kind: train_dynamics`` (see configs/dynamics/).
        preset: starting preset when the YAML names none.
        max_steps: optimizer steps (overrides trainer.max_steps).
        max_minutes: opt-in wall-clock safety cap in minutes, counted over every resume (overrides
            trainer.max_minutes; budgets are max_steps).
        init_from: pretrained dynamics export folder to fine-tune (sets finetune.init_from), on --data or on the
            config's mixture.
    """
    cfg = _run_config("train_dynamics", data, config, preset, overrides, max_steps, max_minutes)
    if init_from:
        cfg = dataclasses.replace(cfg, finetune=dataclasses.replace(cfg.finetune, init_from=init_from))
    export = train_dynamics(cfg, data, out or cfg.trainer.run_dir)
    print(f"dynamics model exported to {export}")


def decoder(*overrides: str, data: str, tokenizer: str, out: str | None = None,
            config: str | None = None, preset: str = "small", max_steps: int | None = None,
            max_minutes: float | None = None) -> None:
    """Train the diffusion decoder (renders a tokenizer's tokens into frames); ends with an export in OUT/export.

    Tokens are computed on the fly by the frozen tokenizer; the decoder copies its codebook and decoder stack and
    records its fingerprint, so it later refuses another tokenizer's tokens. Rerunning the same command with the
    same --out resumes from OUT/checkpoints/last.ckpt. Logs (TensorBoard: EDM loss, sample grids of ground truth,
    VQ decoder, 1-step and many-step renders) go to OUT/tb. The run ends with a summary (steps done, why it stopped,
    held-out PSNR of the 1-step render against the VQ decoder's) in OUT/train_summary.json and
    OUT/export/quality.json.

    Example:
        wm-video train decoder --config configs/decoder/atari_small.yaml --data data/breakout \
            --tokenizer runs/tok_breakout/export --out runs/dec_breakout

    Args:
        overrides: dotted overrides, e.g. ``model.prev_frame=true`` or ``loader.batch_size=8``.
        data: dataset folder of frame shards (not token shards); the episodes its dataset.json records are held
            out (the last shards of one written before splits were recorded).
        tokenizer: tokenizer export folder (OUT/export of 'wm-video train tokenizer').
        out: run folder (default: trainer.run_dir of the config).
        config: YAML with ``kind: train_decoder`` (see configs/decoder/).
        preset: starting preset when the YAML names none.
        max_steps: optimizer steps (overrides trainer.max_steps).
        max_minutes: opt-in wall-clock safety cap in minutes, counted over every resume (overrides
            trainer.max_minutes; budgets are max_steps).
    """
    cfg = _run_config("train_decoder", data, config, preset, overrides, max_steps, max_minutes)
    export = train_decoder(cfg, data, tokenizer, out or cfg.trainer.run_dir)
    print(f"decoder exported to {export}")


def _run_config(kind: str, data: object, config: str | None, preset: str, overrides: tuple[str, ...],
                max_steps: int | None, max_minutes: float | None) -> object:
    cfg = load_config(kind, preset_name=preset, yaml_path=config, overrides=overrides)
    flags = {k: v for k, v in (("max_steps", max_steps), ("max_minutes", max_minutes)) if v is not None}
    if flags:
        cfg = dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, **flags))
    return cfg


def _model_fields(config: str | None, overrides: tuple[str, ...]) -> list[tuple[str, dict]]:
    """The model fields the YAML's ``model:`` section and the ``model.*`` overrides set, each with where: a fine-tune
    takes its architecture from the export and refuses those that change it."""
    fields = [(str(config), read_yaml(config).get("model"))] if config else []
    fields.append(("command-line overrides", parse_dotted(list(overrides)).get("model")))
    return [(where, values) for where, values in fields if isinstance(values, dict) and values]


def _datasets(data: str | list[str] | None, weights: list[float] | None, overrides: tuple[str, ...]
              ) -> tuple[object, tuple[str, ...]]:
    """``--data`` (one folder, or a :class:`~wm_video.training.run.DataMix` of several at ``--data-weights``) and the
    overrides: ``--data`` takes every word up to the next flag, so ``field=value`` words after it that are not
    folders are the overrides they were before it took several."""
    words = [data] if isinstance(data, str) else list(data or [])
    is_override = [("=" in w and not Path(w).exists()) for w in words]
    folders = [w for w, o in zip(words, is_override, strict=True) if not o]
    overrides = (*[w for w, o in zip(words, is_override, strict=True) if o], *overrides)
    if not folders:
        raise ValueError("--data is required: a dataset folder made by 'wm-video data ...' (or several)")
    if weights is not None and len(weights) != len(folders):
        raise ValueError(f"--data-weights gives {len(weights)} weights for {len(folders)} datasets "
                         f"({' '.join(folders)})")
    if weights is not None and (min(weights) < 0 or sum(weights) <= 0):
        raise ValueError(f"--data-weights must be >= 0 and not all 0, got {' '.join(map(str, weights))}")
    if len(folders) == 1:
        return folders[0], overrides
    return DataMix(tuple(folders), tuple(weights or [1.0] * len(folders))), overrides
