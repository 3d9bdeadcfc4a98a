"""``eval/fidelity/experiments/tokenizer_ceiling.py`` scores a tokenizer export exactly as ``wm-video eval`` scores
its tokenizer-ceiling row, for a plain tokenizer and for one whose decoder reads the previous frame."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest
from conftest import write_dataset
from test_decoder import make_tokenizer

from wm_video.evaluation.rollout_eval import EvalConfig, evaluate_world_model
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.world_model import WorldModel, WorldModelInfo

ROOT = Path(__file__).resolve().parents[1]


def ceiling_tool():
    spec = importlib.util.spec_from_file_location("tokenizer_ceiling",
                                                  ROOT / "eval" / "fidelity" / "experiments" / "tokenizer_ceiling.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.parametrize("overrides", [{}, {"encoder": "patch", "previous_frame": True}])
def test_the_tool_reproduces_the_suite_ceiling_row(tmp_path, overrides, one_thread):
    write_dataset(tmp_path / "ds", shards=4, clips_per_shard=3, t=6, size=32)
    tok = make_tokenizer(**overrides)
    tok.save_pretrained(tmp_path / "tok")
    dyn = DynamicsModel(DynamicsConfig(vocab_size=tok.vocab_size, token_h=8, token_w=8, context_frames=4, width=16,
                                       depth=1, heads=2, cond_dim=8, num_actions=6))
    wm = WorldModel(tok, dyn, None, WorldModelInfo(resolution=32, action_space={"kind": "discrete", "n": 6}))
    cfg = EvalConfig(horizon=3, context_frames=2, max_clips=6, batch_size=4, methods=["tokenizer_ceiling"])
    suite = evaluate_world_model(wm, str(tmp_path / "ds"), cfg, show_progress=False)["results"]["tokenizer_ceiling"]
    tool = ceiling_tool().ceiling(str(tmp_path / "tok"), str(tmp_path / "ds"), context=2, horizon=3, max_clips=6,
                                  batch_size=4)
    assert tool["clips"] == 3  # the held-out shard's clips
    assert tool["chained"]["psnr_db"] == pytest.approx(suite["psnr_db"], abs=1e-4)
    assert tool["chained"]["moving_psnr_db"] == pytest.approx(suite["psnr_moving_db"], abs=1e-4)
    assert ("teacher_forced" in tool) == bool(overrides)
