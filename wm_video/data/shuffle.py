"""The loader's shuffle buffer, kept here so that a sample order never depends on the webdataset version.

A resumed loader replays the stream up to a saved count of samples (:mod:`wm_video.data.loader`): the order must
be a pure function of the input order and the seeded ``rng``, the same in the run that saved the count and in the
run that resumes from it, whatever packages were upgraded in between. It draws the same order as webdataset 1.0's
``shuffle`` filter for the same seed (the loader used that filter until now, so checkpoints written with it resume
exactly); it has no unseeded fallback.
"""

from __future__ import annotations

import random
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
_END = object()


def buffer_shuffle(data: Iterable[T], bufsize: int, initial: int, rng: random.Random) -> Iterator[T]:
    """Yield ``data`` in a shuffled order through a buffer of ``bufsize`` items.

    Items are read two at a time while the buffer is below ``bufsize`` (one at a time when full); once it holds
    ``initial`` items (at most ``bufsize``), each read is followed by yielding one item picked uniformly at random
    (``rng.randint``; the last item takes the picked one's slot). At the end the buffer is emptied the same way.
    """
    it = iter(data)
    initial = min(initial, bufsize)
    buf: list[T] = []
    for item in it:
        buf.append(item)
        if len(buf) < bufsize:
            more = next(it, _END)
            if more is not _END:
                buf.append(more)
        if len(buf) >= initial:
            yield _pick(buf, rng)
    while buf:
        yield _pick(buf, rng)


def _pick(buf: list[T], rng: random.Random) -> T:
    k = rng.randint(0, len(buf) - 1)
    item = buf[k]
    buf[k] = buf[-1]
    buf.pop()
    return item
