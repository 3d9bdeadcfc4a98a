"""``wm-video export``: a training checkpoint (Lightning file or DeepSpeed ZeRO folder) to release weights."""

from __future__ import annotations

from wm_video.assembly import export_world_model
from wm_video.training.consolidate import PART_FILES, export_part, is_part_export
from wm_video.utils.atomic import check_output_folder
from wm_video.world_model import FOLDER_ENTRIES, is_world_model_folder


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
