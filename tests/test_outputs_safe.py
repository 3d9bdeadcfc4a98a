"""Nothing lost (issue 19, "Data loss and unsafe overwrites"): an export never empties a folder it did not write,
generate refuses a folder as its --out, one run at a time holds a run folder, and a process killed mid-write
leaves only complete files, its temporaries removed at the next start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from conftest import write_dataset
from test_decoder import make_tokenizer
from test_world_model import make_world_model

from wm_video.cli import main
from wm_video.models.tokenizer import VQTokenizer
from wm_video.training.checkpointing import find_resume_checkpoint
from wm_video.training.export_info import export_info
from wm_video.training.run import hold_run_folder
from wm_video.utils.locking import LOCK_FILE, FolderInUse, FolderLock
from wm_video.world_model import WorldModel

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest: one torch thread for this module


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def foreign_folder(path: Path) -> dict[str, bytes]:
    """A folder of someone's own files; returns its contents."""
    (path / "sub").mkdir(parents=True)
    (path / "notes.txt").write_text("mine\n")
    (path / "sub" / "data.bin").write_bytes(os.urandom(64))
    return snapshot(path)


@pytest.fixture
def spawn():
    """Start ``python -c CODE ARGS...`` (one torch thread) and wait for its first line, ``ready``; every process
    still running at the end of the test is killed."""
    procs: list[subprocess.Popen] = []

    def start(code: str, *args: object) -> subprocess.Popen:
        proc = subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), *map(str, args)],
                                stdout=subprocess.PIPE, text=True, cwd=Path(__file__).parent,
                                env={**os.environ, "OMP_NUM_THREADS": "1"})
        procs.append(proc)
        assert proc.stdout.readline().strip() == "ready"
        return proc

    yield start
    for proc in procs:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def kill9(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGKILL)
    proc.wait()  # reaped: its PID is gone, as after a real crash


# ---- export ------------------------------------------------------------------------------------------------------


def test_world_model_export_keeps_what_it_did_not_write(tmp_path, capsys):
    wm = make_world_model()
    for part in ("tokenizer", "dynamics", "decoder"):
        getattr(wm, part).save_pretrained(tmp_path / part)
    parts = ["--tokenizer", str(tmp_path / "tokenizer"), "--dynamics", str(tmp_path / "dynamics")]
    mine = tmp_path / "mine"
    before = foreign_folder(mine)
    capsys.readouterr()
    assert main(["export", *parts, "--out", str(mine)]) == 2  # a foreign, non-empty folder: refused
    err = capsys.readouterr().err
    assert f"{mine} is not empty and holds no world-model export" in err and "--overwrite" in err
    assert len(err.strip().splitlines()) == 1 and snapshot(mine) == before
    # a part's export folder is another kind of export: refused too, untouched
    tok_files = snapshot(tmp_path / "tokenizer")
    assert main(["export", *parts, "--out", str(tmp_path / "tokenizer")]) == 2
    assert snapshot(tmp_path / "tokenizer") == tok_files
    # --overwrite writes the export's own entries and keeps everything else
    assert main(["export", *parts, "--decoder", str(tmp_path / "decoder"), "--out", str(mine), "--overwrite"]) == 0
    assert WorldModel.from_pretrained(mine).decoder is not None
    assert {k: v for k, v in snapshot(mine).items() if k in before} == before
    # re-export into a previous export needs no flag; a part left out this time goes, the user's files stay
    assert main(["export", *parts, "--out", str(mine)]) == 0
    assert WorldModel.from_pretrained(mine).decoder is None and not (mine / "decoder").exists()
    assert {k: v for k, v in snapshot(mine).items() if k in before} == before
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    # a file at --out is never replaced, --overwrite or not
    (tmp_path / "file").write_text("keep")
    capsys.readouterr()
    assert main(["export", *parts, "--out", str(tmp_path / "file"), "--overwrite"]) == 2
    assert f"{tmp_path / 'file'} is a file" in capsys.readouterr().err and (tmp_path / "file").read_text() == "keep"


