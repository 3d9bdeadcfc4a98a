"""Multi-node rendezvous on loopback: two torchrun node agents (``--nnodes=2``, one process each) train the debug
tokenizer together through the real ``wm-video train`` command, as two machines of a cluster would."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import torch
from conftest import write_dataset

from wm_video.models.tokenizer import VQTokenizer

STEPS = 12


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _agents(tmp_path, run: str, nodes: int, per_node: int) -> list[str]:
    """Start ``nodes`` torchrun agents on loopback, ``per_node`` processes each, training into ``run``."""
    port = _free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}  # torchrun, not SLURM, launches
    env.update(OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    agents = []
    for node in range(nodes):
        cmd = [sys.executable, "-m", "torch.distributed.run", f"--nnodes={nodes}", f"--nproc-per-node={per_node}",
               f"--node-rank={node}", "--master-addr=127.0.0.1", f"--master-port={port}", "-m", "wm_video",
               "train", "tokenizer", "--data", str(tmp_path / "ds"), "--out", str(tmp_path / run), "--preset",
               "debug", f"trainer.num_nodes={nodes}", f"trainer.devices={per_node}", "trainer.strategy=ddp",
               f"trainer.max_steps={STEPS}", "trainer.logger=none", "val_fraction=0", "loader.resampled=true",
               "loader.epoch_length=64"]
        agents.append(subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True))
    outs = [a.communicate(timeout=240)[0] for a in agents]
    assert [a.returncode for a in agents] == [0] * nodes, "\n\n".join(o[-3000:] for o in outs)
    return outs


def test_two_node_agents_rendezvous_and_train_together(tmp_path):
    write_dataset(tmp_path / "ds", shards=4, clips_per_shard=8, size=32)
    outs = _agents(tmp_path, "two_nodes", nodes=2, per_node=1)
    assert "started with 2 processes" in outs[0], outs[0][-3000:]
    last = torch.load(tmp_path / "two_nodes" / "checkpoints" / "last.ckpt", map_location="cpu", weights_only=True)
    assert last["global_step"] == STEPS
    states = [json.loads(s)[0] for s in last["rank_states"]]
    assert [(s["rank"], s["world"]) for s in states] == [(0, 2), (1, 2)]  # one rank per node, one world
    # each node read its own share of the stream: STEPS batches of 2 clips each, neither more nor less
    assert [s["batches_in_epoch"] for s in states] == [STEPS, STEPS]
    # and together they trained exactly what one node with two processes trains
    _agents(tmp_path, "one_node", nodes=1, per_node=2)
    a = VQTokenizer.from_pretrained(tmp_path / "two_nodes" / "export").state_dict()
    b = VQTokenizer.from_pretrained(tmp_path / "one_node" / "export").state_dict()
    bad = [k for k in a if not torch.allclose(a[k], b[k], atol=1e-6)]
    assert not bad, f"two nodes x 1 differs from one node x 2: {bad[:5]}"
