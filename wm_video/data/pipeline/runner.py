"""Run the pipeline stages over a source: probe -> clip -> filter -> shard -> stats, each re-runnable.

Everything lives under the output folder::

    OUT/pipeline.json            settings (checked on every rerun) and the resolved frame rate
    OUT/manifest/probe.jsonl     every input: ok + metadata, or broken + reason
    OUT/manifest/clips.jsonl     every input: ok + clip windows and their features, or why not
    OUT/manifest/filter.jsonl    every input: ok + the fate of each clip, or why not
    OUT/work/<id>.frames|.npz    resampled, resized frames (and per-frame arrays) of each ok input
    OUT/shard-XXXXXX.tar(.json)  the clips, by the existing ShardWriter
    OUT/dataset.json             merged statistics, quantiles and counts
    OUT/manifest.jsonl           every input's final fate (the join of the three stage files)

A stage skips what its manifest already records (the clip stage also checks the work files are whole), so a
rerun after a crash or a kill continues, and a rerun of finished work rewrites nothing. Probe and clip run
one input per task in ``workers`` spawned processes; shard runs one shard per task.
"""

from __future__ import annotations

import json
import logging
import multiprocessing as mp
import traceback
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import asdict
from pathlib import Path
from typing import Any

from wm_video.data.pipeline.clip import WORK_DIR, work_complete
from wm_video.data.pipeline.config import RUN_FIELDS, PipelineConfig
from wm_video.data.pipeline.filter import filter_records
from wm_video.data.pipeline.manifest import MANIFEST_DIR, Manifest, write_if_changed
from wm_video.data.pipeline.shard import check_existing, plan_shards, shard_capacity, write_shard
from wm_video.data.pipeline.source import Source
from wm_video.data.pipeline.stats import write_stats
from wm_video.data.schema import DatasetInfo, SchemaError
from wm_video.data.writer import ensure_writable_dir, read_sidecar, shard_name
from wm_video.utils import progress
from wm_video.utils.atomic import clean_stale_temporaries

log = logging.getLogger(__name__)
STAGES = ("probe", "clip", "filter", "shard", "stats")
SETTINGS_FILE = "pipeline.json"


