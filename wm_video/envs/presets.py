"""Named presets of simulator collection (kind ``collect``): ``debug`` (CPU tests, seconds), ``small`` (one machine),
``base`` and ``large`` (many workers). Importing this module registers them in :mod:`wm_video.config`'s registry
(:mod:`wm_video.registry` imports every preset module)."""

from __future__ import annotations

from wm_video.config import register_kind, register_preset
from wm_video.envs.collect import CollectConfig

register_kind("collect", CollectConfig)


@register_preset("collect", "debug")
def collect_debug() -> CollectConfig:
    return CollectConfig(episodes=2, episodes_per_shard=1, clip_len=8, max_episode_steps=40, workers=1)


@register_preset("collect", "small")
def collect_small() -> CollectConfig:
    return CollectConfig(episodes=16, episodes_per_shard=4, clip_len=16, workers=2)


@register_preset("collect", "base")
def collect_base() -> CollectConfig:
    return CollectConfig(episodes=1000, episodes_per_shard=25, clip_len=16, workers=8)


@register_preset("collect", "large")
def collect_large() -> CollectConfig:
    return CollectConfig(episodes=20_000, episodes_per_shard=50, clip_len=16, workers=32)
