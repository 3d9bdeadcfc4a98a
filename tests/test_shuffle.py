"""The loader's shuffle buffer: a fixed order for a seed, the one webdataset 1.0's filter gave (saved stream
positions index into it, so a change would make resumed runs read other samples)."""

from __future__ import annotations

import random

import pytest

from wm_video.data.shuffle import buffer_shuffle


def test_order_is_fixed_for_a_seed():
    # Recorded with webdataset 1.0.2's shuffle filter, which the loader used before: checkpoints saved then resume.
    assert list(buffer_shuffle(range(20), 5, 5, random.Random(7))) == [
        2, 1, 3, 0, 7, 9, 8, 4, 12, 10, 14, 5, 13, 16, 6, 18, 17, 19, 11, 15]
    assert list(buffer_shuffle(range(9), 4, 2, random.Random(1))) == [0, 3, 1, 4, 5, 8, 2, 6, 7]


@pytest.mark.parametrize("n, bufsize, initial", [(0, 3, 3), (1, 3, 3), (7, 1, 1), (50, 8, 3), (10, 256, 256)])
def test_every_item_once_and_lazy(n, bufsize, initial):
    read = []

    def source():
        for i in range(n):
            read.append(i)
            yield i

    out = buffer_shuffle(source(), bufsize, initial, random.Random(0))
    first = next(out, None)
    assert len(read) <= max(min(initial, bufsize), 2) + 1  # reads no further ahead than the buffer needs
    assert sorted(([] if first is None else [first]) + list(out)) == list(range(n))
