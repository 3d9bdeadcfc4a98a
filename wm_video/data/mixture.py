"""Domain mixtures: several datasets streamed as one, every batch from a single dataset (its *domain*), drawn by weight.

A foundation model pretrains on many sources at once: Atari with 18 discrete actions, a robot arm with 7 continuous
ones, action-free video. Their actions cannot share a tensor, so a batch never mixes them: the mixture draws, per
batch, which source it comes from, at the sources' weights, and each dynamics step sees one action space (one
action encoder per domain). :class:`~wm_video.data.loader.ClipLoader` streams each source, so a mixture's batch is
a single-dataset batch (``frames`` or ``tokens``, ``actions``, ``rewards``, ``terminations``, ``key``) plus
``"domain"``, the source's name (a ``str``).

- **The draw** of batch ``i`` is a pure function of ``(seed, i)`` (:func:`draw_domains`): every data-parallel rank
  (DDP, SLURM arrays) takes a batch of the same domain at the same step, while each reads its own shards of that
  source (the ClipLoaders split every source by ``rank`` / ``world`` as they do a lone dataset). Weight 0 is
  never drawn.
- **Endless.** A source that reaches the end of its epoch starts its next one (reshuffled, as a lone ClipLoader
  does), so the mixture never runs dry and the rates hold at every step; training budgets are optimizer steps.
  Lightning validates by ``val_check_interval`` steps then; ``epoch_batches=N`` ends each ``iter()`` after N
  batches instead (the stream goes on where it stood), for code that wants epochs.
- **Exact resume.** ``state_dict()`` holds the batch counter and every source's ClipLoader state (plain values,
  ``weights_only=True`` safe); ``load_state_dict`` continues the very same batches, domains included. ``lookahead``
  means what it means for ClipLoader (batches fetched but not yet used; Lightning holds one).
- **One shape per stream.** Sources must share their frame resolution and storage kind (frames or tokens; token
  shards of one tokenizer: the same ``tokens.token_fingerprint``, which a tokenizer fine-tuned with its codebook
  frozen keeps, or else the same tokenizer folder): every batch is then ``(b, t, ...)`` alike, ``t`` cut to the
  shortest ``clip_len``.
- **Cost.** Each source has its own DataLoader: up to ``len(sources) * cfg.num_workers`` worker processes per rank,
  each started when its source is first drawn (a weight-0 source starts none).

Example (a YAML ``sources:`` list, or dicts, make the spec)::

    spec = MixtureSpec.from_config([
        {"path": "data/pong", "weight": 3},                      # domain "pong": the folder's name
        {"path": "data/lerobot_pusht", "weight": 1, "domain": "pusht"},
        {"path": "data/videos", "weight": 1},                    # action-free video
    ])
    loader = DomainMixLoader(spec, LoaderConfig(batch_size=8), side="train")   # each source's training clips
    for name, d in loader.domains.items():                       # one action encoder per domain
        print(name, d.action_space, d.action_stats)              # e.g. pusht: continuous dim 2, mean/std per dim
    for batch in loader:                                         # endless: stop after your step budget
        batch["domain"], batch["frames"].shape, batch.get("actions")
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import os
import random
import re
from collections import deque
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Literal

import yaml

from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.data.reader import DATASET_FILE, load_dataset_info
from wm_video.data.schema import ActionSpace, DatasetInfo, SchemaError
from wm_video.data.split import Part, Split, split_dataset
from wm_video.utils.seeds import stable_seed

log = logging.getLogger(__name__)

DOMAIN_NAME = re.compile(r"[A-Za-z0-9_-]+")  # a domain names its action encoder (a ModuleDict key: no '.')
EMPTY_EPOCHS = 3  # fresh epochs in a row without a batch before a source is called too small for its ranks
TIME_FIELDS = ("frames", "tokens", "actions", "rewards", "terminations")  # batch fields with a time axis (dim 1)


class MixtureError(ValueError):
    """A mixture that cannot stream; the message names the source (index, domain, path) and the field."""


@dataclass
class MixtureSource:
    """One dataset of a mixture.

    Args:
        path: the dataset folder (holding ``dataset.json``); relative paths are relative to the working directory.
        weight: relative rate of batches from this source (>= 0; 0 keeps it out of the draw, its action space
            still listed in :attr:`DomainMixLoader.domains`).
        domain: the name batches carry in ``"domain"`` (default: the folder's name); letters, digits, ``_``, ``-``.
    """

    path: str = ""
    weight: float = 1.0
    domain: str | None = None

    @property
    def name(self) -> str:
        return self.domain if self.domain is not None else Path(os.path.abspath(self.path)).name


@dataclass
class MixtureSpec:
    """The sources of a mixture, checked as a whole (field by field; :func:`open_sources` reads the datasets)."""

    sources: list[MixtureSource] = field(default_factory=list)

    def __post_init__(self) -> None:
        if not self.sources:
            raise MixtureError("a mixture needs at least one source (field 'sources' is empty)")
        seen: dict[str, int] = {}
        for i, src in enumerate(self.sources):
            if not isinstance(src.path, str | os.PathLike) or not str(src.path):
                raise MixtureError(f"{where(i, src, named=False)}: field 'path' must name a dataset folder, "
                                   f"got {src.path!r}")
            w = src.weight
            if isinstance(w, bool) or not isinstance(w, int | float) or not math.isfinite(w) or w < 0:
                raise MixtureError(f"{where(i, src)}: field 'weight' must be a finite number >= 0, got {w!r}")
            name = src.name
            if not isinstance(name, str) or not DOMAIN_NAME.fullmatch(name):
                what = "field 'domain'" if src.domain is not None else "its folder's name (the default domain)"
                raise MixtureError(f"{where(i, src, named=False)}: {what} must be letters, digits, '_' or '-' "
                                   f"(it names the domain's action encoder), got {name!r}; set 'domain'")
            if name in seen:
                j = seen[name]
                raise MixtureError(f"{where(i, src)}: field 'domain': {name!r} is also the domain of source {j} "
                                   f"({self.sources[j].path}); domain names must be unique: set 'domain' on one")
            seen[name] = i
        if not any(src.weight > 0 for src in self.sources):
            raise MixtureError(f"field 'weight': all {len(self.sources)} sources have weight 0; at least one must be "
                               "> 0")

    @property
    def names(self) -> list[str]:
        return [src.name for src in self.sources]

    @classmethod
    def from_config(cls, data: MixtureSpec | Mapping[str, Any] | Sequence[Any]) -> MixtureSpec:
        """From a list of sources (``MixtureSource``, a dict ``{path, weight, domain}`` or a bare path) or a dict
        ``{"sources": [...]}``: the shapes a YAML file or a config field holds."""
        if isinstance(data, MixtureSpec):
            return data
        if isinstance(data, Mapping):
            unknown = set(data) - {"sources"}
            if unknown:
                raise MixtureError(f"unknown field(s) {sorted(unknown)} in a mixture; it holds 'sources'")
            data = data.get("sources") or []
        if isinstance(data, str | os.PathLike) or not isinstance(data, Sequence):
            raise MixtureError(f"a mixture is a list of sources {{path, weight, domain}}, got {data!r}")
        return cls([_source(i, x) for i, x in enumerate(data)])

    @classmethod
    def from_yaml(cls, path: str | os.PathLike) -> MixtureSpec:
        """From a YAML file holding a list of sources, or ``sources:`` and that list."""
        try:
            data = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError) as e:
            raise MixtureError(f"{path}: cannot read the mixture ({e})") from e
        try:
            return cls.from_config(data)
        except MixtureError as e:
            raise MixtureError(f"{path}: {e}") from e


def where(i: int, src: MixtureSource, named: bool = True) -> str:
    return f"mixture source {i} ({f'domain {src.name!r}, ' if named else ''}{src.path})"


def _source(i: int, x: Any) -> MixtureSource:
    if isinstance(x, MixtureSource):
        return x
    if isinstance(x, str | os.PathLike):
        return MixtureSource(str(x))
    if not isinstance(x, Mapping):
        raise MixtureError(f"mixture source {i}: expected {{path, weight, domain}} or a path, got {x!r}")
    names = [f.name for f in fields(MixtureSource)]
    unknown = [k for k in x if k not in names]
    if unknown:
        raise MixtureError(f"mixture source {i}: unknown field {unknown[0]!r}; fields: {names}")
    if "path" not in x:
        raise MixtureError(f"mixture source {i}: field 'path' is missing")
    return MixtureSource(**{k: str(v) if k == "path" and isinstance(v, os.PathLike) else v for k, v in x.items()})


@dataclass(frozen=True)
class Domain:
    """What a trainer needs of one source to build its action encoder: the action space and its statistics."""

    name: str
    index: int  # position in the spec
    root: str
    weight: float  # the rate of its batches (the weights normalised to sum 1)
    info: DatasetInfo

    @property
    def action_space(self) -> ActionSpace:
        return self.info.action_space

    @property
    def action_stats(self) -> dict[str, Any]:
        """``dataset.json``'s ``stats.actions``: per-dimension mean/std/min/max (continuous; the normalisation
        statistics) or counts/freq (discrete); empty for action-free video."""
        return dict(self.info.stats.get("actions") or {})


def open_sources(spec: MixtureSpec) -> list[DatasetInfo]:
    """Each source's ``dataset.json``, checked to share one batch stream (frame grid and storage kind, and for
    token shards the tokenizer): errors name the source and the field."""
    infos = []
    for i, src in enumerate(spec.sources):
        if not (Path(src.path) / DATASET_FILE).is_file():
            raise MixtureError(f"{where(i, src)}: field 'path': no {DATASET_FILE} in {src.path}; is it a wm-video "
                               "dataset folder (made by 'wm-video data ...')?")
        try:
            infos.append(load_dataset_info(src.path))
        except (SchemaError, OSError) as e:
            raise MixtureError(f"{where(i, src)}: {e}") from e
    first, src0 = infos[0], spec.sources[0]
    for i, (src, info) in enumerate(zip(spec.sources, infos, strict=True)):
        # one tokenizer: the same token fingerprint (kept by a fine-tune with its codebook frozen), else the same folder
        both = _tokens(info, "token_fingerprint") and _tokens(first, "token_fingerprint")
        same = "token_fingerprint" if both else "tokenizer"
        for name, value, want in (("frame_storage", _kind(info), _kind(first)),
                                  ("resolution", info.resolution, first.resolution),
                                  ("tokens.vocab_size", _tokens(info, "vocab_size"), _tokens(first, "vocab_size")),
                                  (f"tokens.{same}", _tokens(info, same), _tokens(first, same))):
            if value != want:
                raise MixtureError(f"{where(i, src)}: field {name!r} of its {DATASET_FILE} is {value!r}, but source 0 "
                                   f"({src0.path}) has {want!r}: batches of one stream need the same frame "
                                   "resolution and storage (frames or tokens of one tokenizer)")
    return infos


def _kind(info: DatasetInfo) -> str:
    return "tokens" if info.frame_storage == "tokens" else "frames"


def _tokens(info: DatasetInfo, key: str) -> Any:
    value = (info.tokens or {}).get(key)
    return os.path.normpath(value) if key == "tokenizer" and isinstance(value, str) else value


def draw_domains(weights: Sequence[float], seed: int, start: int, count: int) -> list[int]:
    """The sources of batches ``start .. start + count - 1``: each a pure function of ``(seed, batch index)``, the
    same on every rank and after any resume; a weight-0 source is never drawn."""
    active = [i for i, w in enumerate(weights) if w > 0]
    cum = list(itertools.accumulate(float(weights[i]) for i in active))
    out = []
    for b in range(start, start + count):
        u = random.Random(stable_seed(seed, b, 5)).random() * cum[-1]
        out.append(active[min(bisect.bisect_right(cum, u), len(active) - 1)])  # min: u rounding up to the total
    return out


class DomainMixLoader:
    """Iterable over batches of a domain mixture (see the module docstring), with exact resume.

    Args:
        sources: a :class:`MixtureSpec`, or what :meth:`MixtureSpec.from_config` takes.
        cfg: streaming options of every source's ClipLoader (``batch_size`` is per batch, whatever its domain).
        rank, world: this process's place among data-parallel ranks (default: from the environment).
        seed: seed of the domain draw (default: ``cfg.seed``, which also seeds every source's clip order).
        side: ``"all"`` reads every clip; ``"train"`` each source's training clips (its held-out split,
            :mod:`wm_video.data.split`, with ``val_fraction``: None for the recorded one).
        epoch_batches: batches per ``iter()`` (None: endless).
    """

    def __init__(self, sources: MixtureSpec | Mapping[str, Any] | Sequence[Any], cfg: LoaderConfig | None = None,
                 rank: int | None = None, world: int | None = None, seed: int | None = None,
                 side: Literal["all", "train"] = "all", val_fraction: float | None = None,
                 epoch_batches: int | None = None) -> None:
        self.spec = MixtureSpec.from_config(sources)
        self.cfg = cfg or LoaderConfig()
        self.seed = self.cfg.seed if seed is None else int(seed)
        if epoch_batches is not None and epoch_batches < 1:
            raise ValueError(f"epoch_batches must be >= 1 or None (endless), got {epoch_batches}")
        self.epoch_batches = epoch_batches
        infos = open_sources(self.spec)
        self.splits: list[Split] = []
        parts = [self._part(i, info, side, val_fraction) for i, info in enumerate(infos)]
        self.loaders = [ClipLoader(part, self.cfg, rank=rank, world=world) for part in parts]
        self.rank, self.world = self.loaders[0].rank, self.loaders[0].world
        self.weights = [float(src.weight) for src in self.spec.sources]
        total = sum(self.weights)
        self.domains: dict[str, Domain] = {
            src.name: Domain(src.name, i, str(src.path), w / total, info)
            for i, (src, w, info) in enumerate(zip(self.spec.sources, self.weights, infos, strict=True))}
        self.clip_len = min(info.clip_len for info in infos)
        self.batches = 0  # batches handed out so far: the index of the next one's draw
        self.lookahead = 0  # batches handed out that the consumer has not used yet
        self._iters: list[Iterator[dict[str, Any]] | None] = [None] * len(self.loaders)
        self._history: deque[dict[str, Any]] = deque([self._snapshot()], maxlen=8)  # state after each batch
        if not self.rank:
            for d in self.domains.values():
                log.info("mixture domain %r: weight %.3f, %s, %s", d.name, d.weight, d.root, d.action_space.to_dict())

    def _part(self, i: int, info: DatasetInfo, side: str, val_fraction: float | None) -> Part:
        src = self.spec.sources[i]
        if side == "all":
            return Part(str(src.path))
        if side != "train":
            raise ValueError(f"side must be 'all' or 'train', got {side!r} (held-out clips: heldout_loaders)")
        split = split_dataset(src.path, val_fraction, info=info)
        self.splits.append(split)
        if not split.train.shards:
            raise MixtureError(f"{where(i, src)}: nothing left to train on ({split.rule})")
        return split.train

    def draws(self, start: int, count: int) -> list[str]:
        """The domains of batches ``start .. start + count - 1`` (the same on every rank)."""
        return [self.spec.sources[i].name for i in draw_domains(self.weights, self.seed, start, count)]

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self._history = deque([self._snapshot()], maxlen=8)
        end = None if self.epoch_batches is None else (self.batches // self.epoch_batches + 1) * self.epoch_batches
        while end is None or self.batches < end:
            (i,) = draw_domains(self.weights, self.seed, self.batches, 1)
            batch = self._next_batch(i)
            self.batches += 1
            self._history.append(self._snapshot())
            yield batch
        self._history = deque([self._snapshot()], maxlen=8)  # whatever was handed out was used: the pass is over

    def _next_batch(self, i: int) -> dict[str, Any]:
        """Source ``i``'s next batch, starting its next epoch when one ends."""
        empty = 0
        while True:
            fresh = self._iters[i] is None and self.loaders[i].state_dict()["batches_in_epoch"] == 0
            if self._iters[i] is None:
                self._iters[i] = iter(self.loaders[i])
            batch = next(self._iters[i], None)
            if batch is not None:
                return self._tag(batch, i)
            self._iters[i] = None  # its epoch is over; the ClipLoader has moved to the next one
            empty += fresh
            if empty >= EMPTY_EPOCHS:
                src = self.spec.sources[i]
                raise MixtureError(
                    f"{where(i, src)}: {EMPTY_EPOCHS} epochs in a row gave rank {self.rank} of {self.world} no batch "
                    f"of {self.cfg.batch_size} clips ({len(self.loaders[i].stream.urls)} shards over {self.world} "
                    f"ranks x {max(self.cfg.num_workers, 1)} workers); set loader.resampled (with epoch_length), "
                    "a smaller batch_size or fewer workers, or write it in more shards")

    def _tag(self, batch: dict[str, Any], i: int) -> dict[str, Any]:
        for name in TIME_FIELDS:
            if name in batch and batch[name].shape[1] > self.clip_len:
                batch[name] = batch[name][:, :self.clip_len]
        batch["domain"] = self.spec.sources[i].name
        return batch

    def _snapshot(self) -> dict[str, Any]:
        return {"batches": self.batches, "seed": self.seed, "domains": self.spec.names,
                "weights": list(self.weights), "sources": [loader.state_dict() for loader in self.loaders]}

    def state_dict(self) -> dict[str, Any]:
        """The stream after the batches the consumer has used; plain values (``weights_only=True`` safe)."""
        back = min(self.lookahead, len(self._history) - 1)
        return dict(self._history[-1 - back])

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue from ``state``; the sources (by domain, in order) and the seed must be the same. Changed
        weights are taken (a schedule may change them): the draws from here on follow the new ones."""
        for key, now in (("domains", self.spec.names), ("seed", self.seed)):
            saved = state.get(key)
            if (list(saved) if isinstance(saved, list | tuple) else saved) != now:
                raise ValueError(f"mixture state does not match this loader ({key}: saved {saved!r} vs now {now!r}); "
                                 "exact resume needs the same values")
        if [float(w) for w in state.get("weights", [])] != self.weights:
            log.info("mixture weights changed on resume: %s -> %s", state.get("weights"), self.weights)
        for it in self._iters:
            if it is not None:
                it.close()  # its workers read ahead of the restored position
        self._iters = [None] * len(self.loaders)
        for loader, s in zip(self.loaders, state["sources"], strict=True):
            loader.load_state_dict(s)
        self.batches = int(state["batches"])
        self._history = deque([self._snapshot()], maxlen=8)


def heldout_loaders(sources: MixtureSpec | Mapping[str, Any] | Sequence[Any], cfg: LoaderConfig,
                    val_fraction: float | None = None, rank: int | None = None, world: int | None = None
                    ) -> dict[str, ClipLoader]:
    """Per domain, an ordered loader over its held-out clips (validation, one action space per loader); domains
    holding nothing out are left out, with a warning (the split's own)."""
    spec = MixtureSpec.from_config(sources)
    out = {}
    for src, info in zip(spec.sources, open_sources(spec), strict=True):
        split = split_dataset(src.path, val_fraction, info=info)
        if not split.heldout_clips:
            split.log(f"validation of domain {src.name!r}")
            continue
        val_cfg = replace(cfg, resampled=False, shuffle_buffer=0, drop_last=False,
                           num_workers=min(cfg.num_workers, len(split.heldout.shards)))
        out[src.name] = ClipLoader(split.heldout, val_cfg, rank=rank, world=world)
    return out
