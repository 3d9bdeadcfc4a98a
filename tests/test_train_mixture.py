"""`wm-video train dynamics` on a mixture of token datasets whose action spaces differ: one model, one action domain
per dataset, validation per domain, exact resume, an export that assembles into a world model."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import write_dataset

from wm_video.cli import main
from wm_video.data.schema import ActionSpace, Clip, ClipMeta
from wm_video.data.writer import ShardWriter, finalize_dataset
from wm_video.models.dynamics import DynamicsModel
from wm_video.training.checkpointing import config_differences

SPACES = {"disc": ActionSpace("discrete", n=4), "cont": ActionSpace("continuous", dim=2, low=[-1, -3], high=[1, 3]),
          "video": ActionSpace("none")}
TOKENS = {"vocab_size": 16, "dtype": "uint8", "tokenizer": "synthetic", "frame_resolution": [32, 32],
          "tokens_per_frame": 16}


def write_tokens(root: Path, name: str, shards: int = 3, clips: int = 4, t: int = 6, grid: int = 4) -> None:
    """Token shards of one synthetic tokenizer (vocab 16, 4x4 grid) with ``SPACES[name]``'s actions: an object
    token walks the grid, moved by the action (discrete: its id, continuous: the sign of each dimension)."""
    rng = np.random.default_rng(len(name))
    root.mkdir(parents=True)
    paths = []
    for s in range(shards):
        path = root / f"shard-{s:06d}.tar"
        with ShardWriter(path, SPACES[name], "tokens") as w:
            for i in range(clips):
                frames = np.zeros((t, grid, grid), dtype=np.uint8)
                y, x, obj = *rng.integers(0, grid, size=2), int(rng.integers(1, 16))
                actions = {"disc": rng.integers(0, 4, size=t).astype(np.int64),
                           "cont": (rng.uniform(-1, 1, size=(t, 2)) * [1, 3]).astype(np.float32),
                           "video": None}[name]
                for k in range(t):
                    frames[k, y, x] = obj
                    dy, dx = ([(0, 1), (1, 0), (0, -1), (-1, 0)][actions[k]] if name == "disc" else
                              tuple(np.sign(actions[k]).astype(int)) if name == "cont" else (1, 0))
                    y, x = (y + dy) % grid, (x + dx) % grid
                rewards = terms = None
                if name != "video":
                    rewards = (rng.random(t) < 0.3).astype(np.float32)
                    terms = np.zeros(t, bool)
                    terms[-1] = i % 2 == 1
                meta = ClipMeta(episode_id=f"ep{s:03d}{i:03d}", clip_start=0, num_frames=t, fps=15.0, source="test",
                                fields=[])
                w.write(Clip(frames, meta, actions, rewards, terms))
            w.close()
        paths.append(path)
    finalize_dataset(root, paths, resolution=[grid, grid], fps=15.0, clip_len=t, storage="tokens",
                     action_space=SPACES[name], source={"kind": "test"}, tokens=TOKENS)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("mixdata")
    for name in SPACES:
        write_tokens(tmp / name, name)
    return tmp


def mixture_yaml(path: Path, data: Path, weights: tuple[float, ...] = (2, 2, 1)) -> Path:
    lines = ["kind: train_dynamics", "mixture:"]
    lines += [f"  - {{path: {data / name}, weight: {w}}}" for name, w in zip(SPACES, weights, strict=True)]
    path.write_text("\n".join(lines) + "\n")
    return path


def train(cfg: Path, out: Path, steps: int, *extra: str) -> int:
    return main(["train", "dynamics", "--preset", "debug", "--config", str(cfg), "--out", str(out),
                 "--max-steps", str(steps), "val_fraction=0.34", "trainer.val_check_interval=3",
                 "trainer.log_every_n_steps=1", "model.null_action_prob=0", *extra])


def test_mixture_trains_one_model_with_a_domain_per_dataset(tmp_path, data):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    cfg = mixture_yaml(tmp_path / "mix.yaml", data)
    assert train(cfg, tmp_path / "run", 6) == 0
    model = DynamicsModel.from_pretrained(tmp_path / "run" / "export")
    c = model.config
    assert (c.vocab_size, c.token_h, c.token_w, c.action_type) == (16, 4, 4, "none")
    domains = {d.name: d for d in c.domains}
    assert list(domains) == ["disc", "cont", "video"]
    assert (domains["disc"].action_type, domains["disc"].num_actions) == ("discrete", 4)
    assert (domains["cont"].action_type, domains["cont"].action_dim) == ("continuous", 2)
    assert domains["video"].action_type == "none"
    stats = json.loads((data / "cont" / "dataset.json").read_text())["stats"]["actions"]
    assert domains["cont"].action_mean == pytest.approx(stats["mean"])
    assert domains["cont"].action_std == pytest.approx(stats["std"])
    assert domains["cont"].action_std[1] > 2 * domains["cont"].action_std[0]  # each dimension its own scale

    # both action domains trained their own encoder: weights moved from a fresh model's (same seed, same init)
    ckpt = torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=True)
    assert ckpt["global_step"] == 6
    fresh = fresh_model(ckpt["hyper_parameters"]["config"]["model"])
    trained = model.state_dict()
    for name in ("disc", "cont"):
        keys = [k for k in trained if k.startswith(f"actions.encoders.{name}.")]
        assert keys, name
        assert any(not torch.equal(trained[k], fresh[k]) for k in keys), f"domain {name}: encoder never moved"

    tags = set(EventAccumulator(str(tmp_path / "run" / "tb")).Reload().Tags()["scalars"])
    for name in SPACES:
        assert {f"val/{name}/token_ce", f"val/{name}/tf_token_acc"} <= tags, name
    assert {"val/token_ce", "val/tf_token_acc", "train/token_ce"} <= tags
    summary = json.loads((tmp_path / "run" / "train_summary.json").read_text())
    assert summary["metrics"]["predicted_tokens"] > 0  # the quality gates scored the domains' held-out clips


def fresh_model(model_cfg: dict) -> dict:
    """A fresh model's weights as the run drew them (weights init from trainer.seed)."""
    import lightning as L

    from wm_video.config import load_config

    seed = load_config("train_dynamics", preset_name="debug").trainer.seed
    L.seed_everything(seed, verbose=False)
    return DynamicsModel(model_cfg).state_dict()


