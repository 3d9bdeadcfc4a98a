"""The bad-input matrix: every broken or hostile file a verb reads ends in exit status 2 and one
``wm-video: error:`` line naming the file (and field), never a traceback (the traceback only behind ``-v``).

Each case copies a tiny valid world model (or checkpoint, context, actions file), breaks it in one way and runs
the real CLI in-process; two cases run ``python -m wm_video`` in a subprocess, as a user would."""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset
from PIL import Image
from test_world_model import make_world_model

from wm_video.cli import main


class NotPlainValue:
    """Pickled into a checkpoint, it is code to run, not a plain value: ``weights_only`` loading refuses it."""


def png_header(w: int, h: int) -> bytes:
    """A PNG whose header says ``w x h`` with almost no pixel data: opening reads the size, decoding would fail."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\0" * 16)) + chunk(b"IEND", b""))


@pytest.fixture(scope="module")
def valid(tmp_path_factory, one_thread) -> Path:
    """``wm/`` (tiny world model with a decoder, discrete actions), ``ctx/`` (two 32x32 PNGs), ``acts.npy``."""
    root = tmp_path_factory.mktemp("valid")
    make_world_model().save_pretrained(root / "wm")
    (root / "ctx").mkdir()
    rng = np.random.default_rng(0)
    for i in range(2):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(root / "ctx" / f"{i}.png")
    np.save(root / "acts.npy", np.array([1, 2], dtype=np.int64))
    return root


def edit_json(file: Path, **changes) -> None:
    data = json.loads(file.read_text())
    data.update(changes)
    file.write_text(json.dumps(data))


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def edit_parts(tmp: Path, **parts) -> None:
    index = tmp / "wm" / "world_model.json"
    edit_json(index, parts={**json.loads(index.read_text())["parts"], **parts})


def outside_part(tmp: Path) -> Path:
    """A valid tokenizer export outside the world model's folder."""
    shutil.copytree(tmp / "wm" / "tokenizer", tmp / "elsewhere")
    return tmp / "elsewhere"


def link_out(tmp: Path) -> None:
    os.symlink(outside_part(tmp), tmp / "wm" / "tok_link")
    edit_parts(tmp, tokenizer="tok_link")


def wrong_size_dataset(tmp: Path) -> None:
    write_dataset(tmp / "ds", shards=1, clips_per_shard=1, t=4, size=16)
    edit_json(tmp / "ds" / "dataset.json", resolution=[32, 32])  # its frames are 16x16


def write(rel: str, text: str | bytes) -> Callable[[Path], None]:
    def brk(tmp: Path) -> None:
        if isinstance(text, bytes):
            (tmp / rel).write_bytes(text)
        else:
            (tmp / rel).write_text(text)
    return brk


def set_fields(rel: str, **changes) -> Callable[[Path], None]:
    return lambda tmp: edit_json(tmp / rel, **changes)


def cut(rel: str) -> Callable[[Path], None]:
    return lambda tmp: truncate(tmp / rel)


def save(rel: str, obj) -> Callable[[Path], None]:
    """``obj`` saved to ``rel``: an array with numpy (``.npy``), anything else with torch."""
    return lambda tmp: np.save(tmp / rel, obj) if rel.endswith(".npy") else torch.save(obj, tmp / rel)


def save_truncated_ckpt(tmp: Path) -> None:
    torch.save({"state_dict": {"w": torch.zeros(256)}, "global_step": 1}, tmp / "x.ckpt")
    truncate(tmp / "x.ckpt")


def escape_to(name: str) -> Callable[[Path], None]:
    def brk(tmp: Path) -> None:
        outside = outside_part(tmp)
        edit_parts(tmp, tokenizer=str(outside) if name == "absolute" else name)
    return brk


