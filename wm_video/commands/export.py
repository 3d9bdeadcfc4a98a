"""``wm-video export``: a training checkpoint (Lightning file or DeepSpeed ZeRO folder) to release weights."""

from __future__ import annotations

from pathlib import Path


def export(*, out: str, checkpoint: str | None = None, tokenizer: str | None = None, dynamics: str | None = None,
           decoder: str | None = None, data: str | None = None, overwrite: bool = False) -> None:
    """Consolidate a training checkpoint into a part's export folder (config.json + model.safetensors), or, with
    --tokenizer and --dynamics, assemble a world-model folder from the parts.

    World-model mode: each part may be an export folder, a run folder (its export/ is used) or a training
    checkpoint (consolidated first); --decoder is optional (frames then come from the VQ decoder). --data, the
    dataset the parts were trained on (frames or tokens), gives the index its fps, action space and statistics.
    The parts are checked to fit together before anything is written. Each part's quality.json (its held-out
    metrics and quality-gate verdicts, from 'wm-video train') is copied beside it; a checkpoint has none.

    A DeepSpeed ZeRO checkpoint (a folder such as OUT/checkpoints/last.ckpt/ written by a deepspeed_stage_*
    strategy) has its shards merged into full fp32 weights on this machine's CPU, whatever the number of ranks
    that wrote it; a Lightning .ckpt file is read as it is. The model class and config come from the checkpoint,
    and the result loads with the part's from_pretrained (VQTokenizer, DynamicsModel, DiffusionDecoder).
    Training-only networks (a discriminator) are left out. Files are read with weights_only loading.

    Nothing is lost at --out: a new or empty folder, or a previous export of the same kind (a part's config.json +
    model.safetensors, a world model's world_model.json), is written (the previous export replaced once the new one
    is complete); any other folder is refused before any work, unless --overwrite, which replaces only the export's
    own entries there (config.json, model.safetensors, quality.json, README.md; or world_model.json, tokenizer/,
    dynamics/, decoder/) and keeps everything else. A file at --out is never replaced.

    Example:
        wm-video export --checkpoint runs/dyn_base/checkpoints/last.ckpt --out runs/dyn_base/export
        wm-video export --tokenizer runs/tok --dynamics runs/dyn --decoder runs/dec --data data/pong --out runs/wm

    Args:
        out: export folder to write: new, empty or a previous export of the same kind.
        checkpoint: a .ckpt file or a DeepSpeed checkpoint folder.
        tokenizer: world-model mode: the tokenizer (export folder, run folder or checkpoint).
        dynamics: world-model mode: the dynamics model (export folder, run folder or checkpoint).
        decoder: world-model mode: the diffusion decoder (optional).
        data: world-model mode: the training dataset folder (fps, action space, statistics for the index).
        overwrite: write into a non-empty --out that holds no export of this kind, replacing only the export's own
            entries there.
    """
    from wm_video.training.consolidate import PART_FILES, export_part, is_part_export
    from wm_video.utils.atomic import check_output_folder
    from wm_video.world_model import FOLDER_ENTRIES, is_world_model_folder

    if tokenizer or dynamics or decoder:
        if checkpoint:
            raise ValueError("give either --checkpoint (one part) or --tokenizer/--dynamics[/--decoder] (a world "
                             "model)")
        if not (tokenizer and dynamics):
            raise ValueError("a world model needs both --tokenizer and --dynamics")
        check_output_folder(out, is_world_model_folder, FOLDER_ENTRIES, "world-model export", overwrite)
        path = export_world_model(tokenizer, dynamics, decoder, data, out, overwrite)
        print(f"world model exported to {path}")
        return
    if not checkpoint:
        raise ValueError("--checkpoint (one part) or --tokenizer and --dynamics (a world model) are required")
    check_output_folder(out, is_part_export, PART_FILES, "part export", overwrite)
    path = export_part(checkpoint, out, overwrite)
    print(f"exported to {path}")


def part_folder(spec: str) -> Path | None:
    """The export folder a part ``spec`` names (itself, or a run folder's ``export/``); None for a checkpoint."""
    p = Path(spec)
    for folder in (p, p / "export"):
        if (folder / "config.json").exists():
            return folder
    return None


def load_part(spec: str, cls: type, kind: str) -> object:
    """A part from an export folder, a run folder (``spec/export``) or a training checkpoint."""
    import tempfile

    from wm_video.training.consolidate import export_part

    p = Path(spec)
    if not p.exists():
        raise FileNotFoundError(f"--{kind} {p}: no such file or folder")
    if (p / "config.json").exists():
        return cls.from_pretrained(p)
    if (p / "export" / "config.json").exists():
        return cls.from_pretrained(p / "export")
    with tempfile.TemporaryDirectory() as tmp:  # a checkpoint: consolidate, then load
        model = cls.from_pretrained(export_part(p, Path(tmp) / "export"))
    if not isinstance(model, cls):
        raise ValueError(f"--{kind} {p}: holds a {type(model).__name__}, not a {cls.__name__}")
    return model


def export_world_model(tokenizer: str, dynamics: str, decoder: str | None, data: str | None, out: str,
                       overwrite: bool = False) -> object:
    from wm_video.models.decoder import DiffusionDecoder
    from wm_video.models.dynamics import DynamicsModel
    from wm_video.models.export import read_quality
    from wm_video.models.tokenizer import VQTokenizer
    from wm_video.world_model import WorldModel, WorldModelInfo

    tok = load_part(tokenizer, VQTokenizer, "tokenizer")
    dyn = load_part(dynamics, DynamicsModel, "dynamics")
    dec = load_part(decoder, DiffusionDecoder, "decoder") if decoder else None
    info = WorldModelInfo(resolution=tok.config.resolution, source={"tokenizer": tokenizer, "dynamics": dynamics,
                                                                    "decoder": decoder, "data": data})
    if data:
        from wm_video.data.reader import load_dataset_info

        d = load_dataset_info(data)
        info.fps, info.action_space, info.stats = d.fps, d.action_space.to_dict(), d.stats
    specs = {"tokenizer": tokenizer, "dynamics": dynamics, "decoder": decoder}
    quality = {part: read_quality(folder) for part, spec in specs.items() if spec and (folder := part_folder(spec))}
    return WorldModel(tok, dyn, dec, info, quality).save_pretrained(out, overwrite=overwrite)
