"""Named presets of the loader config (kind ``loader``): ``debug`` (CPU tests, seconds), ``tiny`` (the README demo),
``small`` (one machine), ``base`` (a GPU node) and ``large`` (multi-node). Importing this module registers them in
:mod:`wm_video.config`'s registry (:mod:`wm_video.registry` imports every preset module)."""

from __future__ import annotations

from wm_video.config import register_kind, register_preset
from wm_video.data.loader import LoaderConfig

register_kind("loader", LoaderConfig)


@register_preset("loader", "debug")
def loader_debug() -> LoaderConfig:
    return LoaderConfig(batch_size=2, num_workers=0, shuffle_buffer=8)


@register_preset("loader", "small")
def loader_small() -> LoaderConfig:
    return LoaderConfig(batch_size=16, num_workers=2, shuffle_buffer=256)


@register_preset("loader", "base")
def loader_base() -> LoaderConfig:
    return LoaderConfig(batch_size=32, num_workers=8, shuffle_buffer=2000, resampled=True, epoch_length=1_000_000)


@register_preset("loader", "large")
def loader_large() -> LoaderConfig:
    return LoaderConfig(batch_size=32, num_workers=10, shuffle_buffer=5000, resampled=True, epoch_length=10_000_000)


@register_preset("loader", "tiny")
def loader_tiny() -> LoaderConfig:
    # 8 clips per step from one worker process; a resampled stream, so short datasets never end an epoch.
    return LoaderConfig(batch_size=8, num_workers=1, shuffle_buffer=256, resampled=True, epoch_length=100_000)
