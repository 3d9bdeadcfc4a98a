"""What a training run prints: every line once, progress and the summary shown, library chatter hidden."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from collections import Counter

from conftest import write_dataset

from wm_video.utils import logs


def test_tiny_train_prints_each_line_once_without_library_chatter(tmp_path):
    write_dataset(tmp_path / "ds", shards=3, clips_per_shard=4, size=32)  # the last shard is held out: gates run
    env = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_") and k != "PYTHONWARNINGS"}
    env["OMP_NUM_THREADS"] = "1"
    cmd = [sys.executable, "-m", "wm_video", "train", "tokenizer", "--preset", "debug", "--data",
           str(tmp_path / "ds"), "--out", str(tmp_path / "run"), "--max-steps", "3", "trainer.logger=none",
           "loader.num_workers=0", "trainer.val_check_interval=2"]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = [line for line in run.stderr.splitlines() if line.strip()]
    # two copies of one record differ in their prefixes (time, level, logger; Lightning's own "INFO: "): drop them
    texts = Counter(re.sub(r"^(\d{4}-\d\d-\d\d [\d:,]+ )?[A-Z]+:? ([\w.]+: )?", "", line) for line in lines)
    assert [t for t, n in texts.items() if n > 1] == [], run.stderr
    for chatter in ("GPU available", "TPU available", "Tip:", "LeafSpec", "infer the `batch_size`", "srun",
                    "weights_only", "Loading weights from local directory"):
        assert chatter not in run.stderr + run.stdout, chatter
    assert not [line for line in lines if line.startswith("INFO:")]  # Lightning's own handler's format
    assert "INFO wm_video.training.trainer: step 3/3" in run.stderr  # progress at INFO, shown by default
    assert "tokenizer training summary" in run.stdout and "verdict:" in run.stdout
    assert len(lines) <= 10, run.stderr


def test_adopting_library_loggers_needs_setup_and_keeps_other_handlers(monkeypatch):
    lightning_logger = logging.getLogger("lightning")
    console, other = logging.StreamHandler(), logging.FileHandler(os.devnull)
    monkeypatch.setattr(lightning_logger, "handlers", [console, other])
    monkeypatch.setattr(lightning_logger, "propagate", False)
    monkeypatch.setattr(logs, "_third_party_level", None)
    logs.adopt_library_loggers()  # no application set-up: a library user keeps Lightning's defaults
    assert lightning_logger.handlers == [console, other] and not lightning_logger.propagate
    monkeypatch.setattr(logs, "_third_party_level", logging.WARNING)
    level = lightning_logger.level
    try:
        logs.adopt_library_loggers()
        assert lightning_logger.handlers == [other] and lightning_logger.propagate
        assert lightning_logger.level == logging.WARNING
    finally:
        lightning_logger.setLevel(level)
        other.close()


def test_quiet_hub_loads_drops_only_the_hub_line(capsys):
    with logs.quiet_hub_loads():
        print("Loading weights from local directory")
        print("something else")
    assert capsys.readouterr().out == "something else\n"