def test_multi_domain_export_assembles_into_a_world_model(tmp_path, data):
    from wm_video.models.tokenizer import TokenizerConfig, VQTokenizer
    from wm_video.world_model import WorldModel

    assert train(mixture_yaml(tmp_path / "mix.yaml", data), tmp_path / "run", 2) == 0
    tok = VQTokenizer(TokenizerConfig(resolution=32, downsample=8, base_channels=8, norm_groups=4, latent_channels=8,
                                      codebook_size=16, codebook_dim=4))  # a 4x4 grid of 16 codes, as the data
    tok.save_pretrained(tmp_path / "tok")
    assert main(["export", "--tokenizer", str(tmp_path / "tok"), "--dynamics", str(tmp_path / "run"),
                 "--data", str(data / "disc"), "--out", str(tmp_path / "wm")]) == 0
    index = json.loads((tmp_path / "wm" / "world_model.json").read_text())
    assert index["action_space"] == {"kind": "domains", "domains": {
        "disc": {"kind": "discrete", "n": 4}, "cont": {"kind": "continuous", "dim": 2, "low": [-1.0, -3.0],
                                                       "high": [1.0, 3.0]}, "video": {"kind": "none"}}}
    card = (tmp_path / "wm" / "README.md").read_text()
    assert ("3 action domains: disc: discrete, 4 actions; cont: continuous, 2 dims in [[-1.0, -3.0], [1.0, 3.0]]; "
            "video: none") in card
    wm = WorldModel.from_pretrained(tmp_path / "wm")
    assert wm.action_type == "none" and [d.name for d in wm.dynamics.config.domains] == list(SPACES)
    from wm_video.envs import WorldModelGymEnv

    with pytest.raises(ValueError, match="has 3 action domains"):  # one of them must be named (--domain)
        WorldModelGymEnv(wm, data=data / "disc")


