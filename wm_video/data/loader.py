"""Streaming clip loader over episode shards: seeded shuffling, node/worker splitting, resumable position.

Order is a pure function of ``(seed, epoch, rank, worker)``: each worker reads its shards, passes raw samples
through a seeded shuffle buffer and decodes them. A worker's position is the count of raw samples it consumed
in the current epoch, so a restored loader replays the cheap tar reading up to that point without decoding
and carries on with exactly the samples the interrupted run would have produced. DataLoader hands out batches
round-robin over workers; on restore the workers' roles are rotated so the first batch comes from the worker
whose turn it was.

A loader reads a dataset, a part of one (a split's training or held-out clips, :mod:`wm_video.data.split`: whole
shards, or the clips of some episodes, told apart by their sample keys before anything is decoded), or parts of
several datasets mixed at given rates.

Lost data is counted in clips against ``dataset.json``: a shard that ends early (truncated, corrupt, missing)
loses the clips it records but did not deliver, an undecodable or out-of-range clip loses one, and past
``max_bad_fraction`` of the clips the loader stops with an error naming the shards and their losses.

Batches (token shards give ``tokens`` int64 ``(b, t, h, w)`` in place of ``frames``):
``frames`` uint8 ``(b, t, 3, h, w)`` (a channels-last view: ``.contiguous()`` where a kernel needs it);
``actions`` int64 ``(b, t)`` or float32 ``(b, t, a)``; ``rewards`` float32 ``(b, t)``; ``terminations`` bool
``(b, t)`` (fields absent in the dataset are absent); ``key`` list of sample keys; ``task`` list of each clip's task
text (``meta.json`` ``extra.task``; None for a clip without), only when some clip of the batch has one.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import os
import random
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from wm_video.data.bad_clips import BadClips, DataError, why_failed, worker_message
from wm_video.data.reader import (
    DATASET_FILE,
    ClipChecks,
    DatasetMismatchError,
    decode_sample,
    iter_raw_samples,
    load_dataset_info,
    shard_paths,
)
from wm_video.data.schema import Clip, DatasetInfo, SchemaError, episode_of_key
from wm_video.data.shuffle import buffer_shuffle
from wm_video.data.split import Part, Split, require_heldout, split_dataset
from wm_video.utils.seeds import stable_seed

log = logging.getLogger(__name__)


@dataclass
class LoaderConfig:
    """How clips are streamed from shards.

    Args:
        batch_size: clips per batch (per rank).
        num_workers: DataLoader worker processes per rank (0 reads in the main process).
        shuffle_buffer: samples held in the shuffle buffer per worker (0 keeps shard order).
        resampled: draw shards with replacement forever, cut into epochs of ``epoch_length`` samples.
        epoch_length: samples per epoch over all ranks and workers (required when ``resampled``).
        seed: base seed of every random choice in the stream.
        max_bad_fraction: stop with an error when more than this fraction of a worker's clips are lost (in
            [0, 1]; clips a shard should hold per ``dataset.json`` but did not deliver count, as do clips that fail
            to decode or hold out-of-range values).
        min_samples_for_bad_check: clips a worker accounts for before the fraction is checked mid-epoch
            (it is always checked at the end of an epoch).
        drop_last: drop each worker's final partial batch.
    """

    batch_size: int = 8
    num_workers: int = 2
    shuffle_buffer: int = 256
    resampled: bool = False
    epoch_length: int | None = None
    seed: int = 0
    max_bad_fraction: float = 0.05
    min_samples_for_bad_check: int = 100
    drop_last: bool = True

    def __post_init__(self) -> None:
        if not 0.0 <= self.max_bad_fraction <= 1.0:
            raise ValueError(f"loader.max_bad_fraction must be in [0, 1], got {self.max_bad_fraction}")


def rank_and_world() -> tuple[int, int]:
    """This process's rank and the world size, from torch.distributed or the launcher's environment."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_rank(), torch.distributed.get_world_size()
    for r, w in (("RANK", "WORLD_SIZE"), ("SLURM_PROCID", "SLURM_NTASKS")):
        if r in os.environ and w in os.environ:
            return int(os.environ[r]), int(os.environ[w])
    return 0, 1


@dataclass
class _Source:
    """One dataset's part as the workers read it: its shards, the clips each should deliver, what ``dataset.json``
    promises about them, and (``part.filters``) which episodes are in."""

    root: str
    info: DatasetInfo  # its shard list cut to the part's shards
    part: Part
    urls: list[str]
    expected: dict[str, int]  # url -> clips of the part it holds
    checks: ClipChecks

    @classmethod
    def open(cls, part: Part) -> _Source:
        info = load_dataset_info(part.root)
        if part.shards is not None:  # a subset, e.g. the held-out shards of a train/validation split
            info = dataclasses.replace(info, shards=[info.shards[i] for i in part.shards])
        urls = shard_paths(part.root, info)
        expected = {url: part.clips(s) for url, s in zip(urls, info.shards, strict=True)}
        return cls(part.root, info, part, urls, expected, ClipChecks.from_info(info, os.path.join(part.root,
                                                                                                  DATASET_FILE)))


