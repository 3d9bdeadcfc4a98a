"""The README's main job (``wm-video demo``) end to end on a small budget: every stage runs for real (simulator,
three trainings, export, generation, evaluation); the full-size run's figures are in docs/benchmarks.md."""

from __future__ import annotations

import json

from wm_video.cli import main
from wm_video.data.reader import load_dataset_info
from wm_video.data.split import split_dataset
from wm_video.utils.video_io import read_video
from wm_video.world_model import WorldModel

SMALL = ["--env", "Pendulum-v1", "--episodes", "8", "--max-episode-steps", "40", "--workers", "1",
         "--tokenizer-steps", "4", "--dynamics-steps", "4", "--decoder-steps", "2", "--max-clips", "4"]


def test_demo_builds_generates_and_evaluates_a_world_model_then_resumes(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    text = capsys.readouterr().out
    assert "## PSNR (dB)" in text and "copy_last_frame" in text and "shuffled_actions" in text
    assert "beats copy-last-frame" in text and "follows its actions" in text and "tokenizer_ceiling" in text
    assert "null_actions" not in text  # the demo leaves the null-action row to the fidelity suite (time)

    info = load_dataset_info(out / "data")
    assert info.num_episodes == 8 and info.resolution == [64, 64] and info.action_space.kind == "continuous"
    assert (out / "data.png").stat().st_size > 1000 and (out / "data.gif").exists()
    assert load_dataset_info(out / "tokens").frame_storage == "tokens"

    model = WorldModel.from_pretrained(out / "world_model")
    assert model.decoder is not None and model.resolution == 64 and model.action_type == "continuous"

    # 4 context frames + 12 predicted, prediction and ground truth side by side (2 x 64 px, upscaled 4x)
    video = read_video(out / "generated.mp4")
    assert video.shape[0] == 16 and video.shape[2] >= 2 * video.shape[1] - 64
    trace = json.loads((out / "generated.json").read_text())
    assert len(trace["steps"]) == 12 and all(len(s["action"]) == 1 for s in trace["steps"])
    assert (out / "generated.gif").stat().st_size > 0

    report = json.loads((out / "eval" / "report.json").read_text())
    assert set(report["results"]) >= {"model", "copy_last_frame", "shuffled_actions", "tokenizer_ceiling"}
    split = split_dataset(out / "data")
    assert split.heldout_episodes == 1 and split.heldout_clips == 3  # whole episodes: 10% of 8, at least one
    assert len(report["results"]["model"]["psnr_db"]) == 8 and report["clips"] == 3
    summary = json.loads((out / "demo_summary.json").read_text())
    assert set(summary["stage_seconds"]) == {"data", "tokenizer", "tokens", "dynamics", "decoder", "world_model",
                                             "generate", "eval"}
    assert summary["peak_memory"]["main_process_gib"] > 0
    verdict = summary["verdicts"]
    model, copy = report["results"]["model"]["psnr_db"], report["results"]["copy_last_frame"]["psnr_db"]
    assert verdict["copy_margin_db"][3] == round(model[3] - copy[3], 2)
    assert isinstance(verdict["beats_copy"], bool) and isinstance(verdict["follows_actions"], bool)

    # A rerun skips what is done (data, the three trainings, tokenization) and redoes the cheap end stages.
    weights = (out / "runs" / "dynamics" / "export" / "model.safetensors").read_bytes()
    assert main(["demo", "--out", str(out), *SMALL]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert summary["skipped"] == ["data", "tokenizer", "tokens", "dynamics", "decoder"]
    assert (out / "runs" / "dynamics" / "export" / "model.safetensors").read_bytes() == weights

    # --decoder-steps 0 trains no diffusion decoder: the world model renders with the VQ decoder
    assert main(["demo", "--out", str(out), *SMALL[:-4], "--decoder-steps", "0", "--max-clips", "4"]) == 0
    summary = json.loads((out / "demo_summary.json").read_text())
    assert "decoder" not in summary["stage_seconds"] and "decoder" not in summary["skipped"]
    assert WorldModel.from_pretrained(out / "world_model").decoder is None
    assert json.loads((out / "eval" / "report.json").read_text())["protocol"]["decoder"] == "vq"
