"""``wm-video export``: a training checkpoint (Lightning file or DeepSpeed ZeRO folder) to release weights."""

from __future__ import annotations


def export(checkpoint: str | None = None, out: str | None = None) -> None:
    """Consolidate a training checkpoint into a part's export folder (config.json + model.safetensors).

    A DeepSpeed ZeRO checkpoint (a folder such as OUT/checkpoints/last.ckpt/ written by a deepspeed_stage_*
    strategy) has its shards merged into full fp32 weights on this machine's CPU, whatever the number of ranks
    that wrote it; a Lightning .ckpt file is read as it is. The model class and config come from the checkpoint,
    and the result loads with the part's from_pretrained (VQTokenizer, DynamicsModel, DiffusionDecoder).
    Training-only networks (a discriminator) are left out. Files are read with weights_only loading.

    Example:
        wm-video export --checkpoint runs/dyn_base/checkpoints/last.ckpt --out runs/dyn_base/export

    Args:
        checkpoint: a .ckpt file or a DeepSpeed checkpoint folder.
        out: export folder to write (replaced when it exists, once the new one is complete).
    """
    from wm_video.training.consolidate import export_part

    if not (checkpoint and out):
        raise ValueError("--checkpoint and --out are both required")
    path = export_part(checkpoint, out)
    print(f"exported to {path}")
