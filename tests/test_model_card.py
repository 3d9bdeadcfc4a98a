"""Release and share: model cards (world model and parts), loading by hub repo id offline, push_to_hub.

No network: the "hub" is a folder in ``tmp_path`` laid out as huggingface_hub's cache (``models--owner--name/``
with ``blobs/``, ``snapshots/<commit>/`` linking to them and ``refs/main`` naming the commit), which
``snapshot_download`` reads under ``HF_HUB_OFFLINE=1``; ``HfApi``'s upload methods are replaced by
:class:`FakeHub`'s, which commit into that layout.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from fnmatch import fnmatch
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import yaml
from conftest import write_dataset
from huggingface_hub import HfApi, constants
from test_world_model import context, make_world_model

from wm_video.cli import main
from wm_video.evaluation import EvalConfig
from wm_video.evaluation.run import evaluate_folder
from wm_video.generation import WorldModelPipeline
from wm_video.models.card import MARKER
from wm_video.world_model import WorldModel

PLACEHOLDERS = ("[More Information Needed]", "PytorchModelHubMixin", "pushed to the Hub using")
PARTS = ("tokenizer", "dynamics", "decoder")


def front_matter(text: str) -> tuple[dict, str]:
    """A card's YAML metadata (parsed with yaml.safe_load) and its body."""
    assert text.startswith("---\n")
    meta, body = text[4:].split("\n---\n", 1)
    return yaml.safe_load(meta), body


def eval_section(card: str) -> str:
    """The card's "## Evaluation" section ("" when there is none)."""
    return card.partition("## Evaluation")[2].partition("\n## ")[0]


