"""The project's sbatch scripts on a real one-node SLURM cluster."""

from __future__ import annotations

import sys
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
