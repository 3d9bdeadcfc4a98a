"""The project's sbatch scripts on a real one-node SLURM cluster: the collection array; pretraining as 2 tasks doing
DDP over gloo (the script's CPU override); a preemption signal -> checkpoint -> requeue -> resume cycle that ends
with the uninterrupted run's weights."""

from __future__ import annotations

import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
from slurm_cluster import Cluster, missing

from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths

ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(missing() is not None, reason=missing() or "")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = Cluster(tmp_path_factory.mktemp("slurm"))
    c.start()
    yield c
    c.stop()


def test_collect_array_job_builds_one_dataset(cluster, tmp_path):
    out = tmp_path / "data"
    (tmp_path / "logs").mkdir()
    # CPU override of the script's #SBATCH resources (command-line options beat #SBATCH lines).
    job = cluster.sbatch("--array=0-1", "--cpus-per-task=1", "--mem=1000", str(ROOT / "slurm/collect_array.sbatch"),
                         str(ROOT / "configs/data/pong_random.yaml"), str(out), "4", "1",
                         "episodes_per_shard=2", "max_episode_steps=30", "size=32", "clip_len=8",
                         cwd=tmp_path, env={"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin"})
    cluster.wait(job, timeout=240)
    logs = sorted((tmp_path / "logs").glob("wm-collect-*.out"))
    assert len(logs) == 2, cluster.log_tail()
    text = "\n".join(p.read_text() for p in logs)
    assert set(cluster.job_states(job)) == {"COMPLETED"}, text
    info = load_dataset_info(out)  # written by whichever array task completed the last shard
    assert info.num_episodes == 4 and len(info.shards) == 2
    assert sum(1 for url in shard_paths(out, info) for _ in iter_clips(url)) == info.num_samples


# ---- training: slurm/pretrain.sbatch with its CPU override, 2 tasks doing DDP over gloo -------------------------

STEPS = 60
TRAIN_ARGS = ["--preset", "debug", f"trainer.max_steps={STEPS}", "trainer.checkpoint_every_n_steps=20",
              "trainer.logger=none", "trainer.log_every_n_steps=1", "val_fraction=0", "loader.resampled=true",
              "loader.epoch_length=64"]
# Command-line options beat the script's #SBATCH lines: one node, two CPU tasks, no GPUs.
CPU_SBATCH = ["--nodes=1", "--ntasks-per-node=2", "--gpus-per-node=0", "--cpus-per-task=1", "--mem=4000",
              "--time=10"]


def _submit_training(cluster, tmp_path, name: str) -> tuple[str, Path]:
    from conftest import write_dataset

    if not (tmp_path / "ds").exists():
        write_dataset(tmp_path / "ds", shards=4, clips_per_shard=8, size=32)
    (tmp_path / "logs").mkdir(exist_ok=True)
    env = {"PATH": f"{Path(sys.executable).parent}:/usr/bin:/bin", "WM_SLURM_CPU": "1", "OMP_NUM_THREADS": "1"}
    job = cluster.sbatch(f"--job-name={name}", *CPU_SBATCH, str(ROOT / "slurm/pretrain.sbatch"), "tokenizer",
                         str(tmp_path / "ds"), str(tmp_path / name), *TRAIN_ARGS, cwd=tmp_path, env=env)
    return job, tmp_path / "logs" / f"{name}-{job}.out"


@pytest.fixture(scope="module")
def uninterrupted(cluster, tmp_path_factory):
    """The reference run: 2 tasks, DDP over gloo, start to finish."""
    tmp = tmp_path_factory.mktemp("ddp")
    job, log = _submit_training(cluster, tmp, "uninterrupted")
    cluster.wait(job, timeout=240)
    return job, log, tmp / "uninterrupted"


def _last_checkpoint(run: Path) -> dict:
    import torch

    return torch.load(run / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)


def test_pretrain_script_runs_ddp_over_gloo_on_two_tasks(cluster, uninterrupted):
    import json

    from wm_video.models.tokenizer import VQTokenizer

    job, log, run = uninterrupted
    text = log.read_text() if log.exists() else ""
    assert set(cluster.job_states(job)) == {"COMPLETED"}, text[-3000:] + cluster.log_tail()
    assert "started with 2 processes" in text and "backend gloo" in text, text[-3000:]
    last = _last_checkpoint(run)
    assert last["global_step"] == STEPS
    states = [json.loads(s)[0] for s in last["rank_states"]]  # each rank's own stream position
    assert [(s["rank"], s["world"]) for s in states] == [(0, 2), (1, 2)]
    VQTokenizer.from_pretrained(run / "export")


def _node_state(cluster) -> str:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=cluster.env, capture_output=True, text=True)
    return out.stdout.strip().lower()


def _wait_for(predicate, timeout: float, what: str):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.2)
    raise TimeoutError(what)


def test_preempted_job_requeues_resumes_and_matches_the_uninterrupted_run(cluster, uninterrupted, tmp_path):
    import torch

    from wm_video.models.tokenizer import VQTokenizer

    _, _, reference = uninterrupted
    job, log = _submit_training(cluster, tmp_path, "preempted")
    read = lambda: log.read_text() if log.exists() else ""  # noqa: E731
    _wait_for(lambda: re.search(r"step (\d+)/", read()) and int(re.findall(r"step (\d+)/", read())[-1]) >= 5,
              180, f"training never reached step 5: {read()[-2000:]}")
    # What a preemption or `--signal=SIGUSR1@120` before the time limit does: signal every task of the job.
    subprocess.run(["scancel", "--signal=USR1", job], env=cluster.env, check=True)
    _wait_for(lambda: "JobState=PENDING" in _show(cluster, job), 120,
              f"job was not requeued: {_show(cluster, job)} {read()[-2000:]}")
    # slurmd refuses a launch whose credential is not newer than the killed attempt's revocation ("Job credential
    # revoked": the job then ends FAILED, never having run again); timestamps are in seconds, so a release within
    # the same second loses that race. Let the node finish the killed attempt, and a second pass, first.
    _wait_for(lambda: _node_state(cluster) == "idle", 120, f"node never came back to idle: {cluster.log_tail()}")
    time.sleep(2)
    # slurmctld holds a requeued job back (Reason=BeginTime) for minutes; release it now.
    subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], env=cluster.env, check=True)
    cluster.wait(job, timeout=240)
    text = read()
    assert set(cluster.job_states(job)) == {"COMPLETED"}, text[-3000:]
    assert "Restarts=1" in _show(cluster, job) and "restart 1" in text
    saved = int(re.search(r"preempted: saved \S+ at step (\d+)", text).group(1))
    resumed = int(re.search(r"resuming from \S+last\.ckpt \(step (\d+)\)", text).group(1))
    assert 0 < saved < STEPS and resumed == saved  # no step redone after the resume
    ours, theirs = _last_checkpoint(tmp_path / "preempted"), _last_checkpoint(reference)
    assert ours["global_step"] == theirs["global_step"] == STEPS
    assert ours["rank_states"] == theirs["rank_states"]  # same samples seen, rank by rank
    a = VQTokenizer.from_pretrained(reference / "export").state_dict()
    b = VQTokenizer.from_pretrained(tmp_path / "preempted" / "export").state_dict()
    bad = [k for k in a if not torch.allclose(a[k], b[k], atol=1e-5)]
    assert not bad, f"weights differ from the uninterrupted run: {bad[:5]}"


def _show(cluster, job: str) -> str:
    return subprocess.run(["scontrol", "show", "job", job], env=cluster.env, capture_output=True, text=True).stdout
