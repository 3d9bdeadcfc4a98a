"""Step budgets and quality gates (issue 18, parts 4 and 5): every `train` verb ends with a summary and gates that
name a broken part; a step-budgeted run gives the same weights on an idle or a busy machine; a time cap that cuts a
run short says so; tokenize warns about a tokenizer from another domain; a failed head's captions are left out."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import write_dataset, write_token_dataset
from test_decoder import make_tokenizer

from wm_video.cli import main
from wm_video.config import load_config
from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import ActionSpace, Clip, ClipMeta
from wm_video.data.tokenize import tokenize_dataset
from wm_video.data.tokenizer_fit import report_token_dataset_fit
from wm_video.data.writer import ShardWriter, finalize_dataset
from wm_video.utils.video_io import prediction_captions
from wm_video.world_model import WorldModel

GATE = "QUALITY GATE FAILED:"
PALETTE = np.array([[255, 255, 255], [220, 40, 40], [40, 40, 220], [40, 180, 40], [0, 0, 0], [240, 200, 40]], np.uint8)
# Fast tokenizer runs: a resampled stream (no epoch boundary, so no validation run per step), no mid-run
# checkpoints, no TensorBoard.
FAST = ["loader.resampled=true", "loader.epoch_length=100000", "loader.batch_size=8", "trainer.val_check_interval=1000",
        "trainer.checkpoint_every_n_steps=1000", "trainer.logger=none"]


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


def write_colour_dataset(root: Path, shards: int = 4, clips: int = 6, t: int = 4, size: int = 16) -> None:
    """Trivially simple video: every frame one flat colour of a 6-colour palette (a tokenizer learns it in ~100
    steps)."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    paths = []
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, ActionSpace("none"), "raw") as w:
            for i in range(clips):
                frames = np.broadcast_to(PALETTE[rng.integers(0, len(PALETTE), t)][:, None, None], (t, size, size, 3))
                meta = ClipMeta(episode_id=f"ep{s}{i}", clip_start=0, num_frames=t, fps=15.0, source="test", fields=[])
                w.write(Clip(frames.copy(), meta, None, None, None))
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[size, size], fps=15.0, clip_len=t, storage="raw",
                     action_space=ActionSpace("none"), source={"kind": "test"})


def train_tokenizer(data: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["train", "tokenizer", "--preset", "debug", "--data", str(data), "--out", str(out), "--max-steps",
                 str(steps), "model.resolution=16", "val_fraction=0.25", *FAST, *extra])


def read_json(path: Path) -> dict:
    return json.loads(path.read_text())


def gate_warnings(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING and r.getMessage().startswith(GATE)]