def test_interrupted_mixture_run_resumes_exactly(tmp_path, data, capsys):
    cfg = mixture_yaml(tmp_path / "mix.yaml", data)
    every = ["trainer.checkpoint_every_n_steps=3", "trainer.keep_last_k=4"]
    assert train(cfg, tmp_path / "a", 6, *every) == 0
    assert train(cfg, tmp_path / "b", 6, *every) == 0
    # b is cut back to its step-3 checkpoint, as if killed after it (same max_steps: the same LR schedule)
    for name in ("last.ckpt", "step-00000006.ckpt"):
        (tmp_path / "b" / "checkpoints" / name).unlink()
    assert train(cfg, tmp_path / "b", 6, *every) == 0
    a = torch.load(tmp_path / "a" / "checkpoints" / "last.ckpt", weights_only=True)
    b = torch.load(tmp_path / "b" / "checkpoints" / "last.ckpt", weights_only=True)
    assert a["global_step"] == b["global_step"] == 6
    assert json.loads(a["rank_states"][0]) == json.loads(b["rank_states"][0])  # the same stream position
    assert json.loads(a["rank_states"][0])[0]["batches"] == 6  # the DomainMixLoader state, lookahead taken off
    for k, v in a["state_dict"].items():
        torch.testing.assert_close(b["state_dict"][k], v, msg=k)  # the same batches, domains, in the same order

    # the run config's resume check covers the mixture: other sources are refused, new weights are taken
    swapped = tmp_path / "swapped.yaml"
    swapped.write_text("kind: train_dynamics\nmixture:\n" + "".join(
        f"  - {{path: {data / name}}}\n" for name in ("cont", "disc", "video")))
    assert train(swapped, tmp_path / "b", 6, *every) == 2
    assert "mixture.0.path: checkpoint" in capsys.readouterr().err
    assert train(mixture_yaml(tmp_path / "reweighted.yaml", data, (1, 1, 3)), tmp_path / "b", 6, *every) == 0


def test_resume_refuses_other_sources_but_takes_new_weights(tmp_path):
    base = {"model": {}, "mixture": [{"path": "a", "weight": 1.0, "domain": None},
                                     {"path": "b", "weight": 1.0, "domain": None}]}
    reweighted = {"model": {}, "mixture": [{**base["mixture"][0], "weight": 3.0}, base["mixture"][1]]}
    assert config_differences(base, reweighted) == []
    other = {"model": {}, "mixture": [base["mixture"][0], {**base["mixture"][1], "path": "c"}]}
    assert config_differences(base, other) == ["mixture.1.path: checkpoint 'b', now 'c'"]
    assert config_differences({"model": {}}, {"model": {"domains": []}, "mixture": []}) == []  # older checkpoints


def test_bad_mixture_configs_are_clear_errors(tmp_path, data, capsys):
    cfg = mixture_yaml(tmp_path / "mix.yaml", data)
    assert main(["train", "dynamics", "--preset", "debug", "--config", str(cfg), "--data", str(data / "disc"),
                 "--out", str(tmp_path / "run")]) == 2
    assert "both name the training data" in capsys.readouterr().err
    # a dotted override sets the mixture too
    assert main(["train", "dynamics", "--preset", "debug", "--data", str(data / "disc"), "--out", str(tmp_path / "run"),
                 f"mixture=[{{path: {data / 'cont'}, weight: 2}}]"]) == 2
    assert "both name the training data" in capsys.readouterr().err
    assert main(["train", "dynamics", "--preset", "debug", "--out", str(tmp_path / "run")]) == 2
    assert "--data is required" in capsys.readouterr().err
    write_dataset(tmp_path / "frames", shards=2, clips_per_shard=2)
    (tmp_path / "frames.yaml").write_text(f"kind: train_dynamics\nmixture:\n  - {{path: {tmp_path / 'frames'}}}\n")
    assert main(["train", "dynamics", "--preset", "debug", "--config", str(tmp_path / "frames.yaml"),
                 "--out", str(tmp_path / "run2")]) == 2
    assert "not tokens: tokenize it first" in capsys.readouterr().err
    (tmp_path / "mixed.yaml").write_text(f"kind: train_dynamics\nmixture:\n  - {{path: {data / 'disc'}}}\n"
                                         f"  - {{path: {tmp_path / 'frames'}}}\n")
    assert main(["train", "dynamics", "--preset", "debug", "--config", str(tmp_path / "mixed.yaml"),
                 "--out", str(tmp_path / "run3")]) == 2
    err = capsys.readouterr().err
    assert "mixture source 1" in err and "frame_storage" in err
