"""Rendering with a patch-local tokenizer keeps the previous frame's pixels where a token did not change."""

from __future__ import annotations

import torch
from test_decoder import make_tokenizer
from test_world_model import context

from wm_video.models.dynamics import DynamicsConfig, DynamicsModel
from wm_video.models.tokenizer.model import to_model_frames
from wm_video.world_model import RenderSettings, WorldModel, WorldModelInfo, keep_still_patches
from wm_video.world_model_env import WorldModelEnv


def patch_world_model(encoder: str = "patch") -> WorldModel:
    tok = make_tokenizer(encoder=encoder)
    torch.manual_seed(0)
    cfg = DynamicsConfig(vocab_size=tok.vocab_size, token_h=8, token_w=8, context_frames=4, width=32, depth=2,
                         heads=2, cond_dim=16, num_actions=6)
    return WorldModel(tok, DynamicsModel(cfg), None, WorldModelInfo(resolution=32,
                                                                     action_space={"kind": "discrete", "n": 6}))


def test_keep_still_patches_on_a_hand_made_case():
    prev = torch.zeros(1, 3, 4, 4)
    drawn = torch.ones(1, 2, 3, 4, 4)
    prev_tokens = torch.tensor([[[1, 2], [3, 4]]])
    tokens = torch.tensor([[[[1, 9], [3, 4]], [[1, 9], [7, 4]]]])  # frame 0 changes cell (0,1); frame 1 cell (1,0)
    out = keep_still_patches(drawn, tokens, prev, prev_tokens)
    expect0 = torch.zeros(3, 4, 4)
    expect0[:, 0:2, 2:4] = 1
    assert torch.equal(out[0, 0], expect0)
    expect1 = expect0.clone()  # cell (0,1) kept from frame 0 (already drawn), cell (1,0) drawn now
    expect1[:, 2:4, 0:2] = 1
    assert torch.equal(out[0, 1], expect1)


def test_a_patch_tokenizer_world_model_keeps_still_patches_and_can_be_told_not_to():
    wm = patch_world_model()
    assert wm.keeps_still_patches and not patch_world_model("conv").keeps_still_patches
    x = context(b=1, t=1)
    tokens = wm.encode(x)  # (1, 1, 8, 8)
    changed = tokens.clone()
    changed[0, 0, 2, 3] = (changed[0, 0, 2, 3] + 1) % wm.tokenizer.vocab_size
    out = wm.decode(changed, x[:, 0], prev_tokens=tokens[:, 0])
    drawn = wm.tokenizer.detokenize(changed).clamp(-1, 1)
    keep = torch.ones(32, 32, dtype=torch.bool)
    keep[8:12, 12:16] = False  # the changed cell, 4x4 pixels
    assert torch.equal(out[0, 0][:, keep], to_model_frames(x)[0, 0][:, keep])
    assert torch.equal(out[0, 0][:, ~keep], drawn[0, 0][:, ~keep])
    told = wm.decode(changed, x[:, 0], prev_tokens=tokens[:, 0], render=RenderSettings(keep_still=False))
    assert torch.equal(told, drawn)


def test_the_env_keeps_the_context_pixels_where_its_rollout_keeps_the_tokens():
    wm = patch_world_model()
    env = WorldModelEnv(wm, maskgit_steps=2, generator=torch.Generator().manual_seed(0))
    x = context(b=2, t=3)
    last = env.reset(x, torch.tensor([[1, 2], [3, 4]]))[:, -1]
    out = env.step(torch.tensor([0, 5]))
    still = (out.tokens == last).repeat_interleave(4, -2).repeat_interleave(4, -1)  # (b, 32, 32)
    ctx = to_model_frames(x[:, -1])
    drawn = wm.tokenizer.detokenize(out.tokens[:, None]).clamp(-1, 1)[:, 0]
    assert still.any() and (~still).any()  # the fresh model keeps some tokens and changes others
    for i in range(2):
        assert torch.equal(out.frames[i][:, still[i]], ctx[i][:, still[i]])
        assert torch.equal(out.frames[i][:, ~still[i]], drawn[i][:, ~still[i]])