def test_part_export_refuses_a_run_folder_and_replaces_a_previous_export(tmp_path, capsys):
    model = make_tokenizer()
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    ckpt = run / "checkpoints" / "last.ckpt"
    torch.save({"state_dict": {f"model.{k}": v for k, v in model.state_dict().items()}, "export": export_info(model),
                "global_step": 3}, ckpt)
    before = snapshot(run)
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(run)]) == 2  # used to delete the whole run
    assert f"{run} is not empty and holds no part export" in capsys.readouterr().err and snapshot(run) == before
    export = run / "export"
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(export)]) == 0
    (export / "NOTES.md").write_text("kept\n")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(export)]) == 0  # a previous part export
    assert (export / "NOTES.md").read_text() == "kept\n"
    torch.testing.assert_close(VQTokenizer.from_pretrained(export).state_dict(), model.state_dict())
    # a Hugging Face model folder also has config.json + model.safetensors, but not a part's config fields
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"model_type": "bert", "hidden_size": 8}')
    (hf / "model.safetensors").write_bytes(b"x")
    (hf / "vocab.txt").write_text("a\n")
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(hf)]) == 2
    assert (hf / "config.json").read_text().startswith('{"model_type"')
    assert main(["export", "--checkpoint", str(ckpt), "--out", str(hf), "--overwrite"]) == 0
    assert (hf / "vocab.txt").read_text() == "a\n" and VQTokenizer.from_pretrained(hf).config.resolution == 32


def test_generate_refuses_a_folder_as_out(tmp_path, capsys):
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=1, t=6, size=32)
    (tmp_path / "videos").mkdir()
    assert main(["generate", "--model", str(tmp_path / "wm"), "--context", f"{tmp_path / 'ds'}#0",
                 "--num-frames", "2", "--out", str(tmp_path / "videos")]) == 2
    err = capsys.readouterr().err
    assert f"{tmp_path / 'videos'} is a folder; --out names the mp4 file" in err and "Traceback" not in err
    assert not any((tmp_path / "videos").iterdir())


# ---- one run per run folder -----------------------------------------------------------------------------------

HOLD = """
    import sys, time
    from wm_video.utils.locking import FolderLock
    FolderLock(sys.argv[1]).acquire()
    print("ready", flush=True)
    time.sleep(600)
"""


def test_a_run_folder_has_one_holder_and_a_dead_holder_is_taken_over(tmp_path, spawn, capsys):
    run = tmp_path / "run"
    holder = spawn(HOLD, run)
    with pytest.raises(FolderInUse, match=f"run folder {run} is in use by PID {holder.pid} on "):
        FolderLock(run).acquire()
    # the train verbs hold their run folder: the second run stops before touching it, naming the first
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2, t=4, size=32)
    assert main(["train", "tokenizer", "--preset", "debug", "--data", str(tmp_path / "ds"), "--out", str(run),
                 "--max-steps", "1", "trainer.logger=none"]) == 2
    err = capsys.readouterr().err
    assert f"in use by PID {holder.pid}" in err and len(err.strip().splitlines()) == 1
    assert sorted(p.name for p in run.iterdir()) == [LOCK_FILE]
    kill9(holder)  # the kernel drops a dead process's lock: the next run takes the folder over
    with FolderLock(run):
        assert f'"pid": {os.getpid()}' in (run / LOCK_FILE).read_text()


# ---- kill -9 mid-write -----------------------------------------------------------------------------------------

CHECKPOINT = """
    import os, sys, time
    from wm_video.training.checkpointing import atomic_torch_save
    path = sys.argv[1]
    atomic_torch_save({"state_dict": {}, "global_step": 1, "loops": {}}, path)
    def stall(src, dst):  # the temporary is whole, the rename not done: where a kill hurts most
        print("ready", flush=True)
        time.sleep(600)
    os.replace = stall
    atomic_torch_save({"state_dict": {}, "global_step": 2, "loops": {}}, path)
"""

