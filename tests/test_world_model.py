"""WorldModel, WorldModelEnv and the generation pipeline end to end on tiny random models."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import write_dataset
from test_decoder import make_decoder, make_tokenizer

from wm_video.cli import main
from wm_video.generation import WorldModelPipeline
from wm_video.generation.inputs import load_actions, load_context
from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.utils.video_io import read_video, write_mp4
from wm_video.world_model import RenderSettings, WorldModel, WorldModelInfo
from wm_video.world_model_env import WorldModelEnv


def make_world_model(decoder: bool = True, vocab: int = 32, **dyn) -> WorldModel:
    tok = make_tokenizer()
    torch.manual_seed(0)
    cfg = DynamicsConfig(**{**dict(vocab_size=vocab, token_h=8, token_w=8, context_frames=4, width=32, depth=2,
                                   heads=2, cond_dim=16, num_actions=6, reward_bins=17), **dyn})
    dec = make_decoder(tok, prev_frame=True) if decoder else None
    info = WorldModelInfo(resolution=32, fps=10.0, action_space={"kind": "discrete", "n": 6})
    return WorldModel(tok, DynamicsModel(cfg), dec, info)


def context(b: int = 2, t: int = 3, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (b, t, 3, 32, 32), generator=g, dtype=torch.uint8)


def test_env_steps_a_batch_and_renders():
    env = WorldModelEnv(make_world_model(), maskgit_steps=2, render=RenderSettings(num_inference_steps=1),
                        generator=torch.Generator().manual_seed(0))
    tokens = env.reset(context(), torch.tensor([[1, 2], [3, 4]]))
    assert tokens.shape == (2, 3, 8, 8)
    out = env.step(torch.tensor([0, 5]))
    assert out.frames.shape == (2, 3, 32, 32) and out.frames.abs().max() <= 1
    assert out.tokens.shape == (2, 8, 8) and out.rewards.shape == (2,)
    assert ((out.terminations >= 0) & (out.terminations <= 1)).all()
    with pytest.raises(ValueError, match=r"ids must be in \[0, 6\)"):
        env.step(torch.tensor([0, 9]))
    blind = WorldModelEnv(make_world_model(), maskgit_steps=2, render=False)
    blind.reset(context())
    assert blind.step(torch.tensor([0, 1])).frames is None


def test_pipeline_is_deterministic_under_a_seed_and_sensitive_to_it():
    pipe = WorldModelPipeline(make_world_model())

    def run(seed):
        return pipe(context(b=1), np.array([1, 2, 3]), num_inference_steps=1, maskgit_steps=2,
                    generator=torch.Generator().manual_seed(seed), show_progress=False)

    a, b, c = run(0), run(0), run(1)
    assert a.frames.shape == (1, 3, 32, 32, 3) and a.frames.dtype == np.uint8
    assert a.rewards.shape == (1, 3) and a.tokens.shape == (1, 3, 8, 8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.tokens, b.tokens)
    assert not np.array_equal(a.tokens, c.tokens)
    pt = pipe(context(b=1), np.array([1, 2, 3]), num_inference_steps=1, maskgit_steps=2, output_type="pt",
              generator=torch.Generator().manual_seed(0), show_progress=False)
    assert pt.frames.shape == (1, 3, 3, 32, 32) and torch.is_tensor(pt.frames)


def test_save_load_reproduces_the_same_video(tmp_path):
    wm = make_world_model()
    wm.save_pretrained(tmp_path / "wm")
    assert {p.name for p in (tmp_path / "wm").iterdir()} >= {"tokenizer", "dynamics", "decoder", "world_model.json"}
    index = json.loads((tmp_path / "wm" / "world_model.json").read_text())
    assert index["fps"] == 10.0 and index["action_space"] == {"kind": "discrete", "n": 6}
    assert set(index["versions"]) == {"wm_video", "torch", "diffusers"}
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    videos = [WorldModelPipeline(m)(context(b=1), np.array([0, 4]), num_inference_steps=2, maskgit_steps=2,
                                    generator=torch.Generator().manual_seed(3), show_progress=False).frames
              for m in (wm, loaded)]
    assert np.array_equal(*videos)
    # saving again over an existing folder replaces it whole, leaving no temporary folders behind
    loaded.save_pretrained(tmp_path / "wm")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["wm"]


def test_parts_that_do_not_fit_are_refused(tmp_path):
    with pytest.raises(ValueError, match="vocab_size: tokenizer 32, dynamics 64"):
        make_world_model(vocab=64)
    with pytest.raises(ValueError, match="different weights"):
        WorldModel(make_tokenizer(seed=1), make_world_model().dynamics, make_decoder(make_tokenizer()))
    make_tokenizer().save_pretrained(tmp_path / "tok")
    with pytest.raises(FileNotFoundError, match="single part's export"):
        WorldModel.from_pretrained(tmp_path / "tok")


@pytest.mark.parametrize("part", ["tokenizer", "dynamics"])
def test_a_part_swapped_after_export_is_refused_without_a_decoder(tmp_path, part):
    wm = make_world_model(decoder=False)
    wm.save_pretrained(tmp_path / "wm")
    other = make_world_model(decoder=False)
    getattr(other, part).load_state_dict({k: v + 0.01 if v.is_floating_point() else v
                                          for k, v in getattr(other, part).state_dict().items()})
    getattr(other, part).save_pretrained(tmp_path / "wm" / part)  # same shapes, other weights
    with pytest.raises(ValueError, match=f"'fingerprints.{part}' does not match"):
        WorldModel.from_pretrained(tmp_path / "wm")


def test_an_index_without_fingerprints_is_refused(tmp_path):
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    index_file = tmp_path / "wm" / "world_model.json"
    index = json.loads(index_file.read_text())
    del index["fingerprints"]
    index_file.write_text(json.dumps(index))
    with pytest.raises(ValueError, match=r"field 'fingerprints' must give a fingerprint.*wm-video export"):
        WorldModel.from_pretrained(tmp_path / "wm")


def test_context_inputs_video_images_and_dataset_clip(tmp_path):
    from PIL import Image

    frames = context(b=1, t=5)[0].permute(0, 2, 3, 1).numpy()  # (t, h, w, 3)
    write_mp4(np.kron(frames, np.ones((1, 2, 2, 1), np.uint8)), tmp_path / "c.mp4", fps=10)  # 64x64 file
    ctx = load_context(str(tmp_path / "c.mp4"), 32, 3)
    assert ctx.frames.shape == (3, 32, 32, 3) and ctx.frames.dtype == np.uint8
    (tmp_path / "imgs").mkdir()
    for i, f in enumerate(frames):
        Image.fromarray(f).save(tmp_path / "imgs" / f"{i:03d}.png")
    ctx = load_context(str(tmp_path / "imgs"), 32, 4)
    assert np.array_equal(ctx.frames, frames[1:])  # the last 4, lossless
    clips = write_dataset(tmp_path / "ds", shards=2, clips_per_shard=2, t=6, size=32)
    ctx = load_context(f"{tmp_path / 'ds'}#2", 32, 2)
    assert np.array_equal(ctx.frames, clips[2].frames[:2]) and np.array_equal(ctx.future, clips[2].frames[2:])
    assert np.array_equal(ctx.actions, clips[2].actions)


def test_bad_context_and_actions_are_named_before_any_work(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"not a video at all")
    with pytest.raises(ValueError, match=r"broken\.mp4: unreadable video"):
        load_context(str(tmp_path / "broken.mp4"), 32, 2)
    write_mp4(context(b=1, t=2)[0].permute(0, 2, 3, 1).numpy(), tmp_path / "short.mp4", fps=10)
    with pytest.raises(ValueError, match=r"short\.mp4: has 2 frames, the generation needs 4"):
        load_context(str(tmp_path / "short.mp4"), 32, 4)
    write_dataset(tmp_path / "ds16", shards=1, clips_per_shard=1, t=4, size=16)
    with pytest.raises(ValueError, match="frames are 16x16, the model needs 32x32"):
        load_context(str(tmp_path / "ds16"), 32, 2)
    np.save(tmp_path / "a.npy", np.array([0, 1, 2]))
    with pytest.raises(ValueError, match=r"a\.npy: 3 steps, the generation needs 5"):
        load_actions(str(tmp_path / "a.npy"), 5, "discrete", 6)
    (tmp_path / "a.json").write_text(json.dumps([[0.1, 0.2], [0.3, float("nan")]]))
    with pytest.raises(ValueError, match=r"a\.json: NaN or infinite value at \[1, 1\]"):
        load_actions(str(tmp_path / "a.json"), 2, "continuous", action_dim=2)
    (tmp_path / "a.csv").write_text("x,y,z\n0.1,0.2,0.3\n0.4,0.5,0.6\n")
    with pytest.raises(ValueError, match=r"expected shape \(2, 2\)"):
        load_actions(str(tmp_path / "a.csv"), 2, "continuous", action_dim=2)
    assert load_actions(str(tmp_path / "a.csv"), 2, "continuous", action_dim=3).shape == (2, 3)
    (tmp_path / "d.csv").write_text("action\n1\n2\n")
    assert load_actions(str(tmp_path / "d.csv"), 2, "discrete", 6).tolist() == [1, 2]


def test_generate_cli_writes_mp4_gif_and_trace(tmp_path):
    make_world_model().save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=2, t=8, size=32)
    out = tmp_path / "pred.mp4"
    assert main(["generate", "--model", str(tmp_path / "wm"), "--context", f"{tmp_path / 'ds'}#1",
                 "--context-frames", "2", "--num-frames", "4", "--out", str(out), "--gif", "--side-by-side",
                 "--num-inference-steps", "1", "--maskgit-steps", "2", "--scale", "2"]) == 0
    video = read_video(out)
    assert video.shape[0] == 6 and video.shape[2] > 2 * 64  # 2 context + 4 predicted, truth beside
    trace = json.loads(out.with_suffix(".json").read_text())
    assert len(trace["steps"]) == 4 and {"reward", "termination_prob", "action"} <= set(trace["steps"][0])
    assert out.with_suffix(".gif").stat().st_size > 0
    np.save(tmp_path / "bad.npy", np.array([0, 1, 99, 2]))
    assert main(["generate", "--model", str(tmp_path / "wm"), "--context", f"{tmp_path / 'ds'}#1",
                 "--actions", str(tmp_path / "bad.npy"), "--num-frames", "4", "--out", str(tmp_path / "x.mp4")]) == 2
    assert not (tmp_path / "x.mp4").exists()


def test_eval_cli_scores_horizons_with_baselines_and_writes_the_report(tmp_path, capsys):
    make_world_model(decoder=False).save_pretrained(tmp_path / "wm")
    write_dataset(tmp_path / "ds", shards=2, clips_per_shard=3, t=6, size=32)
    out = tmp_path / "eval"
    assert main(["eval", "--model", str(tmp_path / "wm"), "--data", str(tmp_path / "ds"), "--horizon", "3",
                 "--context-frames", "2", "--out", str(out), "--maskgit-steps", "2", "--val-fraction", "0.5"]) == 0
    report = json.loads((out / "report.json").read_text())
    assert report["clips"] == 3 and report["horizons"] == [1, 2, 3]
    res = report["results"]
    assert set(res) == {"model", "copy_last_frame", "shuffled_actions", "null_actions", "tokenizer_ceiling"}
    assert all(len(res["model"][k]) == 3 for k in ("psnr_db", "ssim", "token_accuracy", "reward_mae", "psnr_moving_db",
                                                   "changed_token_accuracy",
                                                   "termination_precision", "termination_recall"))
    # copy-last-frame's token accuracy is exactly the share of tokens equal to the last context frame's
    assert all(0 <= v <= 1 for v in res["copy_last_frame"]["token_accuracy"])
    assert report["protocol"]["horizon"] == 3 and report["protocol"]["decoder"] == "vq"
    assert (out / "psnr_db.png").read_bytes()[:4] == b"\x89PNG" and "## PSNR (dB)" in (out / "report.md").read_text()
    assert main(["eval", "--model", str(tmp_path / "wm"), "--data", str(tmp_path / "ds"), "--horizon", "9",
                 "--out", str(out), "--val-fraction", "0.5"]) == 2
    assert "no held-out clip has the 13 frames" in capsys.readouterr().err


def test_export_assembles_a_world_model_from_part_and_run_folders(tmp_path, capsys):
    wm = make_world_model()
    wm.tokenizer.save_pretrained(tmp_path / "tok")  # an export folder
    wm.dynamics.save_pretrained(tmp_path / "dyn_run" / "export")  # a run folder
    wm.decoder.save_pretrained(tmp_path / "dec")
    write_dataset(tmp_path / "ds", shards=1, clips_per_shard=1, t=4, size=32)
    args = ["export", "--tokenizer", str(tmp_path / "tok"), "--dynamics", str(tmp_path / "dyn_run"),
            "--out", str(tmp_path / "wm")]
    assert main([*args, "--decoder", str(tmp_path / "dec"), "--data", str(tmp_path / "ds")]) == 0
    loaded = WorldModel.from_pretrained(tmp_path / "wm")
    assert loaded.decoder is not None and loaded.info.action_space == {"kind": "discrete", "n": 6}
    index = json.loads((tmp_path / "wm" / "world_model.json").read_text())
    assert index["stats"]["actions"] and index["source"]["data"] == str(tmp_path / "ds")
    make_tokenizer(seed=1).save_pretrained(tmp_path / "tok_other")
    capsys.readouterr()
    assert main(["export", "--tokenizer", str(tmp_path / "tok_other"), "--dynamics", str(tmp_path / "dyn_run"),
                 "--decoder", str(tmp_path / "dec"), "--out", str(tmp_path / "wm2")]) == 2
    assert "different weights" in capsys.readouterr().err and not (tmp_path / "wm2").exists()
    assert main(["export", "--tokenizer", str(tmp_path / "tok"), "--out", str(tmp_path / "wm3")]) == 2


def test_render_settings_a_model_has_no_use_for_warn_once_and_are_ignored():
    import warnings

    vq = make_world_model(decoder=False)
    tokens = vq.encode(context(b=1, t=1))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        plain = vq.decode(tokens)  # no settings: nothing to warn about
        for _ in range(2):
            asked = vq.decode(tokens, render=RenderSettings(num_inference_steps=4))
    assert [str(w.message) for w in caught] == [
        "render settings: num_inference_steps=4 is ignored: this world model has no diffusion decoder (frames come "
        "from the tokenizer's VQ decoder)"]
    assert torch.equal(asked, plain)
    with pytest.warns(UserWarning, match="keep_still=False is ignored: this world model renders with its diffusion"):
        make_world_model().decode(tokens, render=RenderSettings(keep_still=False))
    with pytest.raises(TypeError, match="render: expected True, False or a RenderSettings, got int"):
        WorldModelEnv(vq, render=4)
