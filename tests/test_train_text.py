"""`wm-video train dynamics ... text_encoder=PATH` end to end on tiny token shards with task text: the export
records its text encoder and width and follows its text; clear errors for data without task text and for a text
model without an encoder."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import write_token_dataset
from text_fixtures import save_tiny_text_encoder

from wm_video.cli import main
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.text_encoder import TextEncoder

TASKS = ["reach", "push the block"]


@pytest.fixture(scope="module")
def t5_dir(tmp_path_factory):
    return save_tiny_text_encoder(tmp_path_factory.mktemp("text") / "t5")


def _args(tmp_path, data, *more):
    return ["train", "dynamics", "--preset", "debug", "--data", str(data), "--out", str(tmp_path / "run"),
            "--max-steps", "2", "val_fraction=0.34", "video_every_n_steps=0", *more]


def test_train_with_text_records_the_encoder_and_takes_text(tmp_path, t5_dir, capsys):
    write_token_dataset(tmp_path / "tok", shards=3, clips_per_shard=2, t=4, tasks=TASKS)
    assert main(_args(tmp_path, tmp_path / "tok", f"text_encoder={t5_dir}", "model.text_dropout=0.5")) == 0
    export = tmp_path / "run" / "export"
    config = json.loads((export / "config.json").read_text())
    assert (config["text_dim"], config["text_encoder"], config["text_dropout"]) == (16, str(t5_dir.resolve()), 0.5)
    model = DynamicsModel.from_pretrained(export).eval()
    assert model.text.mlp[-1].weight.abs().sum() > 0  # the zero-initialised text layer learned: text reached it
    tokens = torch.zeros(2, 3, 4, 4, dtype=torch.long)
    text = TextEncoder(config["text_encoder"])(TASKS)
    assert model(tokens, mask_ratio=1.0, text=text).logits.shape == (2, 2, 4, 4, 16)
    quality = json.loads((export / "quality.json").read_text())
    assert quality["metrics"]["predicted_tokens"] > 0  # the held-out clips were scored, given their text


    # fine-tuning the text model needs its encoder again
    finetune = ["train", "dynamics", "--init-from", str(export), "--data", str(tmp_path / "tok"), "--out",
                str(tmp_path / "ft"), "--max-steps", "1", "video_every_n_steps=0"]
    assert main(finetune) == 2
    assert f"(text_dim=16, trained with {t5_dir.resolve()}): give text_encoder=PATH" in capsys.readouterr().err


def test_data_without_task_text_is_a_clear_error(tmp_path, t5_dir, capsys):
    write_token_dataset(tmp_path / "tok", shards=2, clips_per_shard=2, t=4)
    assert main(_args(tmp_path, tmp_path / "tok", f"text_encoder={t5_dir}")) == 2
    err = capsys.readouterr().err
    assert "has no task text (its clips' meta.json lack extra.task)" in err and "drop text_encoder" in err


def test_a_text_model_without_an_encoder_and_a_wrong_width_are_refused(tmp_path, t5_dir, capsys):
    write_token_dataset(tmp_path / "tok", shards=2, clips_per_shard=2, t=4, tasks=TASKS)
    assert main(_args(tmp_path, tmp_path / "tok", "model.text_dim=16")) == 2
    assert "give text_encoder=PATH, a local transformers folder" in capsys.readouterr().err
    assert main(_args(tmp_path, tmp_path / "tok", "model.text_dim=32", f"text_encoder={t5_dir}")) == 2
    assert "the model's text_dim is 32, text encoder" in capsys.readouterr().err
    assert main(_args(tmp_path, tmp_path / "tok", f"text_encoder={tmp_path / 'tok'}")) == 2
    assert "is not a transformers checkpoint: missing config.json" in capsys.readouterr().err



def test_fine_tuning_a_text_free_model_with_text_starts_from_it():
    import dataclasses

    from wm_video.config import load_config
    from wm_video.training.finetune import transfer_weights

    torch.manual_seed(0)
    pretrained = DynamicsModel(load_config("dynamics", preset_name="debug")).eval()
    tuned = DynamicsModel(dataclasses.replace(pretrained.config, text_dim=16)).eval()
    report = transfer_weights(pretrained, tuned)  # what --init-from does with text_encoder=PATH
    assert sorted(report.fresh) == [f"text.mlp.{i}.{p}" for i in (0, 2) for p in ("bias", "weight")]
    tokens, text = torch.randint(0, 32, (2, 3, 4, 4)), torch.randn(2, 16)
    with torch.no_grad():
        assert torch.equal(tuned(tokens, mask_ratio=1.0, text=text).logits,
                           pretrained(tokens, mask_ratio=1.0).logits)