def files(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


class FakeHub:
    """The hub as huggingface_hub's cache layout in ``cache``: every commit a snapshot folder whose files link to
    content-addressed blobs, ``refs/main`` naming the last; ``uploads`` records what each upload sent."""

    def __init__(self, cache: Path) -> None:
        self.cache, self.uploads, self.created = cache, [], []

    def storage(self, repo_id: str) -> Path:
        return self.cache / f"models--{repo_id.replace('/', '--')}"

    def files(self, repo_id: str) -> dict[str, bytes]:
        ref = self.storage(repo_id) / "refs" / "main"
        return files(self.storage(repo_id) / "snapshots" / ref.read_text()) if ref.exists() else {}

    def commit(self, repo_id: str, content: dict[str, bytes]) -> str:
        """Make ``content`` (path -> bytes) the repo's main; returns the commit hash."""
        storage = self.storage(repo_id)
        commit = hashlib.sha1(json.dumps({k: hashlib.sha256(v).hexdigest() for k, v in sorted(content.items())}
                                         ).encode()).hexdigest()
        for name, data in content.items():
            blob = storage / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(parents=True, exist_ok=True)
            blob.write_bytes(data)
            link = storage / "snapshots" / commit / name
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(os.path.relpath(blob, link.parent))
        (storage / "refs").mkdir(parents=True, exist_ok=True)
        (storage / "refs" / "main").write_text(commit)
        return commit

    def install(self, monkeypatch: pytest.MonkeyPatch) -> None:
        hub = self

        def create_repo(api, repo_id, *, private=None, repo_type=None, exist_ok=False, **_):
            assert exist_ok and repo_type in (None, "model")
            hub.created.append(repo_id)
            return f"https://huggingface.co/{repo_id}"

        def upload_folder(api, *, repo_id, folder_path, commit_message=None, ignore_patterns=None,
                          delete_patterns=None, **_):
            sent = {k: v for k, v in files(Path(folder_path)).items()
                    if not any(fnmatch(k, p) for p in ignore_patterns or [])}
            kept = {k: v for k, v in hub.files(repo_id).items()
                    if not any(fnmatch(k, p) for p in delete_patterns or [])}
            commit = hub.commit(repo_id, {**kept, **sent})
            hub.uploads.append({"repo_id": repo_id, "files": sorted(sent), "message": commit_message})
            return SimpleNamespace(commit_url=f"https://huggingface.co/{repo_id}/commit/{commit}")

        def file_exists(api, repo_id, filename, *, revision=None, **_):
            return filename in hub.files(repo_id)

        def hf_hub_download(api, repo_id, filename, *, revision=None, **_):
            return str(hub.storage(repo_id) / "snapshots" / (hub.storage(repo_id) / "refs" / "main").read_text()
                       / filename)

        for name, fn in [("create_repo", create_repo), ("upload_folder", upload_folder), ("file_exists", file_exists),
                         ("hf_hub_download", hf_hub_download)]:
            monkeypatch.setattr(HfApi, name, fn)


@pytest.fixture
def hub(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # nothing may reach the network; read again at each call
    fake = FakeHub(tmp_path / "hub")
    fake.install(monkeypatch)
    return fake


def video(model: WorldModel) -> np.ndarray:
    return WorldModelPipeline(model)(context(b=1), np.array([0, 4]), num_inference_steps=2, maskgit_steps=2,
                                     generator=torch.Generator().manual_seed(3), show_progress=False).frames


def test_card_metadata_and_body_describe_the_model(tmp_path):
    wm = make_world_model()
    wm.info.source = {"data": "/cache/hub/datasets--lerobot--pusht/snapshots/abc/data",
                      "dataset": {"kind": "simulator", "env": "ALE/Breakout-v5"}}
    wm.save_pretrained(tmp_path / "wm")
    meta, body = front_matter((tmp_path / "wm" / "README.md").read_text())
    assert meta["library_name"] == "wm-video" and meta["license"] == "apache-2.0"
    assert {"world-model", "video-prediction", "discrete-actions", "ale-breakout-v5"} <= set(meta["tags"])
    assert meta["datasets"] == ["lerobot/pusht"]  # read from a hub cache path in the source
    assert MARKER in body and "32x32 pixels" in body and "discrete, 6 actions" in body and "8x8 = 64 tokens" in body
    for part in PARTS:  # parameters per part
        assert f"{sum(p.numel() for p in getattr(wm, part).parameters()):,}" in body
    assert 'WorldModel.from_pretrained("path/to/world_model")' in body
    assert "## Evaluation" not in body and "| h |" not in body  # no report, no table
    # the license is the index's: overridden once, it stays through load and save
    wm.save_pretrained(tmp_path / "wm", license="mit", datasets=["me/episodes"])
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.info.license == "mit" and loaded.info.datasets == ["me/episodes"]
    loaded.save_pretrained(tmp_path / "again")
    meta, _ = front_matter((tmp_path / "again" / "README.md").read_text())
    assert meta["license"] == "mit" and meta["datasets"] == ["me/episodes", "lerobot/pusht"]


def test_part_cards_replace_the_mixins_placeholder(tmp_path):
    wm = make_world_model()
    wm.save_pretrained(tmp_path / "wm")
    wm.tokenizer.save_pretrained(tmp_path / "tok")  # a part's own export (what 'wm-video export' of a part writes)
    for folder, part in [*((tmp_path / "wm" / p, p) for p in PARTS), (tmp_path / "tok", "tokenizer")]:
        text = (folder / "README.md").read_text()
        meta, body = front_matter(text)
        assert meta["library_name"] == "wm-video" and meta["license"] == "apache-2.0"
        assert "world-model" in meta["tags"] and f"wm-video-{part}" in meta["tags"]
        assert not [p for p in PLACEHOLDERS if p in text]
        assert f"# wm-video {part}" in body and ".from_pretrained(" in body and "parameters" in body
        assert ("part of a world model" in body) == (folder.parent.name == "wm")


def test_eval_table_comes_from_the_report_evaluated_into_the_folder(tmp_path, hub):
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=3, t=6, size=32)
    cfg = EvalConfig(horizon=3, context_frames=2, maskgit_steps=2, val_fraction=0.5)
    report, _ = evaluate_folder(tmp_path / "wm", tmp_path / "ds", cfg, tmp_path / "wm" / "eval", device="cpu")
    loaded = WorldModel.from_pretrained(tmp_path / "wm")  # the report is newer than the index: it is this model's
    assert loaded.info.evaluation["horizons"] == [1, 2, 3]
    loaded.push_to_hub("me/breakout")
    card = hub.files("me/breakout")["README.md"].decode()
    _, body = front_matter(card)
    assert "## Evaluation" in body and f"{report['clips']} held-out clips" in body
    header = next(line for line in body.splitlines() if line.startswith("| h |"))
    assert all(c in header for c in ("model", "copy last frame", "shuffled actions", "tokenizer ceiling"))
    res = report["results"]
    row1 = next(line for line in body.splitlines() if line.startswith("| 1 |"))
    assert f"{res['model']['psnr_db'][0]:.2f}" in row1 and f"{res['copy_last_frame']['psnr_db'][0]:.2f}" in row1
    assert "| 3 |" in body  # the last horizon
    # the summary travels in the index: the hub copy, loaded by repo id, renders the same table
    again = WorldModel.from_pretrained("me/breakout", cache_dir=tmp_path / "hub")
    again.save_pretrained(tmp_path / "copy")
    assert eval_section((tmp_path / "copy" / "README.md").read_text()) == eval_section(body)
    # a report older than the index scored what the folder held before: another model saved over it has no table
    make_world_model(decoder=False, depth=1).save_pretrained(tmp_path / "wm")
    t = (tmp_path / "wm" / "world_model.json").stat().st_mtime
    os.utime(tmp_path / "wm" / "eval" / "report.json", (t - 10, t - 10))
    assert WorldModel.from_pretrained(tmp_path / "wm").info.evaluation == {}
    assert (tmp_path / "wm" / "eval" / "report.json").exists()  # kept: save_pretrained does not own eval/
    # a report given to save_pretrained directly: its dict, or its file
    make_world_model(decoder=False).save_pretrained(tmp_path / "given", eval_report=tmp_path / "wm" / "eval")
    assert "## Evaluation" in (tmp_path / "given" / "README.md").read_text()
    with pytest.raises(ValueError, match="not a 'wm-video eval' report"):
        make_world_model(decoder=False).save_pretrained(tmp_path / "bad", eval_report={"results": {}})


def test_load_by_repo_id_from_the_offline_cache_equals_the_folder(tmp_path, hub, monkeypatch):
    wm = make_world_model()
    wm.save_pretrained(tmp_path / "wm")
    commit = hub.commit("owner/tiny-wm", files(tmp_path / "wm"))
    by_id = WorldModel.from_pretrained("owner/tiny-wm", cache_dir=tmp_path / "hub")
    by_commit = WorldModel.from_pretrained("owner/tiny-wm", cache_dir=tmp_path / "hub", revision=commit)
    assert by_id.fingerprints() == by_commit.fingerprints() == wm.fingerprints()
    assert np.array_equal(video(by_id), video(WorldModel.from_pretrained(tmp_path / "wm")))
    # a verb's --model takes the repo id too (the default hub cache here is the fake one)
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=1, t=4, size=32)
    assert main(["generate", "--model", "owner/tiny-wm", "--context", f"{tmp_path / 'ds'}#0", "--context-frames", "2",
                 "--num-frames", "2", "--out", str(tmp_path / "pred.mp4"), "--num-inference-steps", "1",
                 "--maskgit-steps", "1"]) == 0
    assert (tmp_path / "pred.mp4").stat().st_size > 0


