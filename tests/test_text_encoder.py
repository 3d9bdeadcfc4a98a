"""The frozen text encoder (:mod:`wm_video.models.text_encoder`) on tiny random T5 and CLIP checkpoints saved in a
test folder: one vector per text, cached per distinct text, deterministic; clear errors for folders that are not
transformers checkpoints and for a text model without an encoder."""

from __future__ import annotations

import json
import shutil

import pytest
import torch
from text_fixtures import save_tiny_text_encoder

from wm_video.models.text_encoder import TextEncoder, text_encoder_for


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_text_encoder(tmp_path_factory.mktemp("text") / "t5", "t5")


@pytest.mark.parametrize("kind", ["t5", "clip"])
def test_embeddings_are_cached_per_distinct_text_and_deterministic(tmp_path, kind):
    path = save_tiny_text_encoder(tmp_path / kind, kind)
    encoder = TextEncoder(path)
    assert encoder.dim == 16 and encoder.name == str(path.resolve())
    calls = []
    encode = encoder._encode
    encoder._encode = lambda texts: calls.append(list(texts)) or encode(texts)
    first = encoder(["reach", "pick place the drawer", "reach"])
    assert first.shape == (3, 16) and first.dtype == torch.float32
    assert torch.equal(first[0], first[2]) and not torch.allclose(first[0], first[1])
    again = encoder(["pick place the drawer", "reach", "push the block"])
    assert calls == [["reach", "pick place the drawer"], ["push the block"]]  # each distinct text encoded once
    assert torch.equal(again[0], first[1]) and torch.equal(again[1], first[0])
    fresh = TextEncoder(path)  # a new process would get the same vectors (eval mode: no dropout)
    torch.testing.assert_close(fresh(["reach", "pick place the drawer"]), first[:2])


def test_t5_pooling_ignores_padding(t5_dir):
    encoder = TextEncoder(t5_dir)
    alone = encoder._encode(["reach"])
    padded = encoder._encode(["reach", "pick place the red drawer"])[:1]  # "reach" padded to the longer text
    torch.testing.assert_close(alone, padded, atol=1e-5, rtol=1e-5)


def test_a_clip_without_task_text_is_named(t5_dir):
    with pytest.raises(ValueError, match=r"task text \[1\] is None"):
        TextEncoder(t5_dir)(["reach", None])


def test_a_folder_that_is_not_a_checkpoint_names_what_is_missing(tmp_path, t5_dir):
    with pytest.raises(FileNotFoundError, match="not a folder"):
        TextEncoder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"not a transformers checkpoint: missing config.json; weights "
                                         r"model.safetensors.*tokenizer files"):
        TextEncoder(tmp_path / "empty")
    no_tok = shutil.copytree(t5_dir, tmp_path / "no_tok", ignore=shutil.ignore_patterns("tokenizer*"))
    with pytest.raises(ValueError, match=r"missing tokenizer files \(one of tokenizer.json"):
        TextEncoder(no_tok)
    pickled = shutil.copytree(t5_dir, tmp_path / "pickled")
    (pickled / "model.safetensors").rename(pickled / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is a pickle and is not read"):
        TextEncoder(pickled)
    other = shutil.copytree(t5_dir, tmp_path / "other")
    (other / "config.json").write_text(json.dumps({**json.loads((other / "config.json").read_text()),
                                                   "model_type": "bert"}))
    with pytest.raises(ValueError, match="model_type 'bert'; supported text encoders: t5"):
        TextEncoder(other)


def test_a_text_model_needs_its_encoder_and_a_model_without_text_refuses_one(t5_dir):
    with pytest.raises(ValueError, match=r"trained with task text \(text_dim=16, text encoder /data/t5\); give"):
        text_encoder_for(16, "/data/t5", None)
    with pytest.raises(ValueError, match="trained without task text"):
        text_encoder_for(0, "", t5_dir)
    with pytest.raises(ValueError, match="gives 16-wide embeddings, the model takes text_dim=32"):
        text_encoder_for(32, "", t5_dir)
    assert text_encoder_for(0, "", None) is None
    assert text_encoder_for(16, "", t5_dir).dim == 16