class Pipeline:
    """The stages of one run over ``source`` into ``out``; :func:`run_pipeline` is the usual entry."""

    def __init__(self, source: Source, cfg: PipelineConfig, out: str | Path, show_progress: bool | None = None):
        cfg.validate()
        source.validate()
        self.source, self.cfg, self.show = source, cfg, show_progress
        self.out = ensure_writable_dir(out)
        self.work = self.out / WORK_DIR
        self.settings = {**{k: v for k, v in asdict(cfg).items() if k not in RUN_FIELDS},
                         "source": source.settings()}
        self.state = self._check_settings()
        self._inputs: list[dict[str, Any]] | None = None
        self._pool: ProcessPoolExecutor | None = None

    # -- settings ------------------------------------------------------------------------------------------
    def _check_settings(self) -> dict[str, Any]:
        path = self.out / SETTINGS_FILE
        state = {"settings": self.settings, "fps": None}
        if path.exists():
            saved = json.loads(path.read_text())
            old = saved.get("settings", {})
            diff = sorted(k for k in {*old, *self.settings} if old.get(k) != self.settings.get(k))
            if diff:
                detail = "; ".join(f"{k}: {old.get(k)!r} there vs {self.settings.get(k)!r} now" for k in diff)
                raise SchemaError(f"{self.out} holds a pipeline run with other settings ({detail}); use the same "
                                  "settings to continue it, or another --out")
            state["fps"] = saved.get("fps")
        self._save_state(state)
        return state

    def _save_state(self, state: dict[str, Any]) -> None:
        write_if_changed(self.out / SETTINGS_FILE, (json.dumps(state, indent=2) + "\n").encode())

    def _manifest(self, stage: str) -> Manifest:
        return Manifest(self.out / MANIFEST_DIR / f"{stage}.jsonl")

    def _require(self, stage: str, before: str) -> Manifest:
        m = self._manifest(stage)
        if not m.path.exists():
            raise FileNotFoundError(f"{m.path} not found: run the {stage} stage before the {before} stage")
        return m

    def inputs(self) -> list[dict[str, Any]]:
        if self._inputs is None:
            self._inputs = self.source.inputs()
            ids = [r["id"] for r in self._inputs]
            if len(set(ids)) != len(ids):
                raise SchemaError(f"{self.source.kind} source lists the same input twice")
        return self._inputs

    @property
    def fps(self) -> float:
        fps = self.cfg.fps or self.state["fps"]
        if fps is None:
            raise FileNotFoundError(f"{self.out / SETTINGS_FILE} has no frame rate yet: run the clip stage first")
        return float(fps)

    # -- stages --------------------------------------------------------------------------------------------
    def probe(self) -> Manifest:
        refs = self.inputs()
        m = self._manifest("probe")
        m.set_order(r["id"] for r in refs)
        todo = [(r["input"], (r,)) for r in refs if r["id"] not in m]
        try:
            self._map("probe", todo, lambda args, result: m.add(_stamp(args[0], result, "probe")), len(refs))
        finally:
            m.save()
        return m

    def clip(self) -> Manifest:
        refs = {r["id"]: r for r in self.inputs()}
        probes = self._require("probe", "clip")
        if self.state["fps"] is None and self.cfg.fps is None:  # resolved once, then kept for every rerun
            self.state["fps"] = self.source.default_fps([p for p in probes.records.values() if p["id"] in refs])
            self._save_state(self.state)
            log.info("output frame rate: %g fps", self.state["fps"])
        params = self.cfg.params(self.fps)
        m = self._manifest("clips")
        m.set_order(refs)
        todo = []
        for key, ref in refs.items():
            p = probes.get(key)
            if p is None:
                continue  # listed after the probe stage ran: the next probe run picks it up
            if p["status"] != "ok":
                m.records[key] = p  # carried over: the manifest of every stage accounts for every input
                continue
            rec = m.get(key)
            if rec is None or (rec["status"] == "ok" and not work_complete(self.work, key, rec["frames"], params.size,
                                                                           self.source.has_arrays)):
                todo.append((ref["input"], (ref, p, params, str(self.work))))
        self.work.mkdir(exist_ok=True)
        # temporary files a killed run left for the inputs about to be redone
        clean_stale_temporaries(self.work, prefixes=[f"{ref['id']}." for _, (ref, *_rest) in todo])
        try:
            self._map("clip", todo, lambda args, result: m.add(_stamp(args[0], result, "clip")),
                      sum(1 for k in refs if k in probes))
        finally:
            m.save()
        return m

    def filter(self) -> Manifest:
        clips = self._require("clips", "filter")
        ids = [r["id"] for r in self.inputs()]
        clips.set_order(ids)
        wanted = set(ids)
        recs = [r for r in clips.ordered() if r["id"] in wanted]
        m = self._manifest("filter")
        m.records = {r["id"]: r for r in filter_records(recs, self.cfg.filter_config(), self.cfg.clip_len)}
        m.set_order(r["id"] for r in recs)
        m.save()
        plan, _ = self._plan()
        log.info("filter: %d clips kept of %d: %d shard(s) (at most %d clips each)", sum(len(s) for s in plan),
                 sum(len(r.get("clips", ())) for r in recs), len(plan), self._capacity())
        return m

    def _plan(self) -> tuple[list[list], list[dict[str, Any]]]:
        filt = self._require("filter", "shard")
        clips = self._require("clips", "shard")
        frecs = list(filt.records.values())  # the order of the file: input order
        return plan_shards(clips.records, frecs, self._capacity()), frecs

    def _capacity(self) -> int:
        array_bytes = 64 if self.source.has_arrays else 0  # a few floats per frame; a bound is enough
        return shard_capacity(self.cfg.params(self.fps), self.cfg.clips_per_shard, self.cfg.shard_bytes, array_bytes)

    def shard(self) -> list[list]:
        plan, _ = self._plan()
        first, stop = self.cfg.shard_range or (0, len(plan))
        ids = range(max(first, 0), min(stop, len(plan)))
        # leftovers of a killed run, for the shards this invocation makes (not other tasks')
        clean_stale_temporaries(self.out, names=[shard_name(k) for k in ids])
        todo = [k for k in ids if not check_existing(self.out, k, plan[k])]
        params = self.cfg.params(self.fps)
        tasks = [(shard_name(k), (self.source, params, self.cfg.storage, self.cfg.crf, str(self.out), k, plan[k]))
                 for k in todo]
        self._map("shard", tasks, lambda args, rec: None, len(ids), fn=write_shard)
        return plan

    def stats(self) -> DatasetInfo | None:
        plan, frecs = self._plan()
        names = [shard_name(k) for k in range(len(plan))]
        missing = [n for n in names if read_sidecar(self.out / n) is None]
        if missing:
            log.info("%d of %d shards not written yet (%s...); dataset.json is written when all are", len(missing),
                     len(names), missing[0])
            return None
        if not plan:
            raise SchemaError(f"{self.out}: no clip survived the pipeline; see {self.out / 'manifest'} for why")
        extra = sorted(p.name for p in self.out.glob("shard-*.tar") if p.name not in names)
        if extra:
            log.warning("%s holds shards beyond the current plan (%s): they are not part of dataset.json", self.out,
                        ", ".join(extra))
        settings = {**self.settings, "fps": self.fps}
        return write_stats(self.out, self.source, self.cfg.params(self.fps), self.cfg.storage, frecs, plan, names,
                           settings)

    # -- workers -------------------------------------------------------------------------------------------
    def _workers(self) -> ProcessPoolExecutor:
        """One pool for every stage of the run (starting a process and importing PyAV takes about 0.5 s).

        Spawned, not forked: PyAV and FFmpeg keep threads and state that must not be copied into a child.
        """
        if self._pool is None:
            self._pool = ProcessPoolExecutor(self.cfg.workers, mp_context=mp.get_context("spawn"),
                                             initializer=_init_worker)
        return self._pool

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def _map(self, stage: str, tasks: list[tuple[str, tuple]], done: Callable[[tuple, Any], None], total: int,
             fn: Callable[..., Any] | None = None) -> None:
        """Run ``fn(*args)`` for each ``(label, args)`` task (default: the source's ``stage`` method, guarded) and
        call ``done(args, result)`` in this process, in order of completion."""
        if fn is None:
            fn, tasks = _guarded, [(label, (self.source, stage, *args)) for label, args in tasks]
            unwrap = 2  # done() gets the stage method's own arguments
        else:
            unwrap = 0
        unit = "shard" if stage == "shard" else ("file" if self.source.kind == "videos" else "episode")
        bar = progress(total=total, initial=total - len(tasks), desc=f"{stage} {self.source.kind}", unit=unit,
                       enable=self.show)
        try:
            if self.cfg.workers <= 1 or len(tasks) <= 1:
                results: Iterable[tuple[tuple, Any]] = ((args, fn(*args)) for _, args in tasks)
            else:
                results = _parallel(self._workers(), fn, tasks, self.cfg.workers)
            for args, result in results:
                done(args[unwrap:], result)
                bar.update(1)
        finally:
            bar.close()