def test_a_repo_not_in_the_cache_offline_fails_naming_it(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(FileNotFoundError, match=r"nobody/nothing.*not in the hub cache.*HF_HUB_OFFLINE"):
        WorldModel.from_pretrained("nobody/nothing", cache_dir=tmp_path)
    monkeypatch.delenv("HF_HUB_OFFLINE")
    with pytest.raises(FileNotFoundError, match=r"nobody/nothing.*offline \(local_files_only=True\)"):
        WorldModel.from_pretrained("nobody/nothing", cache_dir=tmp_path, local_files_only=True)
    with pytest.raises(FileNotFoundError, match="no such folder \\(nor a hub repo id"):
        WorldModel.from_pretrained(tmp_path / "missing")  # an absolute path is never a repo id: no hub call


def test_push_uploads_card_weights_and_index_and_round_trips(tmp_path, hub, caplog):
    wm = make_world_model()
    url = wm.push_to_hub("me/tiny-wm", license="mit")
    assert hub.created == ["me/tiny-wm"] and url.startswith("https://huggingface.co/me/tiny-wm/commit/")
    sent = hub.uploads[-1]["files"]
    assert sent == sorted(["README.md", "world_model.json", *(f"{p}/{f}" for p in PARTS
                                                               for f in ("README.md", "config.json",
                                                                         "model.safetensors"))])
    uploaded = hub.files("me/tiny-wm")
    meta, body = front_matter(uploaded["README.md"].decode())
    assert meta["license"] == "mit" and 'WorldModel.from_pretrained("me/tiny-wm")' in body and "# tiny-wm" in body
    loaded = WorldModel.from_pretrained("me/tiny-wm", cache_dir=tmp_path / "hub")
    assert loaded.fingerprints() == wm.fingerprints() and np.array_equal(video(loaded), video(wm))
    # pushing a model without a decoder removes the old decoder/ from the repo; files of others stay
    hub.commit("me/tiny-wm", {**hub.files("me/tiny-wm"), "notes.txt": b"mine"})
    make_world_model(decoder=False).push_to_hub("me/tiny-wm")
    after = hub.files("me/tiny-wm")
    assert not [k for k in after if k.startswith("decoder/")] and after["notes.txt"] == b"mine"
    assert WorldModel.from_pretrained("me/tiny-wm", cache_dir=tmp_path / "hub").decoder is None
    # a README on the hub that wm-video did not write is left as it is
    hub.commit("me/tiny-wm", {**hub.files("me/tiny-wm"), "README.md": b"# my own card\n"})
    with caplog.at_level(logging.WARNING):
        wm.push_to_hub("me/tiny-wm")
    assert hub.files("me/tiny-wm")["README.md"] == b"# my own card\n" and "README.md" not in hub.uploads[-1]["files"]
    assert "not written by wm-video" in caplog.text


def test_a_readme_the_project_did_not_write_is_kept(tmp_path, caplog):
    wm = make_world_model(decoder=False)
    (tmp_path / "wm").mkdir()
    (tmp_path / "wm" / "README.md").write_text("# notes of mine\n")
    with caplog.at_level(logging.WARNING):
        wm.save_pretrained(tmp_path / "wm", overwrite=True)  # a foreign folder: needs overwrite, keeps the README
    assert (tmp_path / "wm" / "README.md").read_text() == "# notes of mine\n"
    assert "not written by wm-video" in caplog.text
    assert (tmp_path / "wm" / "tokenizer" / "README.md").exists()
    # our card is rewritten on the next save; once its marker line is deleted (edited by hand), it is kept
    shutil.rmtree(tmp_path / "wm")
    wm.save_pretrained(tmp_path / "wm")
    card = tmp_path / "wm" / "README.md"
    card.write_text(card.read_text().replace("fps", "frames per second"))
    wm.save_pretrained(tmp_path / "wm")
    assert "frames per second" not in card.read_text()
    edited = card.read_text().replace(MARKER, "").replace("fps", "frames per second")
    card.write_text(edited)
    wm.save_pretrained(tmp_path / "wm")
    assert card.read_text() == edited
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wm"]  # no temporaries left


def test_an_index_with_a_bad_card_field_is_refused(tmp_path):
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    index_file = tmp_path / "wm" / "world_model.json"
    index_file.write_text(json.dumps({**json.loads(index_file.read_text()), "license": 3}))
    with pytest.raises(ValueError, match="field 'license' must be a str, got 3"):
        WorldModel.from_pretrained(tmp_path / "wm")


def test_push_verb_uploads_a_folder_with_its_card(tmp_path, hub, capsys):
    from wm_video.cli import main

    folder = make_world_model().save_pretrained(tmp_path / "wm")
    main(["push", "--model", str(folder), "--repo-id", "me/cli-wm", "--license", "mit"])
    assert "pushed" in capsys.readouterr().out and hub.created == ["me/cli-wm"]
    meta, _ = front_matter(hub.files("me/cli-wm")["README.md"].decode())
    assert meta["license"] == "mit" and meta["library_name"] == "wm-video"


def test_gym_env_loads_a_world_model_by_repo_id(tmp_path, hub, monkeypatch):
    from huggingface_hub import constants

    from wm_video.envs import WorldModelGymEnv

    make_world_model(decoder=False).push_to_hub("me/gym-wm")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    frames = np.random.default_rng(0).integers(0, 256, (4, 32, 32, 3), dtype=np.uint8)
    env = WorldModelGymEnv("me/gym-wm", context=frames, horizon=2, maskgit_steps=1)
    obs, _ = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and env.action_space.n == 6
    env.step(1)