@pytest.fixture(scope="module")
def colours(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("quality") / "colours"
    write_colour_dataset(root)
    return root


@pytest.fixture(scope="module")
def good_tokenizer(colours, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("quality") / "good"
    assert train_tokenizer(colours, out, 200) == 0  # about 10 s
    return out


def test_gates_fire_on_a_tokenizer_trained_for_3_steps(colours, tmp_path, caplog, capsys):
    caplog.set_level(logging.INFO)
    assert train_tokenizer(colours, tmp_path / "run", 3) == 0
    summary = read_json(tmp_path / "run" / "train_summary.json")
    assert (summary["steps_done"], summary["max_steps"], summary["stop_reason"]) == (3, 3, "step budget")
    quality = read_json(tmp_path / "run" / "export" / "quality.json")
    assert quality["passed"] is False and quality["gates"] == summary["gates"]
    psnr = quality["gates"]["psnr_db"]
    assert psnr["passed"] is False and psnr["value"] < 20 == psnr["baseline"]
    assert any(m.startswith(f"{GATE} tokenizer psnr_db") for m in gate_warnings(caplog))
    printed = capsys.readouterr().out
    assert "steps: 3 of 3 planned; stopped by: step budget" in printed and "FAILED" in printed


def test_gates_stay_quiet_on_a_good_tokenizer(good_tokenizer):
    summary = read_json(good_tokenizer / "train_summary.json")
    assert (summary["steps_done"], summary["max_steps"], summary["stop_reason"]) == (200, 200, "step budget")
    quality = read_json(good_tokenizer / "export" / "quality.json")
    assert quality["passed"] is True
    assert quality["metrics"]["psnr_db"] > 20 and quality["metrics"]["codebook_usage"] > 0.1
    assert {name for name, g in quality["gates"].items() if g["passed"]} == {"psnr_db", "codebook_usage"}


def test_tokenize_and_finetune_start_warn_about_a_tokenizer_from_another_domain(good_tokenizer, colours, tmp_path,
                                                                                   caplog):
    export = good_tokenizer / "export"
    heldout = read_json(export / "quality.json")["metrics"]["psnr_db"]
    caplog.set_level(logging.INFO)
    info = tokenize_dataset(export, colours, tmp_path / "own", show_progress=False)  # its own domain: quiet
    assert info.tokens["fit"]["passed"] is True and info.tokens["fit"]["tokenizer_heldout_psnr_db"] == heldout
    assert not gate_warnings(caplog)
    write_dataset(tmp_path / "noise", shards=2, clips_per_shard=2, t=4, size=16, kind="none")  # random pixels
    info = tokenize_dataset(export, tmp_path / "noise", tmp_path / "noise_tokens", show_progress=False)
    fit = info.tokens["fit"]
    assert fit["passed"] is False and fit["psnr_db"] < heldout - 5
    assert any("another domain" in m for m in gate_warnings(caplog))
    # the start of a fine-tune on those tokens says it again: from the record, or measured when there is none
    caplog.clear()
    assert report_token_dataset_fit(load_dataset_info(tmp_path / "noise_tokens"), "tokens")["passed"] is False
    index = read_json(tmp_path / "noise_tokens" / "dataset.json")
    del index["tokens"]["fit"]
    (tmp_path / "noise_tokens" / "dataset.json").write_text(json.dumps(index))
    again = report_token_dataset_fit(load_dataset_info(tmp_path / "noise_tokens"), "tokens")
    assert again["passed"] is False and again["psnr_db"] == pytest.approx(fit["psnr_db"], abs=0.01)
    assert len(gate_warnings(caplog)) == 2


def test_a_time_cap_that_cuts_the_run_short_says_so(colours, tmp_path, caplog):
    caplog.set_level(logging.INFO)
    assert train_tokenizer(colours, tmp_path / "run", 100_000, "trainer.max_minutes=0.001") == 0
    summary = read_json(tmp_path / "run" / "train_summary.json")
    assert summary["stop_reason"] == "time cap" and 0 < summary["steps_done"] < 100_000
    assert summary["max_minutes"] == 0.001 and summary["capped_seconds"] >= 0.06
    cut = [r.getMessage() for r in caplog.records if r.getMessage().startswith("TRAINING CUT SHORT")]
    assert len(cut) == 1 and f"after {summary['steps_done']} of 100000 planned" in cut[0]


def test_tiny_presets_have_no_minute_caps():
    for kind in ("train_tokenizer", "train_dynamics", "train_decoder"):
        assert load_config(kind, preset_name="tiny").trainer.max_minutes is None, kind


def test_a_step_budget_gives_the_same_weights_on_an_idle_and_a_busy_machine(tmp_path):
    import threading

    import torch

    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2, t=4, size=64)

    def run(out: Path, busy: bool) -> bytes:
        # The real command in its own process, as a user runs it (the CLI's thread settings included), no loader
        # worker processes, a timeout. The load comes from two threads of this process doing matrix products (which
        # release the GIL), started only once the command runs: forking while both cores burned stalled in the
        # kernel for minutes on this machine, so nothing forks under load here.
        cmd = [sys.executable, "-m", "wm_video", "train", "tokenizer", "--preset", "tiny", "--data",
               str(tmp_path / "ds"), "--out", str(out), "--max-steps", "3", "trainer.logger=none",
               "loader.num_workers=0"]
        stop = threading.Event()

        def burn() -> None:
            x = torch.randn(256, 256)
            while not stop.is_set():
                x = torch.tanh(x @ x)

        # One torch thread in both runs: the same arithmetic, and no thread of the run waiting on a starved other.
        env = {**os.environ, "OMP_NUM_THREADS": "1"}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
        burners = [threading.Thread(target=burn, daemon=True) for _ in range(2 if busy else 0)]
        for t in burners:
            t.start()
        try:
            assert proc.wait(timeout=600) == 0
        finally:
            stop.set()
            proc.kill()
            for t in burners:
                t.join()
        summary = read_json(out / "train_summary.json")
        assert (summary["steps_done"], summary["stop_reason"]) == (3, "step budget")
        return (out / "export" / "model.safetensors").read_bytes()

    assert run(tmp_path / "busy", busy=True) == run(tmp_path / "idle", busy=False)


def test_dynamics_gates_mark_failed_heads_and_generation_leaves_their_captions_out(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=4, t=6, grid=8, vocab=32)
    run = tmp_path / "dyn"
    assert main(["train", "dynamics", "--preset", "debug", "--data", str(tmp_path / "tok"), "--out", str(run),
                 "--max-steps", "2", "val_fraction=0.34"]) == 0
    quality = read_json(run / "export" / "quality.json")
    tokens, reward = quality["gates"]["token_accuracy"], quality["gates"]["reward_head"]
    # two steps in, the model is below copying the last frame (one token of 64 moves) and its reward head is at
    # its constant start
    assert tokens["passed"] is False and tokens["baseline"] == quality["metrics"]["copy_last_frame_acc"] > 0.9
    assert reward["passed"] is False and quality["heads"]["reward"] is False
    assert isinstance(quality["heads"]["termination"], bool) and "termination_auroc" in quality["metrics"]
    assert {f"{GATE} dynamics token_accuracy", f"{GATE} dynamics reward_head"} <= {
        " ".join(m.split()[:5]) for m in gate_warnings(caplog)}
    # the world-model export carries quality.json along with the part; the world model reads the heads' verdicts
    make_tokenizer().save_pretrained(tmp_path / "tokenizer")
    assert main(["export", "--tokenizer", str(tmp_path / "tokenizer"), "--dynamics", str(run),
                 "--out", str(tmp_path / "wm")]) == 0
    assert read_json(tmp_path / "wm" / "dynamics" / "quality.json") == quality
    wm = WorldModel.from_pretrained(tmp_path / "wm")
    assert wm.head_quality == quality["heads"] and not (tmp_path / "wm" / "tokenizer" / "quality.json").exists()
    caplog.clear()
    lines = prediction_captions(np.array([0.5, 1.0]), np.array([0.1, 0.9]), wm.head_quality)
    assert lines[0].startswith("t+1") and not any("r=" in line for line in lines)
    assert any("reward head failed its quality gate" in r.getMessage() for r in caplog.records)
    assert prediction_captions(np.array([0.5]), np.array([0.1]), {}) == ["t+1 r=+0.50 end=0.10"]  # no record: drawn


def test_decoder_gate_sets_its_1_step_render_beside_the_vq_decoder(good_tokenizer, colours, tmp_path):
    run = tmp_path / "dec"
    assert main(["train", "decoder", "--preset", "debug", "--data", str(colours), "--tokenizer",
                 str(good_tokenizer / "export"), "--out", str(run), "--max-steps", "2", "val_fraction=0.25",
                 *FAST]) == 0
    quality = read_json(run / "export" / "quality.json")
    g, m = quality["gates"]["psnr_1step_db"], quality["metrics"]
    assert (g["value"], g["baseline"]) == (m["psnr_1step_db"], m["psnr_vq_db"]) and m["psnr_vq_db"] > 20
    assert g["passed"] is (m["psnr_1step_db"] >= m["psnr_vq_db"] - 3) and quality["passed"] is g["passed"]