SHARD = """
    import sys, time
    from conftest import action_space, make_clip
    from wm_video.data.writer import ShardWriter
    w = ShardWriter(sys.argv[1], action_space("discrete"), "tokens")
    clip = make_clip(0, 0, t=4, size=8)
    clip.frames = clip.frames[..., 0]  # (t, h, w) tokens
    w.write(clip)
    print("ready", flush=True)
    time.sleep(600)
"""


def test_kill_during_a_checkpoint_write_keeps_the_old_one_and_the_next_run_cleans_up(tmp_path, spawn):
    run = tmp_path / "run"
    folder = run / "checkpoints"
    folder.mkdir(parents=True)
    writer = spawn(CHECKPOINT, folder / "last.ckpt")
    kill9(writer)
    assert sorted(p.name for p in folder.iterdir()) == [f".last.ckpt.tmp-{writer.pid}", "last.ckpt"]
    path, meta = find_resume_checkpoint(run)
    assert path.name == "last.ckpt" and meta["global_step"] == 1  # the complete old one, never half a new one
    (folder / f"step-1.ckpt.tmp-{writer.pid}").write_bytes(b"left by an older version")
    (folder / f".step-2.ckpt.tmp-{os.getpid()}").write_bytes(b"a live process's")
    with hold_run_folder(run):  # what every train verb does first
        left = sorted(p.name for p in folder.iterdir())
    assert left == [f".step-2.ckpt.tmp-{os.getpid()}", "last.ckpt"]


def test_kill_during_a_shard_write_leaves_no_shard_and_a_rerun_cleans_up(tmp_path, spawn):
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2, t=4, size=32)
    make_tokenizer().save_pretrained(tmp_path / "tok")
    tokens = tmp_path / "tokens"
    tokens.mkdir()
    writer = spawn(SHARD, tokens / "shard-000001.tar")
    kill9(writer)
    assert [p.name for p in tokens.iterdir()] == [f".shard-000001.tar.tmp-{writer.pid}"]  # no shard, no sidecar
    assert main(["data", "tokenize", "--tokenizer", str(tmp_path / "tok"), "--src", str(tmp_path / "ds"), "--out",
                 str(tokens), "--no-progress"]) == 0
    left = sorted(p.name for p in tokens.iterdir())
    assert not [n for n in left if ".tmp-" in n]
    assert {"shard-000000.tar", "shard-000001.tar", "dataset.json"} <= set(left)


def test_the_shared_atomic_helpers(tmp_path):
    """utils/atomic is the one place for write-then-rename: JSON results, folders several ranks write, and the
    cleanup of a killed run's temporaries for the names (or name prefixes) a task is about to redo."""
    from wm_video.utils.atomic import (
        atomic_write_json,
        clean_stale_temporaries,
        replace_folder,
        shared_temporary_path,
    )

    atomic_write_json(tmp_path / "r.json", {"a": 1})
    assert (tmp_path / "r.json").read_text() == '{\n  "a": 1\n}\n' and not list(tmp_path.glob(".*"))

    final = tmp_path / "ckpt"
    for version in ("old", "new"):
        tmp = shared_temporary_path(final)
        tmp.mkdir()
        (tmp / "v").write_text(version)
        replace_folder(tmp, final)
        assert (final / "v").read_text() == version and not tmp.exists()
    assert not final.with_name("ckpt.old").exists()

    work = tmp_path / "work"
    work.mkdir()
    live = os.getpid()  # a live PID: only an explicit name or prefix makes its temporary stale
    for name in ("a.frames", "a.npz", "b.npz", "shard-000001.tar"):
        (work / f".{name}.tmp-{live}").write_bytes(b"")
    removed = clean_stale_temporaries(work, names=["shard-000001.tar"], prefixes=["a."])
    assert sorted(p.name for p in removed) == [f".a.frames.tmp-{live}", f".a.npz.tmp-{live}",
                                               f".shard-000001.tar.tmp-{live}"]
    assert [p.name for p in work.iterdir()] == [f".b.npz.tmp-{live}"]