TOK, DYN, DEC, INDEX = "wm/tokenizer", "wm/dynamics", "wm/decoder", "wm/world_model.json"
SHAPE, CONF = "model.safetensors", "config.json"
UNREADABLE_WEIGHTS, NOT_OBJECT = "not a readable safetensors file", "expected a JSON object"
INSIDE = "field 'parts.tokenizer' must name a folder inside"
# id -> (break the valid copy in tmp, the file the error names (relative to tmp), a phrase of the error, the verb run)
CASES: dict[str, tuple[Callable[[Path], None], str, str, str]] = {
    # exported parts: weights
    "tokenizer weights truncated": (cut(f"{TOK}/{SHAPE}"), f"{TOK}/{SHAPE}", UNREADABLE_WEIGHTS, "generate"),
    "dynamics weights plain text": (write(f"{DYN}/{SHAPE}", "hello"), f"{DYN}/{SHAPE}", UNREADABLE_WEIGHTS, "generate"),
    "decoder weights empty": (write(f"{DEC}/{SHAPE}", b""), f"{DEC}/{SHAPE}", UNREADABLE_WEIGHTS, "generate"),
    # exported parts: config.json against the weights
    "dynamics width not the weights'": (set_fields(f"{DYN}/{CONF}", width=64), f"{DYN}/{SHAPE}",
                                        "weights of another shape", "generate"),
    "dynamics depth not the weights'": (set_fields(f"{DYN}/{CONF}", depth=3), f"{DYN}/{CONF}", "weights missing",
                                        "generate"),
    "tokenizer channels not the weights'": (set_fields(f"{TOK}/{CONF}", base_channels=16), f"{TOK}/{CONF}",
                                            "weights of another shape", "generate"),
    # exported parts: config.json not a JSON object, or with sizes <= 0
    "tokenizer config a list": (write(f"{TOK}/{CONF}", "[1, 2]"), f"{TOK}/{CONF}", NOT_OBJECT, "generate"),
    "dynamics config a number": (write(f"{DYN}/{CONF}", "5"), f"{DYN}/{CONF}", NOT_OBJECT, "generate"),
    "decoder config invalid JSON": (write(f"{DEC}/{CONF}", '{"block_channels": '), f"{DEC}/{CONF}",
                                    "not a readable JSON file", "generate"),
    "dynamics width -1": (set_fields(f"{DYN}/{CONF}", width=-1), f"{DYN}/{CONF}", "field 'width' must be >= 1",
                          "generate"),
    "dynamics depth 0": (set_fields(f"{DYN}/{CONF}", depth=0), f"{DYN}/{CONF}", "field 'depth' must be >= 1",
                         "generate"),
    "decoder layers 0": (set_fields(f"{DEC}/{CONF}", layers_per_block=0), f"{DEC}/{CONF}",
                         "field 'layers_per_block' must be >= 1", "generate"),
    "dynamics width a string": (set_fields(f"{DYN}/{CONF}", width="wide"), f"{DYN}/{CONF}",
                                "field 'width' must be a number, got 'wide'", "generate"),
    # world_model.json
    "index a list": (write(INDEX, "[]"), INDEX, NOT_OBJECT, "generate"),
    "index invalid JSON": (write(INDEX, "{parts: tokenizer}"), INDEX, "not a readable JSON file", "generate"),
    "index without resolution": (set_fields(INDEX, resolution=None), INDEX, "field 'resolution'", "generate"),
    "parts a string": (set_fields(INDEX, parts="tokenizer"), INDEX, "field 'parts' must be an object", "generate"),
    "part ../../etc": (lambda t: edit_parts(t, tokenizer="../../etc"), INDEX, INSIDE, "generate"),
    "part absolute path": (escape_to("absolute"), INDEX, INSIDE, "generate"),
    "part ../ to a valid export": (escape_to("../elsewhere"), INDEX, INSIDE, "generate"),
    "part linked out": (link_out, INDEX, INSIDE, "generate"),
    # context images and frames
    "image over PIL's limit": (write("ctx/1.png", png_header(20_000, 20_000)), "ctx/1.png", "exceeds limit",
                               "generate"),
    "image 8k x 8k": (write("ctx/1.png", png_header(8192, 8192)), "ctx/1.png", "8192x8192 pixels", "generate"),
    "image truncated": (cut("ctx/1.png"), "ctx/1.png", "unreadable image", "generate"),
    "dataset frames of the wrong size": (wrong_size_dataset, "ds", "frames of shape (16, 16, 3)", "generate-ds"),
    # action files
    "actions 0-d": (save("acts.npy", np.array(3)), "acts.npy", "shape ()", "generate"),
    "actions strings": (save("acts.npy", np.array(["up", "down"])), "acts.npy", "dtype <U4", "generate"),
    "actions 3-d": (save("acts.npy", np.zeros((2, 1, 1))), "acts.npy", "shape (2, 1, 1)", "generate"),
    "actions pickled": (save("acts.npy", np.array([{}, {}], dtype=object)), "acts.npy", "unreadable", "generate"),
    "actions truncated": (cut("acts.npy"), "acts.npy", "unreadable", "generate"),
    "actions fractional ids": (save("acts.npy", np.array([0.5, 1.0])), "acts.npy", "got 0.5 at step 0", "generate"),
    # training checkpoints
    "ckpt plain text": (write("x.ckpt", "not a checkpoint\n"), "x.ckpt", "not a torch checkpoint", "export"),
    "ckpt truncated": (save_truncated_ckpt, "x.ckpt", "truncated or not one (PytorchStreamReader failed reading zip "
                       "archive: failed finding central directory.)", "export"),
    "ckpt pickled object": (save("x.ckpt", {"state_dict": {}, "hyper_parameters": NotPlainValue()}), "x.ckpt",
                            "pickled Python object (test_bad_files.NotPlainValue)", "export"),
    "ckpt a bare tensor": (save("x.ckpt", torch.zeros(3)), "x.ckpt", "no 'state_dict'", "export"),
    # a config built from YAML
    "yaml decoder layers 0": (write("bad.yaml", "kind: train_decoder\nmodel: {layers_per_block: 0}\n"), "bad.yaml",
                              "field 'layers_per_block' must be >= 1", "config"),
}