class ClipStream(IterableDataset):
    """One epoch of batches for this rank, split over workers; configured by :class:`ClipLoader`.

    With several sources each worker reads its share of every one: drawn at random at ``weights`` (a seeded
    choice per clip, so replaying positions stays exact; the epoch ends when one source runs out, as webdataset's
    ``RandomMix``), or one after another when ``weights`` is None. A mix delivers frames only, cut to the
    shortest ``clip_len`` among its datasets: their actions, rewards and terminations need not agree."""

    def __init__(self, sources: list[_Source], cfg: LoaderConfig, rank: int, world: int,
                 weights: list[float] | None = None) -> None:
        self.sources, self.cfg, self.rank, self.world, self.weights = sources, cfg, rank, world, weights
        self.urls = [u for src in sources for u in src.urls]
        self.clip_len = min(src.info.clip_len for src in sources) if len(sources) > 1 else None
        self.epoch = 0
        self.positions: dict[int, int] = {}  # logical worker -> raw samples consumed this epoch
        self.rotation = 0  # physical worker w plays logical worker (w + rotation) % num_workers

    def num_workers(self) -> int:
        return max(self.cfg.num_workers, 1)

    def per_worker_quota(self) -> int | None:
        if not self.cfg.resampled:
            return None
        if not self.cfg.epoch_length:
            raise ValueError("loader.resampled needs loader.epoch_length (samples per epoch over all ranks)")
        return -(-self.cfg.epoch_length // (self.world * self.num_workers()))

    def _shards(self, worker: int, i: int) -> Iterator[str]:
        urls, salt = self.sources[i].urls, (i,) if i else ()  # the first source draws as a lone dataset does
        slot, slots = self.rank * self.num_workers() + worker, self.world * self.num_workers()
        if self.cfg.resampled:
            rng = random.Random(stable_seed(self.cfg.seed, self.epoch, slot, 1, *salt))
            while True:
                yield rng.choice(urls)
        order = list(urls)
        random.Random(stable_seed(self.cfg.seed, self.epoch, 2, *salt)).shuffle(order)  # same order on every rank
        yield from order[slot::slots]

    def _raw_source(self, worker: int, i: int, bad: BadClips) -> Iterator[dict[str, Any]]:
        src = self.sources[i]
        for url in self._shards(worker, i):
            errors: list[Exception] = []
            read = 0
            for sample in iter_raw_samples(url, lambda u, e, errors=errors: errors.append(e)):
                if src.part.filters and not src.part.keeps(episode_of_key(sample["__key__"])):
                    continue  # the other side of the split
                read += 1
                sample["__source__"] = i
                yield sample
            # Reached only when the shard was read to its end (not when the epoch's quota closed the stream).
            expected = src.expected[url]
            if errors or read < expected:
                why = f"shard read error ({why_failed(errors[0])})" if errors else "shard ended early"
                bad.record(url, f"{why}; read {read} of the {expected} clips {DATASET_FILE} records",
                           max(expected - read, 0))
                # a resampled stream over unreadable shards would otherwise spin forever
                bad.check(self.cfg.min_samples_for_bad_check, self.cfg.max_bad_fraction)

    def _raw(self, worker: int, bad: BadClips) -> Iterator[dict[str, Any]]:
        streams = [self._raw_source(worker, i, bad) for i in range(len(self.sources))]
        if len(streams) == 1 or self.weights is None:
            yield from itertools.chain(*streams)
            return
        rng = random.Random(stable_seed(self.cfg.seed, self.epoch, self.rank, worker, 4))
        which = range(len(streams))
        while True:
            sample = next(streams[rng.choices(which, self.weights)[0]], None)
            if sample is None:  # one source ran out: the epoch ends, so the rates hold to the last clip
                return
            yield sample

    def _decode(self, sample: dict[str, Any]) -> Clip:
        src = self.sources[sample["__source__"]]
        clip = decode_sample(sample, src.info.action_space, src.checks)
        if self.clip_len is None:
            return clip
        meta = dataclasses.replace(clip.meta, num_frames=self.clip_len, fields=[])
        return Clip(clip.frames[:self.clip_len], meta)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        wi = get_worker_info()
        worker = ((wi.id if wi else 0) + self.rotation) % self.num_workers()
        cfg, bad = self.cfg, BadClips()
        raw = self._raw(worker, bad)
        if cfg.shuffle_buffer > 0:
            rng = random.Random(stable_seed(cfg.seed, self.epoch, self.rank, worker, 3))
            raw = buffer_shuffle(raw, bufsize=cfg.shuffle_buffer, initial=cfg.shuffle_buffer, rng=rng)
        skip, quota = self.positions.get(worker, 0), self.per_worker_quota()
        pos, batch = 0, []
        for sample in raw:
            if quota is not None and pos >= quota:  # raw samples, bad ones included: exact under restore
                break
            pos += 1
            if pos <= skip:  # consumed before the restore: read, not decoded, counted as delivered
                bad.seen += 1
                continue
            try:
                clip = self._decode(sample)
            except DatasetMismatchError:
                raise  # dataset.json describes other data: every clip would be skipped
            except Exception as e:
                bad.record(sample.get("__url__", "?"), str(e))
                bad.check(cfg.min_samples_for_bad_check, cfg.max_bad_fraction)
                continue
            bad.seen += 1
            batch.append(clip)
            if len(batch) == cfg.batch_size:
                yield collate(batch, worker, pos, bad.bad)
                batch = []
        bad.check(cfg.min_samples_for_bad_check, cfg.max_bad_fraction, final=True)
        if batch and not cfg.drop_last:
            yield collate(batch, worker, pos, bad.bad)


def collate(clips: list[Clip], worker: int, pos: int, bad: int) -> dict[str, Any]:
    stacked = np.stack([c.frames for c in clips])
    if stacked.ndim == 4:  # token shards: (b, t, h, w) token ids as int64, the embedding lookup's index type
        visual = {"tokens": torch.from_numpy(stacked.astype(np.int64))}
    else:
        # (b, t, h, w, c) storage viewed as (b, t, c, h, w): a transposing copy here would cost 2-3x the
        # loader's throughput at 256x256; the device-side float conversion takes any strides.
        visual = {"frames": torch.from_numpy(stacked).permute(0, 1, 4, 2, 3)}
    out: dict[str, Any] = {
        **visual,
        "key": [c.key for c in clips],
        "_worker": worker,
        "_pos": pos,
        "_bad": bad,
    }
    for name in clips[0].meta.fields:
        out[name] = torch.from_numpy(np.stack([getattr(c, name) for c in clips]))
    tasks = [c.meta.task for c in clips]
    if any(t is not None for t in tasks):
        out["task"] = tasks
    return out


class ClipLoader:
    """Iterable over batches of one epoch at a time, with ``state_dict`` / ``load_state_dict`` for exact resume.

    ``state_dict()`` describes the stream after the batches the consumer has used. A consumer that fetches
    ahead (Lightning's fit loop holds one batch in hand to detect the epoch's end) sets ``lookahead`` to the
    number of batches it holds; :func:`wm_video.training.build_trainer` does so for Lightning. Lightning calls
    ``state_dict`` / ``load_state_dict`` itself when it checkpoints and resumes.

    Args:
        data: dataset folder holding ``dataset.json`` and its shards; or a :class:`~wm_video.data.split.Part` of
            one (e.g. a split's held-out clips); or a list of parts of several datasets, which must share their
            frame resolution (see :class:`ClipStream` for what a mix delivers).
        cfg: streaming options.
        rank, world: this process's place among data-parallel ranks (default: from the environment).
        shards: with a folder: indices into ``dataset.json``'s shard list to read (default: all).
        weights: with a list of parts: draw clips from each at these relative rates (default: read them one after
            another).
    """

    def __init__(self, data: str | os.PathLike | Part | Sequence[Part], cfg: LoaderConfig | None = None,
                 rank: int | None = None, world: int | None = None, shards: list[int] | None = None,
                 weights: Sequence[float] | None = None) -> None:
        self.cfg = cfg or LoaderConfig()
        env_rank, env_world = rank_and_world()
        self.rank = env_rank if rank is None else rank
        self.world = env_world if world is None else world
        if isinstance(data, (str, os.PathLike)):
            data = Part(str(data), None if shards is None else tuple(shards))
        parts = [data] if isinstance(data, Part) else list(data)
        if not parts:
            raise ValueError("no dataset to load")
        if weights is not None and (len(weights) != len(parts) or min(weights) < 0 or sum(weights) <= 0):
            raise ValueError(f"{len(parts)} datasets need as many weights >= 0, not all 0; got {list(weights)}")
        sources = [_Source.open(p) for p in parts]
        check_mixable([(src.root, src.info) for src in sources])
        self.info = sources[0].info
        self.stream = ClipStream(sources, self.cfg, self.rank, self.world,
                                 None if weights is None or len(parts) == 1 else [float(w) for w in weights])
        self.lookahead = 0  # batches handed out that the consumer has not used yet
        self.bad_samples: dict[int, int] = {}  # worker -> clips lost this epoch (skipped or never delivered)
        self._batches_in_epoch = 0
        self._next_worker = 0  # the logical worker whose batch comes next
        self._history: deque[dict[str, Any]] = deque([self._snapshot()], maxlen=8)  # state after each batch

    @property
    def epoch(self) -> int:
        return self.stream.epoch

    def set_epoch(self, epoch: int) -> None:
        self.stream.epoch, self.stream.positions, self.stream.rotation = epoch, {}, 0
        self._batches_in_epoch, self._next_worker = 0, 0
        self._history = deque([self._snapshot()], maxlen=8)

    def __iter__(self) -> Iterator[dict[str, Any]]:
        n = self.stream.num_workers()
        self._history = deque([self._snapshot()], maxlen=8)
        loader = DataLoader(self.stream, batch_size=None, num_workers=self.cfg.num_workers,
                            persistent_workers=False, prefetch_factor=2 if self.cfg.num_workers else None)
        batches = iter(loader)
        try:
            for batch in batches:
                w = batch.pop("_worker")
                self.stream.positions[w] = batch.pop("_pos")
                self.bad_samples[w] = batch.pop("_bad")
                self._batches_in_epoch += 1
                # Next batch comes from the following worker: keep the rotation that makes it so after a restore.
                self._next_worker = (w + 1) % n
                self._history.append(self._snapshot())
                yield batch
        except Exception as e:
            # The traceback keeps the iterator and its workers alive until the garbage collector reaches them (then
            # a 5 s join, or an error when that happens in a forked child): stop them now.
            getattr(batches, "_shutdown_workers", lambda: None)()
            message = worker_message(e) if isinstance(e, (DataError, SchemaError)) else None
            if message is None:
                raise
            raise type(e)(message) from e  # one line for the CLI; the worker's traceback stays in the chain
        self.set_epoch(self.stream.epoch + 1)  # whatever was handed out was used: the epoch is over

    def _snapshot(self) -> dict[str, Any]:
        return {
            "epoch": self.stream.epoch,
            "positions": {int(k): int(v) for k, v in self.stream.positions.items()},
            "next_worker": self._next_worker,
            "batches_in_epoch": self._batches_in_epoch,
            "seed": self.cfg.seed, "num_workers": self.cfg.num_workers, "batch_size": self.cfg.batch_size,
            "rank": self.rank, "world": self.world, "shards": len(self.stream.urls),
        }

    def state_dict(self) -> dict[str, Any]:
        """The stream after the batches the consumer has used; plain values (``weights_only=True`` safe)."""
        back = min(self.lookahead, len(self._history) - 1)
        return dict(self._history[-1 - back])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        now = self._snapshot()
        mismatched = [k for k in ("seed", "num_workers", "batch_size", "rank", "world", "shards")
                      if state.get(k) != now[k]]
        if mismatched:
            detail = ", ".join(f"{k}: saved {state.get(k)!r} vs now {now[k]!r}" for k in mismatched)
            raise ValueError(f"loader state does not match this loader ({detail}); exact resume needs the same values")
        self.stream.epoch = int(state["epoch"])
        self.stream.positions = {int(k): int(v) for k, v in state["positions"].items()}
        self.stream.rotation = self._next_worker = int(state["next_worker"])
        self._batches_in_epoch = int(state["batches_in_epoch"])
        self._history = deque([self._snapshot()], maxlen=8)


def check_mixable(datasets: Sequence[tuple[str | os.PathLike, DatasetInfo]]) -> None:
    """Datasets ``(root, info)`` batch together only with the same frame grid of the same kind (frames or tokens):
    a clear error naming both ``dataset.json`` files otherwise."""

    def grid(info: DatasetInfo) -> str:
        h, w = info.resolution
        return f"{'tokens' if info.frame_storage == 'tokens' else 'frames'} of {h}x{w}"

    (first, first_info), *others = datasets
    for root, info in others:
        if grid(info) != grid(first_info):
            raise ValueError(f"datasets mixed together must share their resolution: {Path(first) / DATASET_FILE} "
                             f"has {grid(first_info)}, {Path(root) / DATASET_FILE} has {grid(info)}")


def heldout_loader(data: str | os.PathLike, val_fraction: float | None = None, batch_size: int = 8
                   ) -> tuple[ClipLoader, Split]:
    """An ordered loader over the clips training held out of ``data`` (the same split: see
    :mod:`wm_video.data.split`), for evaluation; and that split. Raises
    :class:`~wm_video.data.split.NoHeldOutError`, saying how to fix the dataset, when it holds nothing out."""
    split = split_dataset(data, val_fraction)
    split.log("evaluation")
    require_heldout(split)
    cfg = LoaderConfig(batch_size=batch_size, num_workers=1, shuffle_buffer=0, drop_last=False)
    return ClipLoader(split.heldout, cfg), split
