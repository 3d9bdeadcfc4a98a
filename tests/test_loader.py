"""Streaming loader: seeded order, node/worker splits, exact resume, and bad data skipped and counted."""

from __future__ import annotations

import logging

import pytest
import torch
from conftest import write_dataset

from wm_video.data.bad_clips import DataError
from wm_video.data.loader import ClipLoader, LoaderConfig


def keys(loader) -> list[str]:
    return [k for batch in loader for k in batch["key"]]


def cfg(**kw) -> LoaderConfig:
    base = dict(batch_size=2, num_workers=2, shuffle_buffer=5, seed=3)
    return LoaderConfig(**{**base, **kw})


def test_batch_layout(dataset):
    root, clips = dataset
    batch = next(iter(ClipLoader(root, cfg(num_workers=0))))
    t, h, w, _ = clips[0].frames.shape
    assert batch["frames"].shape == (2, t, 3, h, w) and batch["frames"].dtype == torch.uint8
    assert batch["actions"].shape == (2, t) and batch["actions"].dtype == torch.int64
    assert batch["rewards"].dtype == torch.float32 and batch["terminations"].dtype == torch.bool
    by_key = {c.key: c for c in clips}
    torch.testing.assert_close(batch["frames"][0].permute(0, 2, 3, 1), torch.from_numpy(by_key[batch["key"][0]].frames))


def test_one_epoch_covers_every_clip_once_and_is_seeded(dataset):
    root, clips = dataset
    a, b = keys(ClipLoader(root, cfg())), keys(ClipLoader(root, cfg()))
    assert a == b
    assert sorted(a) == sorted(c.key for c in clips)
    assert keys(ClipLoader(root, cfg(seed=4))) != a
    loader = ClipLoader(root, cfg())
    first, second = keys(loader), keys(loader)  # epochs reshuffle, deterministically
    assert first == a and second != first and sorted(second) == sorted(first)


@pytest.mark.parametrize("num_workers", [0, 2])
def test_ranks_split_the_data_disjointly(dataset, num_workers):
    root, clips = dataset
    per_rank = [keys(ClipLoader(root, cfg(num_workers=num_workers), rank=r, world=2)) for r in range(2)]
    assert not set(per_rank[0]) & set(per_rank[1])
    assert sorted(per_rank[0] + per_rank[1]) == sorted(c.key for c in clips)


def test_workers_split_the_data_disjointly(tmp_path):
    write_dataset(tmp_path, shards=4, clips_per_shard=2)
    loader = ClipLoader(tmp_path, cfg(num_workers=2, shuffle_buffer=0, batch_size=2))
    seen: dict[int, set[str]] = {0: set(), 1: set()}
    for i, batch in enumerate(loader):
        seen[i % 2].update(k.split("_")[0] for k in batch["key"])  # episode == shard here
    assert seen[0] and seen[1] and not seen[0] & seen[1]


@pytest.mark.parametrize("num_workers", [0, 2, 3])
@pytest.mark.parametrize("stop_after", [1, 4])
def test_resume_continues_the_stream_exactly(tmp_path, num_workers, stop_after):
    write_dataset(tmp_path, shards=5, clips_per_shard=4)
    reference = ClipLoader(tmp_path, cfg(num_workers=num_workers))
    full = [b["key"] for b in reference] + [b["key"] for b in reference]  # two epochs
    first = ClipLoader(tmp_path, cfg(num_workers=num_workers))
    it, got = iter(first), []
    for _ in range(stop_after):
        got.append(next(it)["key"])
    state = first.state_dict()
    del it
    torch.save(state, tmp_path / "state.pt")
    resumed = ClipLoader(tmp_path, cfg(num_workers=num_workers))
    resumed.load_state_dict(torch.load(tmp_path / "state.pt", weights_only=True))
    got += [b["key"] for b in resumed] + [b["key"] for b in resumed]
    assert got == full


def test_resume_with_other_settings_is_an_error(dataset):
    root, _ = dataset
    state = ClipLoader(root, cfg()).state_dict()
    with pytest.raises(ValueError, match="batch_size"):
        ClipLoader(root, cfg(batch_size=3)).load_state_dict(state)


def test_resampled_stream_has_the_set_epoch_length(dataset):
    root, _ = dataset
    loader = ClipLoader(root, cfg(resampled=True, epoch_length=40, num_workers=2))
    first, second = keys(loader), keys(loader)
    assert len(first) == len(second) == 40
    assert first != second
    assert keys(ClipLoader(root, cfg(resampled=True, epoch_length=40, num_workers=2))) == first
    with pytest.raises(ValueError, match="epoch_length"):
        keys(ClipLoader(root, cfg(resampled=True, num_workers=0)))


def _corrupt_one_sample(path):
    data = bytearray(path.read_bytes())
    i = data.index(b"\x93NUMPY")  # the first frames.npy member's header
    data[i:i + 6] = b"garbag"
    path.write_bytes(bytes(data))


def test_corrupt_sample_is_skipped_counted_and_logged(tmp_path, caplog):
    clips = write_dataset(tmp_path, shards=4, clips_per_shard=6)
    _corrupt_one_sample(tmp_path / "shard-000002.tar")
    loader = ClipLoader(tmp_path, cfg(num_workers=0, max_bad_fraction=0.1, drop_last=False))
    with caplog.at_level(logging.WARNING):
        got = keys(loader)
    assert len(got) == len(clips) - 1
    assert sum(loader.bad_samples.values()) == 1
    assert "shard-000002.tar" in caplog.text and "frames.npy" in caplog.text


def test_truncated_shard_is_skipped_and_the_rest_is_read(tmp_path, caplog):
    write_dataset(tmp_path, shards=4, clips_per_shard=6)
    path = tmp_path / "shard-000001.tar"
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2 + 100])
    loader = ClipLoader(tmp_path, cfg(num_workers=0, max_bad_fraction=0.5, drop_last=False))
    with caplog.at_level(logging.WARNING):
        got = keys(loader)
    intact = [k for k in got if k.startswith("ep0001")]
    assert len(got) - len(intact) == 18  # the other three shards whole
    assert 0 < len(intact) < 6  # and the samples before the cut
    assert sum(loader.bad_samples.values()) >= 1
    assert "shard-000001.tar" in caplog.text


def test_too_much_bad_data_stops_with_a_clear_error(tmp_path):
    write_dataset(tmp_path, shards=2, clips_per_shard=3)
    (tmp_path / "shard-000000.tar").write_bytes(b"not a tar file at all" * 10)
    with pytest.raises(DataError, match=r"unreadable.*max_bad_fraction.*shard-000000.tar"):
        keys(ClipLoader(tmp_path, cfg(num_workers=0, max_bad_fraction=0.1)))


def test_resampled_stream_over_unreadable_shards_stops(tmp_path):
    write_dataset(tmp_path, shards=2, clips_per_shard=3)
    for shard in tmp_path.glob("*.tar"):
        shard.write_bytes(b"garbage" * 100)
    with pytest.raises(DataError, match="unreadable"):
        keys(ClipLoader(tmp_path, cfg(num_workers=0, resampled=True, epoch_length=10, min_samples_for_bad_check=20)))


def test_a_shard_subset_reads_only_those_shards(dataset):
    root, _ = dataset
    got = keys(ClipLoader(root, cfg(num_workers=0), shards=[1, 3]))
    assert got and {k.split("_")[0] for k in got} == {"ep0001", "ep0003"}
