"""The machine record every report and benchmark writes: fixed keys, JSON-ready values of the documented types,
threads that follow ``torch.set_num_threads``, and the command line and git commit helpers."""

from __future__ import annotations

import datetime
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import wm_video
from wm_video.utils.machine import DATE_FORMAT, command_line, git_commit, machine_record, machine_summary

ALWAYS = {"date": str, "hostname": str, "platform": str, "machine": str, "cpu": str, "cpus": (int, type(None)),
          "python": str, "torch": str, "cuda": (str, type(None)), "gpu": (str, type(None))}


def test_keys_types_and_json():
    record = machine_record(device="cpu", argv=["eval/x.py", "--out", "a b"])
    assert set(record) == {*ALWAYS, "threads", "device", "command", "git_commit"}
    for key, kind in ALWAYS.items():
        assert isinstance(record[key], kind), (key, record[key])
    assert isinstance(record["threads"], int) and record["threads"] >= 1
    assert record["device"] == "cpu" and record["gpu"] is None  # a CPU run names no GPU
    assert record["torch"] == torch.__version__ and record["python"] == ".".join(map(str, sys.version_info[:3]))
    assert record["git_commit"] is None or isinstance(record["git_commit"], str)
    datetime.datetime.strptime(record["date"], DATE_FORMAT)  # the documented format
    assert json.loads(json.dumps(record)) == record  # plain JSON values: they round-trip unchanged


def test_optional_fields_are_left_out():
    record = machine_record(threads=False, git=False)
    assert set(record) == set(ALWAYS)


def test_threads_follow_set_num_threads():
    before = torch.get_num_threads()
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            assert machine_record(git=False)["threads"] == n
    finally:
        torch.set_num_threads(before)


def test_command_line_can_be_pasted_back():
    assert command_line(["eval/fidelity/run.py", "--envs", "ALE/Boxing-v5", "--out", "a b"]) == \
        "python eval/fidelity/run.py --envs ALE/Boxing-v5 --out 'a b'"
    assert command_line(["/venv/bin/wm-video", "eval", "--model", "m"]) == "wm-video eval --model m"
    assert command_line([]) == ""


def test_git_commit_of_a_checkout_and_outside_one(tmp_path):
    assert git_commit(tmp_path) is None  # not a checkout: no commit, no error
    package = Path(wm_video.__file__).parent
    head = subprocess.run(["git", "-C", str(package), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("wm_video is not imported from a git checkout")
    commit = git_commit()
    assert commit is not None and commit.removesuffix("-dirty") == head.stdout.strip()


def test_summary_is_one_line_and_reads_old_records():
    record = machine_record(git=False)
    line = machine_summary(record)
    assert "\n" not in line and f"torch {record['torch']}" in line and f"{record['threads']} threads" in line
    assert machine_summary({"cpu": "x86_64", "torch": "2.0", "threads": 2}) == "x86_64, torch 2.0, 2 threads"
