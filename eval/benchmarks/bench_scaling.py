"""Scale-out on this machine: DDP samples/s at 1 and 2 processes, and the time a preemption costs.

    python eval/benchmarks/bench_scaling.py                       # both parts, results on stdout as JSON
    python eval/benchmarks/bench_scaling.py --steps 60 --out /tmp/bench_scaling

Scaling: ``torchrun --nproc-per-node=P`` (P = 1, 2) runs the real training set-up (``build_trainer`` with
``trainer.strategy=ddp``: gloo on CPU, one thread per process) on the tokenizer's ``small`` preset at 64x64 from
a synthetic shard dataset, a fixed batch per process (weak scaling). Rank 0 times optimizer steps ``--warmup`` to
``--steps``; samples/s = steps x batch x P / seconds; efficiency = samples/s(P) / (P x samples/s(1)).

Preemption: one process trains the ``debug`` tokenizer; the preemption signal (SIGUSR1) arrives after step
``--steps // 2``; the run checkpoints at the next step boundary and stops; a second run resumes. Reported: the
step of the checkpoint, the step the resumed run starts from (steps redone = their difference), the time from
the signal to the process stopping, and the resumed run's start-up time to its first step.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))


def _trainer_overrides(steps: int, run: Path) -> list[str]:
    return [f"trainer.max_steps={steps}", "trainer.logger=none", "trainer.progress=log", f"trainer.run_dir={run}",
            f"trainer.checkpoint_every_n_steps={steps}", "trainer.log_every_n_steps=1000", "val_fraction=0",
            "loader.resampled=true", "loader.epoch_length=100000", "loader.num_workers=0"]


def scaling_worker(data: str, steps: int, warmup: int, batch: int, out: str) -> None:
    """One DDP rank (under torchrun): time optimizer steps ``warmup``..``steps`` on rank 0."""
    import lightning as L

    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config
    from wm_video.training import build_trainer
    from wm_video.training.run import make_loaders
    from wm_video.training.tokenizer_module import TokenizerModule
    from wm_video.utils.atomic import atomic_write_bytes

    cfg = load_config("train_tokenizer", preset_name="small", overrides=[
        *_trainer_overrides(steps, Path(out) / "run"), "trainer.accelerator=cpu", "trainer.strategy=ddp",
        "trainer.precision=32-true", f"loader.batch_size={batch}", "trainer.devices=auto"])
    times: dict[int, float] = {}

    class Clock(L.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, b, i):
            times[trainer.global_step] = time.perf_counter()

    trainer = build_trainer(cfg.trainer, callbacks=[Clock()], limit_val_batches=0)
    rank = trainer.node_rank * trainer.num_devices + trainer.local_rank
    train, _, _ = make_loaders(data, cfg.loader, 0.0, rank, trainer.world_size)
    trainer.fit(TokenizerModule(cfg), train_dataloaders=train)
    if trainer.is_global_zero:
        dt = times[steps] - times[warmup]
        sps = (steps - warmup) * batch * trainer.world_size / dt
        atomic_write_bytes(Path(out, f"scaling_{trainer.world_size}.json"), json.dumps(
            {"processes": trainer.world_size, "batch_per_process": batch, "timed_steps": steps - warmup,
             "seconds": dt, "samples_per_s": sps}).encode())


def scaling(data: Path, out: Path, steps: int, warmup: int, batch: int) -> dict:
    rows = {}
    for procs in (1, 2):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
        env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(ROOT))
        subprocess.run([sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={procs}",
                        f"--master-port={port}", __file__, "scaling-worker", str(data), str(steps), str(warmup),
                        str(batch), str(out / f"p{procs}")], env=env, check=True)
        rows[procs] = json.loads((out / f"p{procs}" / f"scaling_{procs}.json").read_text())
    rows[2]["efficiency"] = rows[2]["samples_per_s"] / (2 * rows[1]["samples_per_s"])
    return {"scaling": [rows[1], rows[2]]}


def preemption(data: Path, out: Path, steps: int) -> dict:
    import lightning as L
    import torch

    import wm_video.registry  # noqa: F401  (registers every config kind)
    from wm_video.config import load_config
    from wm_video.training.run import fit_and_export
    from wm_video.training.tokenizer_module import TokenizerModule

    at = steps // 2
    marks: dict[str, float] = {}
    first_step: list[int] = []

    class Probe(L.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, i):
            if not first_step:
                first_step.append(trainer.global_step)
                marks["first_step"] = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, i):
            if trainer.global_step == at and "signal" not in marks:
                marks["signal"] = time.perf_counter()
                os.kill(os.getpid(), signal.SIGUSR1)

    def run() -> None:
        overrides = [*_trainer_overrides(steps, out / "preempt"), "trainer.checkpoint_every_n_steps=10"]
        cfg = load_config("train_tokenizer", preset_name="debug", overrides=overrides)
        torch.manual_seed(0)
        fit_and_export(TokenizerModule(cfg), cfg.trainer, data, cfg.loader, 0.0, 0, out / "preempt", "tokenizer",
                       callbacks=[Probe()])

    try:
        run()
    except SystemExit as e:
        marks["stopped"] = time.perf_counter()
        code = e.code
    saved = torch.load(out / "preempt" / "checkpoints" / "last.ckpt", weights_only=True)["global_step"]
    first_step.clear()
    t0 = time.perf_counter()
    run()
    return {"preemption": {"signal_after_step": at, "exit_status": code, "checkpoint_step": saved,
                           "resumed_from_step": first_step[0], "steps_redone": saved - first_step[0],
                           "signal_to_stopped_s": marks["stopped"] - marks["signal"],
                           "resume_startup_to_first_step_s": marks["first_step"] - t0}}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=40)
    p.add_argument("--warmup", type=int, default=10)
    p.add_argument("--batch", type=int, default=8, help="clips per process per step (64x64, 4 frames each)")
    p.add_argument("--out", default=None)
    args = p.parse_args()
    from conftest import write_dataset

    from wm_video.utils.machine import machine_record

    out = Path(args.out or tempfile.mkdtemp(prefix="bench_scaling_"))
    write_dataset(out / "ds64", shards=4, clips_per_shard=16, size=64)
    write_dataset(out / "ds32", shards=4, clips_per_shard=16, size=32)
    result = machine_record(threads=False, argv=sys.argv)  # the timed work runs in worker processes
    result |= scaling(out / "ds64", out, args.steps, args.warmup, args.batch)
    result |= preemption(out / "ds32", out, args.steps)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "scaling-worker":
        scaling_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), int(sys.argv[5]), sys.argv[6])
    else:
        main()
