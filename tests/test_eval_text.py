"""``wm-video eval`` of a world model trained with task text: each clip rolled out given its own task text, or one
text for all (``--task``, e.g. a wrong task's); clear refusals without an encoder or for a model without text."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from text_fixtures import make_text_matter, save_tiny_text_encoder, write_task_frames

from wm_video.config import load_config
from wm_video.evaluation.rollout_eval import EvalConfig, evaluate_world_model
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.world_model import WorldModel

SIZE = 32


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("evaltext")
    encoder = save_tiny_text_encoder(root / "t5")
    write_task_frames(root / "data", ["reach", "push", "pick place", "open drawer"])
    tok = VQTokenizer(TokenizerConfig(resolution=SIZE, downsample=8, base_channels=8, norm_groups=4,
                                      latent_channels=8, codebook_size=16, codebook_dim=4))
    torch.manual_seed(0)
    dyn = DynamicsModel(dataclasses.replace(load_config("dynamics", preset_name="debug"), vocab_size=16, token_h=4,
                                            token_w=4, action_type="discrete", num_actions=4, text_dim=16,
                                            text_encoder=str(encoder)))
    make_text_matter(dyn)  # the zero-initialised text offsets and modulations made random: the text has an effect
    WorldModel(tok, dyn).save_pretrained(root / "wm")
    return root, encoder


def evaluate(root: Path, **kw) -> dict:
    cfg = EvalConfig(horizon=2, context_frames=2, max_clips=8, val_fraction=0.5, temperature=1.0,
                     methods=["model", "copy_last_frame"], **kw)  # sampled, seeded: any change of logits shows
    return evaluate_world_model(WorldModel.from_pretrained(root / "wm"), str(root / "data"), cfg, show_progress=False)


def test_each_clip_is_rolled_out_given_its_task_text(built):
    root, encoder = built
    own = evaluate(root)  # the encoder the model records
    again = evaluate(root, text_encoder=str(encoder))
    wrong = evaluate(root, task="press button")
    assert own["results"]["model"]["psnr_db"] == again["results"]["model"]["psnr_db"]
    assert own["results"]["model"]["psnr_db"] != wrong["results"]["model"]["psnr_db"]  # the text changes the future
    assert own["results"]["copy_last_frame"] == wrong["results"]["copy_last_frame"]
    assert wrong["protocol"]["task"] == "press button"


def test_text_refusals(built, tmp_path):
    root, _ = built
    with pytest.raises(FileNotFoundError, match="missing: not a folder"):
        evaluate(root, text_encoder=str(tmp_path / "missing"))
    plain = WorldModel.from_pretrained(root / "wm")
    plain.dynamics = DynamicsModel(dataclasses.replace(plain.dynamics.config, text_dim=0, text_encoder=""))
    cfg = EvalConfig(horizon=2, context_frames=2, max_clips=2, val_fraction=0.5, task="reach")
    with pytest.raises(ValueError, match="trained without task text"):
        evaluate_world_model(plain, str(root / "data"), cfg, show_progress=False)