def command(verb: str, tmp: Path) -> list[str]:
    acts = ["--actions", str(tmp / "acts.npy"), "--num-frames", "2"]
    if verb == "generate":
        return ["generate", "--model", str(tmp / "wm"), "--context", str(tmp / "ctx"), "--context-frames", "2", *acts,
                "--out", str(tmp / "out.mp4"), "--num-inference-steps", "1", "--maskgit-steps", "1"]
    if verb == "generate-ds":
        return ["generate", "--model", str(tmp / "wm"), "--context", str(tmp / "ds"), "--context-frames", "2", *acts,
                "--out", str(tmp / "out.mp4")]
    if verb == "export":
        return ["export", "--checkpoint", str(tmp / "x.ckpt"), "--out", str(tmp / "export")]
    return ["config", "show", "--config", str(tmp / "bad.yaml")]


def copy_valid(valid: Path, tmp: Path) -> None:
    for name in ("wm", "ctx"):
        shutil.copytree(valid / name, tmp / name)
    shutil.copy(valid / "acts.npy", tmp / "acts.npy")


def prepare(valid: Path, tmp: Path, case: str) -> list[str]:
    copy_valid(valid, tmp)
    brk, _, _, verb = CASES[case]
    brk(tmp)
    return command(verb, tmp)


def check_one_error_line(rc: int, err: str, tmp: Path, case: str) -> None:
    _, file, phrase, _ = CASES[case]
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if ln.startswith("wm-video: error:")]
    assert rc == 2 and len(lines) == 1, err
    assert str(tmp / file) in lines[0] and phrase in lines[0], lines[0]
    assert not (tmp / "out.mp4").exists()


@pytest.mark.parametrize("case", list(CASES))
def test_bad_file_is_one_error_line(valid, tmp_path, capsys, case):
    argv = prepare(valid, tmp_path, case)
    capsys.readouterr()
    rc = main(argv)
    check_one_error_line(rc, capsys.readouterr().err, tmp_path, case)


@pytest.mark.parametrize("case", ["part ../../etc", "ckpt pickled object"])
def test_bad_file_from_the_command_line(valid, tmp_path, case):
    argv = prepare(valid, tmp_path, case)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.run([sys.executable, "-m", "wm_video", *argv], capture_output=True, text=True, env=env,
                          timeout=300)
    check_one_error_line(proc.returncode, proc.stderr, tmp_path, case)


def test_verbose_shows_the_traceback(valid, tmp_path):
    argv = prepare(valid, tmp_path, "actions 0-d")
    with pytest.raises(ValueError, match=r"acts\.npy: a single value"):
        main(["-v", *argv])


def test_the_valid_copy_generates(valid, tmp_path):
    """The matrix's baseline: the unbroken copy runs to the end, so each case fails by its one break."""
    copy_valid(valid, tmp_path)
    assert main(command("generate", tmp_path)) == 0 and (tmp_path / "out.mp4").exists()
