"""The held-out split: which clips of a dataset train and which are held out for validation and evaluation.

A dataset holds out whole episodes, so no held-out frame was ever trained on (not even inside another clip of
the same video). ``dataset.json`` records them (``heldout``) when the dataset is written: the last
:data:`VAL_FRACTION` of its episodes in write order, at least one when it has two or more, whatever the number of
shards (16 videos in one shard hold out 2). Training, ``wm-video eval``, the ``eval/`` scripts and the fidelity
suite all read that record, so they agree without being told a fraction:

- ``val_fraction=None`` (the default everywhere): the recorded split;
- a number: the last that fraction of the episodes instead (the recorded list itself at the recorded fraction, so
  a hand-edited list is kept); ``0`` holds out nothing (a run without validation);
- a ``dataset.json`` written before splits were recorded keeps the rule its models were trained and scored with:
  the last ``round(n * val_fraction)`` of its ``n`` shards (at least one when n >= 2, never all), so its results do
  not change.

:meth:`Split.log` names the rule used; a split that holds out nothing it was asked to (one episode; an old dataset
of one shard) logs a loud warning, and :func:`require_heldout` (evaluation) refuses it, saying how to fix it.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from wm_video.data.reader import DATASET_FILE, load_dataset_info
from wm_video.data.schema import DatasetInfo, ShardRecord

log = logging.getLogger(__name__)

VAL_FRACTION = 0.1  # the one default held-out fraction: of episodes when a dataset is written, of old datasets' shards
VAL_FRACTION_HELP = ("held-out fraction (default: the split the dataset.json records; a number: that fraction of its "
                     "episodes, or of its shards for a dataset.json written before splits were recorded)")
LOUD = "!" * 10  # brackets the nothing-held-out warning, so it stands out in a training log


class NoHeldOutError(ValueError):
    """Evaluation was asked for held-out clips of a dataset that holds none out."""


def choose_heldout(episodes: list[str], val_fraction: float) -> list[str]:
    """The held-out episodes: the last ``round(n * val_fraction)`` of ``n`` (at least one when n >= 2, never all)."""
    n = len(episodes)
    if n < 2 or val_fraction <= 0:
        return []
    return list(episodes[n - min(n - 1, max(1, round(n * val_fraction))):])


def split_shards(n: int, val_fraction: float) -> tuple[list[int], list[int]]:
    """The rule of datasets written before splits were recorded: train and held-out shard indices, the last
    ``round(n * val_fraction)`` shards held out (at least one when n >= 2, never all)."""
    if n < 2 or val_fraction <= 0:
        return list(range(n)), []
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return list(range(n - n_val)), list(range(n - n_val, n))


@dataclass(frozen=True)
class Part:
    """Some clips of the dataset at ``root``: those of ``shards`` (indices into ``dataset.json``'s list; None: all)
    whose episode is among ``episodes`` (``side="heldout"``) or is not (``side="train"``); ``side="all"`` keeps
    every clip of the shards."""

    root: str
    shards: tuple[int, ...] | None = None
    episodes: frozenset[str] = frozenset()
    side: Literal["all", "train", "heldout"] = "all"

    @property
    def filters(self) -> bool:
        """Whether clips must be told apart by episode (the shards alone do not say which are in)."""
        return self.side == "heldout" or (self.side == "train" and bool(self.episodes))

    def keeps(self, episode_id: str) -> bool:
        return self.side == "all" or (episode_id in self.episodes) == (self.side == "heldout")

    def clips(self, record: ShardRecord) -> int:
        """How many of the shard ``record``'s clips are in this part."""
        if not self.filters:
            return record.samples
        return sum(n for e, n in (record.episode_clips or {}).items() if self.keeps(e))


@dataclass(frozen=True)
class Split:
    """A dataset cut into training and held-out clips.

    Args:
        root: the dataset folder.
        rule: how the split was made, in words (logged, and recorded beside evaluation results).
        train, heldout: the two parts.
        heldout_clips: clips held out.
        heldout_episodes: episodes held out (None under the old shard rule, whose episodes are not listed).
        problem: why nothing is held out and how to fix it (None when clips are held out, or when
            ``val_fraction=0`` asked for nothing).
    """

    root: str
    rule: str
    train: Part
    heldout: Part
    heldout_clips: int
    heldout_episodes: int | None
    problem: str | None = None

    def log(self, what: str = "data") -> None:
        """Log the rule used; warn loudly when nothing is held out that should be."""
        log.info("%s: held-out split of %s: %s", what, self.root, self.rule)
        if self.problem:
            log.warning("%s NOTHING HELD OUT of %s (%s): no validation, no quality gates, and 'wm-video eval' "
                        "refuses it. %s %s", LOUD, self.root, what, self.problem, LOUD)


def split_dataset(root: str | os.PathLike, val_fraction: float | None = None, info: DatasetInfo | None = None
                  ) -> Split:
    """The split of the dataset at ``root`` (see the module docstring for what ``val_fraction`` does)."""
    if info is None:
        info = load_dataset_info(root)
    root, n = str(root), len(info.shards)
    file = Path(root) / DATASET_FILE
    if info.heldout is None:  # written before splits were recorded: the old rule, unchanged
        vf = VAL_FRACTION if val_fraction is None else val_fraction
        train_idx, val_idx = split_shards(n, vf)
        rule = (f"the last {len(val_idx)} of {n} shards (val_fraction={vf}; {file} records no held-out episodes: "
                "it was written before wm-video recorded them)")
        problem = None
        if not val_idx and vf > 0:
            problem = (f"{file} records no held-out episodes (it was written by an older wm-video) and it has "
                       f"{n} shard{'' if n == 1 else 's'}, so the old rule (the last shards) holds nothing out. Fix: "
                       "write the dataset again with this version (rerun the 'wm-video data ...' command into a new "
                       "--out): new datasets hold out whole episodes, whatever their shard count")
        return Split(root, rule, Part(root, tuple(train_idx)), Part(root, tuple(val_idx)),
                     sum(info.shards[i].samples for i in val_idx), None, problem)
    order = info.episode_order() or []
    if val_fraction is None or val_fraction == info.heldout.val_fraction:
        episodes = info.heldout.episodes
        rule = (f"{len(episodes)} of {len(order)} episodes, as {file} records "
                f"(val_fraction={info.heldout.val_fraction})")
    else:
        episodes = choose_heldout(order, val_fraction)
        rule = (f"the last {len(episodes)} of {len(order)} episodes (val_fraction={val_fraction}, not the "
                f"{info.heldout.val_fraction} {file} records)")
    held = frozenset(episodes)
    train = Part(root, (), held, "train")
    heldout = Part(root, (), held, "heldout")
    train_idx = tuple(i for i, s in enumerate(info.shards) if train.clips(s))
    val_idx = tuple(i for i, s in enumerate(info.shards) if heldout.clips(s))
    problem = None
    if not held and val_fraction != 0:
        if len(order) < 2:
            problem = (f"{root} holds {len(order)} episode{'' if len(order) == 1 else 's'}, and whole episodes are "
                       "held out. Fix: write it from 2 or more episodes (videos or recorded episodes: 10% of them, "
                       "at least one, are then held out), or evaluate on the held-out clips of another dataset")
        else:
            problem = (f"field 'heldout.episodes' of {file} is empty. Fix: list the episodes to hold out there "
                       f"(any of its {len(order)} episodes), or pass val_fraction")
    return Split(root, rule, Part(root, train_idx, held, "train"), Part(root, val_idx, held, "heldout"),
                 sum(heldout.clips(info.shards[i]) for i in val_idx), len(held), problem)


def require_heldout(split: Split) -> Split:
    """``split`` when it holds clips out; otherwise :class:`NoHeldOutError` saying why and how to fix it."""
    if split.heldout_clips:
        return split
    raise NoHeldOutError(f"{split.root}: no held-out clips to evaluate on: "
                         + (split.problem or f"{split.rule}. Fix: leave val_fraction at its default (the dataset's "
                                                "recorded split) or set it above 0"))
