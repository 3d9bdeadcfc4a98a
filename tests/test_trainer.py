"""The shared Trainer set-up: a tiny module trained from the clip loader logs, checkpoints and learns."""

from __future__ import annotations

import logging

import lightning as L
import pytest
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
    with caplog.at_level(logging.INFO):  # step lines are INFO
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


class KeyRecorder(L.LightningModule):
    """Records the clips of every trained batch; the loss does not matter here."""

    def __init__(self) -> None:
        super().__init__()
        self.lin = torch.nn.Linear(1, 1)
        self.seen: list[tuple[str, ...]] = []

    def training_step(self, batch, _):
        self.seen.append(tuple(batch["key"]))
        return self.lin(torch.ones(1, 1)).sum()

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)


@pytest.mark.parametrize("num_workers, stop_at", [(0, 9), (2, 12)])  # mid-epoch; exactly at the epoch's end
def test_resumed_fit_continues_the_data_stream_exactly(tmp_path, num_workers, stop_at):
    write_dataset(tmp_path / "ds", shards=4, clips_per_shard=6)  # 24 clips: 12 batches an epoch

    def fit(run: str, max_steps: int, ckpt: str | None = None) -> list:
        cfg = load_config("trainer", preset_name="debug", overrides=[
            f"run_dir={tmp_path / run}", f"max_steps={max_steps}", f"checkpoint_every_n_steps={stop_at}",
            "logger=none", "progress=log"])
        model = KeyRecorder()
        loader = ClipLoader(tmp_path / "ds", LoaderConfig(batch_size=2, num_workers=num_workers, shuffle_buffer=5))
        build_trainer(cfg).fit(model, train_dataloaders=loader, ckpt_path=ckpt)
        return model.seen

    uninterrupted = fit("a", 20)
    first = fit("b", stop_at)
    rest = fit("b", 20, ckpt=str(tmp_path / "b" / "checkpoints" / f"step-{stop_at:08d}.ckpt"))
    assert first == uninterrupted[:stop_at]
    assert rest == uninterrupted[stop_at:]  # neither a repeated nor a skipped batch, across the epoch boundary
