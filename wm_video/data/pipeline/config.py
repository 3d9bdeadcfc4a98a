"""The settings of a pipeline run: how inputs become clips and shards (a source's own choices live on it)."""

from __future__ import annotations

from dataclasses import dataclass

from wm_video.data.pipeline.filter import FilterConfig
from wm_video.data.pipeline.source import ClipParams

RUN_FIELDS = ("workers", "shard_range")  # how to run, not what comes out: free to change between reruns


@dataclass
class PipelineConfig:
    """How inputs become clips and shards (the source's own choices live on the source).

    Args:
        size: output frames are ``size x size`` pixels (short side scaled to it, centre crop), >= 16.
        clip_len: frames per clip.
        stride: frames between clip starts (default ``clip_len``: no overlap); the last clip of an input ends
            with it.
        fps: output frame rate (default: the source's; for video folders the most common rate).
        interpolation: swscale resize filter: area, bilinear, bicubic or lanczos.
        storage: frame storage of the shards: raw or png (lossless), mp4 (H.264 yuv444p, ``crf`` quality).
        crf: H.264 quality for mp4 storage (0 is lossless).
        min_motion: clips with a motion score below this are dropped as static (0 keeps all).
        dedup: duplicate clips to drop: none, exact, near (exact plus perceptual near duplicates).
        near_dup_bits: perceptual-hash bits (of 192) near duplicates may differ in.
        clips_per_shard: clips per shard at most.
        shard_bytes: raw bytes per shard at most (lowers ``clips_per_shard`` for large frames).
        workers: worker processes for probe, clip and shard.
        shard_range: ``[first, stop)``: make only these shards (SLURM array tasks); None makes all.
    """

    size: int = 64
    clip_len: int = 16
    stride: int | None = None
    fps: float | None = None
    interpolation: str = "area"
    storage: str = "raw"
    crf: int = 10
    min_motion: float = 0.5
    dedup: str = "near"
    near_dup_bits: int = 8
    clips_per_shard: int = 1000
    shard_bytes: int = 1 << 30
    workers: int = 2
    shard_range: list[int] | None = None

    def validate(self) -> None:
        for name in ("clip_len", "clips_per_shard", "shard_bytes", "workers"):
            if getattr(self, name) < 1:
                raise ValueError(f"pipeline: field '{name}' must be >= 1, got {getattr(self, name)}")
        if self.size < 16:
            raise ValueError(f"pipeline: field 'size' must be >= 16 pixels, got {self.size}")
        if self.stride is not None and self.stride < 1:
            raise ValueError(f"pipeline: field 'stride' must be >= 1, got {self.stride}")
        if self.fps is not None and self.fps <= 0:
            raise ValueError(f"pipeline: field 'fps' must be > 0, got {self.fps}")
        if self.storage not in ("raw", "png", "mp4"):
            raise ValueError(f"pipeline: field 'storage' must be raw, png or mp4, got {self.storage!r}")
        if self.storage == "mp4" and self.size % 2:
            raise ValueError(f"pipeline: mp4 storage needs an even size, got {self.size}")
        if self.interpolation.upper() not in ("AREA", "BILINEAR", "BICUBIC", "LANCZOS", "POINT"):
            raise ValueError(f"pipeline: field 'interpolation' must be area, bilinear, bicubic, lanczos or point, "
                             f"got {self.interpolation!r}")
        if self.shard_range is not None and (len(self.shard_range) != 2 or self.shard_range[0] >= self.shard_range[1]):
            raise ValueError(f"pipeline: field 'shard_range' must be two numbers FIRST < STOP, got {self.shard_range}")
        self.filter_config().validate()

    def filter_config(self) -> FilterConfig:
        return FilterConfig(self.min_motion, self.dedup, self.near_dup_bits)

    def params(self, fps: float) -> ClipParams:
        return ClipParams(self.size, self.clip_len, self.stride or self.clip_len, fps, self.interpolation)