def _stamp(ref: dict[str, Any], result: dict[str, Any], stage: str) -> dict[str, Any]:
    """The manifest record of ``ref``: the stage's result, and the stage that decided a failure."""
    return {"id": ref["id"], "input": ref["input"], **result, **({"stage": stage} if result["status"] != "ok" else {})}


def _guarded(source: Source, stage: str, *args: Any) -> dict[str, Any]:
    """A source's per-input stage; an unexpected exception marks that input broken instead of ending the run."""
    try:
        return getattr(source, stage)(*args)
    except Exception as e:  # a bug or an unforeseen input: keep going, but say what happened
        logging.getLogger(__name__).warning("%s of %s failed:\n%s", stage, args[0].get("input"),
                                            traceback.format_exc())
        return {"status": "broken", "code": "error", "reason": f"{stage} failed: {type(e).__name__}: {e}"}


def _init_worker() -> None:
    logging.basicConfig(level=logging.WARNING)


def _parallel(pool: ProcessPoolExecutor, fn: Callable[..., Any], tasks: list[tuple[str, tuple]],
              workers: int) -> Iterable[tuple[tuple, Any]]:
    """``(args, fn(*args))`` for ``(label, args)`` tasks in completion order, at most ``4 * workers`` in flight.

    A worker that dies (a crash inside a decoder) ends the run with the inputs that were in flight named; what
    finished is kept (the caller saves the manifest).
    """
    it = iter(tasks)
    pending: dict[Any, tuple[str, tuple]] = {}

    def submit() -> None:
        nxt = next(it, None)
        if nxt is not None:
            pending[pool.submit(fn, *nxt[1])] = nxt

    for _ in range(4 * workers):
        submit()
    while pending:
        finished, _ = wait(pending, return_when=FIRST_COMPLETED)
        for fut in finished:
            label, args = pending.pop(fut)
            try:
                result = fut.result()
            except BrokenProcessPool as e:
                names = [label, *(t[0] for t in pending.values())]
                raise RuntimeError(f"a worker process died while working on one of {names[:8]}; finished work is "
                                   "saved: rerun to continue (--workers 1 shows which input crashes)") from e
            yield args, result
            submit()


def run_pipeline(source: Source, cfg: PipelineConfig, out: str | Path, stages: Iterable[str] | None = None,
                 show_progress: bool | None = None) -> DatasetInfo | None:
    """Run ``stages`` (default: all, in order) of ``source`` into ``out``; returns the dataset info when the
    stats stage wrote ``dataset.json``, else None."""
    stages = list(stages or STAGES)
    unknown = [s for s in stages if s not in STAGES]
    if unknown:
        raise ValueError(f"unknown stage(s) {unknown}; stages are {list(STAGES)}")
    pipe = Pipeline(source, cfg, out, show_progress)
    info = None
    try:
        for stage in STAGES:
            if stage in stages:
                result = getattr(pipe, stage)()
                if stage == "stats":
                    info = result
    finally:
        pipe.close()
    return info
