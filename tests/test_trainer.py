"""The shared Trainer set-up: a tiny module trained from the clip loader logs, checkpoints and learns."""

from __future__ import annotations

import logging

import lightning as L
import torch
from conftest import write_dataset

from wm_video.config import load_config
from wm_video.data.loader import ClipLoader, LoaderConfig
from wm_video.training import build_trainer
from wm_video.training.trainer import resolve_precision


class MeanFrame(L.LightningModule):
    """Predicts each clip's mean frame from its first frame: enough to see a loss fall."""

    def __init__(self) -> None:
        super().__init__()
        self.net = torch.nn.Conv2d(3, 3, 3, padding=1)

    def compute_loss(self, batch):
        x = batch["frames"].float() / 127.5 - 1  # (b, t, c, h, w)
        loss = torch.nn.functional.mse_loss(self.net(x[:, 0]), x.mean(1))
        return loss, {"mse": loss.detach()}

    def training_step(self, batch, _):
        loss, logs = self.compute_loss(batch)
        self.log_dict({f"train/{k}": v for k, v in logs.items()})
        self.losses.append(float(loss.detach()))
        return loss

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=3e-2)


def test_trainer_from_config_trains_logs_and_checkpoints(tmp_path, monkeypatch, caplog):
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=8, size=8)
    monkeypatch.setenv("SLURM_JOB_ID", "123")  # batch job: plain log lines instead of a bar
    monkeypatch.setenv("SLURM_JOB_NAME", "train")
    cfg = load_config("trainer", preset_name="debug", overrides=[f"run_dir={tmp_path / 'run'}", "max_steps=12",
                                                                 "checkpoint_every_n_steps=4", "log_every_n_steps=4"])
    assert resolve_precision(cfg) == "32-true"
    model = MeanFrame()
    model.losses = []
    loader = ClipLoader(tmp_path / "ds", LoaderConfig(batch_size=4, num_workers=0, resampled=True, epoch_length=64))
    trainer = build_trainer(cfg)
    with caplog.at_level(logging.WARNING):
        trainer.fit(model, train_dataloaders=loader)
    assert trainer.global_step == 12
    assert sum(model.losses[-3:]) < sum(model.losses[:3])
    ckpts = sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir())
    assert "last.ckpt" in ckpts and "step-00000012.ckpt" in ckpts
    assert len([c for c in ckpts if c.startswith("step-")]) <= cfg.keep_last_k
    assert list((tmp_path / "run" / "tb").glob("events.out.tfevents.*"))
    assert "step 8/12" in caplog.text and "train/mse=" in caplog.text
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert state["global_step"] == 12
