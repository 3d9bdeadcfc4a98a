"""Rollout videos of a mixture run: one per action domain, each rolled out in its own domain with its own actions,
decoded with the tokenizer the sources share (or token ids, said once, without it)."""

from __future__ import annotations

import importlib.util
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from test_dynamics_domains import model_for, tiny
from test_train_mixture import SPACES, mixture_yaml, train, write_tokens

from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.training.visuals import VIDEO_TAG, log_rollouts, video_tag

pytestmark = pytest.mark.usefixtures("one_thread")

VIDEO_ARGS = ["video_every_n_steps=2", "video_clips=2", "video_context_frames=2"]


class Recorder:
    """A stand-in for TensorBoard's SummaryWriter: what was logged, by tag."""

    def __init__(self) -> None:
        self.logged: dict[str, torch.Tensor] = {}

    def add_image(self, tag, img, step):
        self.logged[tag] = img

    def add_video(self, tag, vid, step, fps):
        self.logged[tag] = vid


def test_log_rollouts_rolls_each_domain_out_in_that_domain(monkeypatch):
    model = model_for(tiny(context_frames=4))  # domains atari (4 actions), arm (2 dims), video; all weights random
    c = model.config
    seen = []  # (domain, actions given?) of every action embedding the rollouts ask for
    embed = model.embed_actions

    def spy(actions, lead, domain=None, *args, **kwargs):
        seen.append((domain, actions is not None))
        return embed(actions, lead, domain, *args, **kwargs)

    monkeypatch.setattr(model, "embed_actions", spy)
    torch.manual_seed(0)
    tokens = torch.randint(0, c.vocab_size, (2, 4, c.token_h, c.token_w))
    clips = {"atari": {"tokens": tokens, "actions": torch.randint(0, 4, (2, 4))},
             "arm": {"tokens": tokens, "actions": torch.randn(2, 4, 2)},
             "video": {"tokens": tokens}}
    out = Recorder()
    tags = log_rollouts(out, model, None, clips, context_frames=2, step=1, mixture=True)
    assert tags == [video_tag(d) for d in clips] == [f"rollout/{d}/truth_true-actions_shuffled-actions"
                                                     for d in ("atari", "arm", "video")]
    assert set(out.logged) == set(tags)
    assert {d for d, _ in seen} == {"atari", "arm", "video"}  # every domain reached the model, no other
    with_actions = {d for d, given in seen if given}
    assert with_actions == {"atari", "arm"}  # each action domain's own actions; the action-free one, none
    # the same frames under another domain's encoder and actions: other rollouts (the domain is not ignored)
    assert not torch.equal(out.logged[tags[0]], out.logged[tags[1]])
    # action-free: one rollout fills both prediction columns (grid: each clip's 3 panels stacked, 8 px a token)
    video = out.logged[tags[2]] if importlib.util.find_spec("moviepy") is None else None
    if video is not None:
        h = c.token_h * 8
        assert torch.equal(video[:, h:2 * h], video[:, 2 * h:3 * h])
    # a one-dataset run keeps its tag; a domain's actions given to another domain fail loudly
    assert log_rollouts(Recorder(), model.domain_model("atari"), None, {None: clips["atari"]}, 2, 1) == [VIDEO_TAG]
    with pytest.raises(ValueError):
        log_rollouts(Recorder(), model, None, {"arm": clips["atari"]}, 2, 1, mixture=True)


def _mixture_data(root: Path, tokenizer: str) -> Path:
    """The test mixture's three datasets (discrete, continuous, action-free) recording ``tokenizer``."""
    for name in SPACES:
        write_tokens(root / name, name)
        path = root / name / "dataset.json"
        info = json.loads(path.read_text())
        info["tokens"]["tokenizer"] = tokenizer
        path.write_text(json.dumps(info))
    return root


def _images(run: Path) -> dict:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "tb"), size_guidance={"images": 0}).Reload()
    return {tag: events.Images(tag) for tag in events.Tags()["images"]}


def _pixels(event) -> np.ndarray:
    """A logged image (or the first frame of a logged video) as ``(H, W, 3)`` uint8."""
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(event.encoded_image_string)).convert("RGB"))


def test_mixture_logs_a_video_per_domain_decoded_with_the_shared_tokenizer(tmp_path, caplog):
    tok = VQTokenizer(TokenizerConfig(resolution=32, downsample=8, base_channels=8, norm_groups=4, latent_channels=8,
                                      codebook_size=16, codebook_dim=4))  # a 4x4 grid of 16 codes, as the data
    tok.save_pretrained(tmp_path / "tok")
    data = _mixture_data(tmp_path / "data", str(tmp_path / "tok"))
    with caplog.at_level(logging.WARNING):
        assert train(mixture_yaml(tmp_path / "mix.yaml", data), tmp_path / "run", 2, *VIDEO_ARGS) == 0
    assert "dynamics videos draw token ids" not in caplog.text
    images = _images(tmp_path / "run")
    assert set(images) == {f"rollout/{name}/truth_true-actions_shuffled-actions" for name in SPACES}
    moviepy = importlib.util.find_spec("moviepy") is not None
    for tag, events in images.items():
        assert [e.step for e in events] == [2], tag
        # 2 clips cut to the 4-frame window, decoded to 32x32 frames: (clip x panel) rows, time left to right
        assert (events[0].height, events[0].width) == ((2 * 32, 3 * 32) if moviepy else (2 * 3 * 32, 4 * 32)), tag
    grid = _pixels(images[video_tag("video")][0])  # (H, W, 3)
    assert not np.array_equal(grid[..., 0], grid[..., 1])  # decoded colours, not grey token ids
    if not moviepy:  # the action-free domain's shuffled row repeats its one rollout
        assert np.array_equal(grid[32:64], grid[64:96]) and np.array_equal(grid[128:160], grid[160:192])


def test_mixture_without_its_tokenizer_draws_token_ids_and_says_so_once(tmp_path, caplog):
    data = _mixture_data(tmp_path / "data", str(tmp_path / "gone"))  # recorded, but not there
    with caplog.at_level(logging.WARNING):
        assert train(mixture_yaml(tmp_path / "mix.yaml", data, (1, 1, 0)), tmp_path / "run", 2, *VIDEO_ARGS) == 0
    assert caplog.text.count("dynamics videos draw token ids") == 1
    images = _images(tmp_path / "run")
    assert set(images) == {video_tag(name) for name in SPACES}  # weight 0 trains on none, but holds clips out
    moviepy = importlib.util.find_spec("moviepy") is not None
    size = (2 * 4 * 8, 3 * 4 * 8) if moviepy else (2 * 3 * 4 * 8, 4 * 4 * 8)  # 8 px per token
    assert all((e[0].height, e[0].width) == size for e in images.values())
    grid = _pixels(images[video_tag("disc")][0])
    assert np.array_equal(grid[..., 0], grid[..., 1]) and np.array_equal(grid[..., 1], grid[..., 2])  # grey ids
