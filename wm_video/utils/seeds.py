"""Stable seeds mixed from integers, the same in every process (Python's hash of a tuple is salted per process)."""

from __future__ import annotations


def stable_seed(*parts: int) -> int:
    """A 64-bit seed from ``parts`` (boost's hash_combine over 64 bits): the loader's shard orders and the trainer's
    per-step reseeding draw from it, so a resumed run draws what an uninterrupted one would."""
    h = 0x9E3779B97F4A7C15
    for p in parts:
        h = (h ^ (int(p) + 0x632BE59BD9B4E019 + (h << 6) + (h >> 2))) & 0xFFFFFFFFFFFFFFFF
    return h
