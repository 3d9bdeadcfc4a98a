"""`wm-video train tokenizer --init-from`: a tokenizer fine-tune starts as the export (same reconstructions), keeps
the codebook bitwise fixed (token ids keep their meaning), trains the encoder, reports PSNR before and after,
records its origin, refuses architecture changes and resumes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import write_dataset

from wm_video.cli import main
from wm_video.config import load_config
from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.training.tokenizer_finetune import finetune_config, start_from_export
from wm_video.training.tokenizer_module import TokenizerModule

# not the debug preset's architecture (codebook 32, latent 8): the fine-tune must take the export's
ARCH = dict(resolution=32, downsample=4, base_channels=8, norm_groups=4, latent_channels=8, codebook_size=16,
            codebook_dim=4)


def export(path: Path) -> VQTokenizer:
    """A tokenizer export whose codebook is seeded (as after training) and whose weights are off their init."""
    torch.manual_seed(0)
    model = VQTokenizer(TokenizerConfig(**ARCH))
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
        q = model.quantizer
        q.embed.copy_(torch.nn.functional.normalize(torch.randn_like(q.embed), dim=-1))
        q.embed_sum.copy_(q.embed)
        q.initialized.fill_(True)
    model.save_pretrained(path)
    return model.eval()


def finetune(tmp_path: Path, *extra: str, steps: int = 3) -> int:
    return main(["train", "tokenizer", "--preset", "debug", "--init-from", str(tmp_path / "pre"), "--data",
                 str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--max-steps", str(steps), "val_fraction=0.5",
                 "trainer.logger=none", "trainer.val_check_interval=3", *extra])


@pytest.fixture()
def setup(tmp_path: Path) -> VQTokenizer:
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=4, t=4, size=32)
    return export(tmp_path / "pre")


def test_it_starts_as_the_export(tmp_path, setup):
    cfg = load_config("train_tokenizer", preset_name="debug", overrides=[f"finetune.init_from={tmp_path / 'pre'}"])
    cfg = finetune_config(cfg, [("command-line overrides", {"commitment_weight": 0.5})])
    assert cfg.model.codebook_size == 16 and cfg.model.commitment_weight == 0.5  # export's architecture, run's loss
    module = TokenizerModule(cfg)
    start_from_export(module.model, cfg)
    x = torch.rand(2, 2, 3, 32, 32) * 2 - 1
    with torch.no_grad():
        assert torch.equal(module.model.eval()(x).recon, setup(x).recon)
    assert module.model.quantizer.codebook_frozen


def test_fine_tune_keeps_the_codebook_trains_the_encoder_and_reports_before_after(tmp_path, setup, capsys):
    assert finetune(tmp_path) == 0
    out = capsys.readouterr().out
    tuned = VQTokenizer.from_pretrained(tmp_path / "run" / "export")
    before, after = setup.state_dict(), tuned.state_dict()
    quantizer = [k for k in before if k.startswith("quantizer.")]
    assert "quantizer.embed" in quantizer and "quantizer.proj_out.weight" in quantizer
    assert all(torch.equal(before[k], after[k]) for k in quantizer)  # codebook and projections bitwise fixed
    assert not torch.equal(before["encoder.conv_in.weight"], after["encoder.conv_in.weight"])
    assert tuned.config.codebook_size == 16
    origin = tuned.config.finetuned_from
    assert origin == {"tokenizer": str(tmp_path / "pre"), "fingerprint": setup.fingerprint(),
                      "token_fingerprint": setup.token_fingerprint(), "codebook": "frozen"}
    assert tuned.token_fingerprint() == setup.token_fingerprint() and tuned.fingerprint() != setup.fingerprint()
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert {"psnr_db", "psnr_db_before", "codebook_usage_before"} <= set(summary["metrics"])
    assert summary["finetune"]["token_fingerprint_kept"] is True
    assert summary["finetune"]["before"]["frames"] == summary["metrics"]["frames"]  # the same held-out frames
    assert "fine-tuned from" in out and "(codebook frozen)" in out
    quality = json.loads((tmp_path / "run" / "export" / "quality.json").read_text())
    assert quality["finetune"]["before"]["psnr_db"] == summary["metrics"]["psnr_db_before"]
    # the held-out frames of the export, before any step: the export's own reconstructions
    frames = to_model_frames(torch.from_numpy(_first_heldout(tmp_path / "ds")))
    with torch.no_grad():
        from wm_video.data.tokenizer_fit import frame_psnr
        assert summary["metrics"]["psnr_db_before"] == pytest.approx(
            float(frame_psnr(frames, setup(frames).recon).mean()), abs=0.5)


def _first_heldout(root: Path):
    from wm_video.data.loader import heldout_loader

    loader, _ = heldout_loader(root, 0.5, 8)
    return torch.cat([b["frames"] for b in loader]).numpy()


def test_architecture_changes_are_refused_and_resume_works(tmp_path, setup, capsys):
    assert finetune(tmp_path, "model.codebook_size=32") == 2
    err = capsys.readouterr().err
    assert "field 'model.codebook_size' is 32" in err and "has 16" in err and "command-line overrides" in err
    assert finetune(tmp_path, "model.previous_frame=true") == 2  # a decoder the export does not have
    assert "field 'model.previous_frame' is True" in capsys.readouterr().err
    cfg = tmp_path / "tok.yaml"
    cfg.write_text("kind: train_tokenizer\nmodel:\n  latent_channels: 16\n")
    assert main(["train", "tokenizer", "--config", str(cfg), "--init-from", str(tmp_path / "pre"), "--data",
                 str(tmp_path / "ds"), "--out", str(tmp_path / "bad")]) == 2
    assert f"{cfg}: field 'model.latent_channels' is 16" in capsys.readouterr().err
    assert finetune(tmp_path, "model.codebook_size=16", steps=2) == 0  # the export's value: fine
    assert finetune(tmp_path, steps=4) == 0
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 4
    tuned = VQTokenizer.from_pretrained(tmp_path / "run" / "export")
    assert torch.equal(tuned.quantizer.embed, setup.quantizer.embed)


def test_tokens_of_the_fine_tune_share_a_mixture_with_the_originals(tmp_path, setup):
    from wm_video.data.mixture import MixtureError, MixtureSpec, open_sources

    assert finetune(tmp_path, steps=2) == 0
    export(tmp_path / "other")  # the same architecture, but another quantizer: tokens that mean something else
    with torch.no_grad():
        other = VQTokenizer.from_pretrained(tmp_path / "other")
        other.quantizer.embed.neg_()
        other.save_pretrained(tmp_path / "other")
    for tok, name in ((tmp_path / "pre", "a"), (tmp_path / "run" / "export", "b"), (tmp_path / "other", "c")):
        assert main(["data", "tokenize", "--tokenizer", str(tok), "--src", str(tmp_path / "ds"), "--out",
                     str(tmp_path / name), "--no-progress"]) == 0
    infos = open_sources(MixtureSpec.from_config([str(tmp_path / "a"), str(tmp_path / "b")]))
    assert infos[0].tokens["token_fingerprint"] == setup.token_fingerprint() == infos[1].tokens["token_fingerprint"]
    with pytest.raises(MixtureError, match=r"tokens\.token_fingerprint"):
        open_sources(MixtureSpec.from_config([str(tmp_path / "a"), str(tmp_path / "c")]))
