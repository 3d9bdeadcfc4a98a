"""Fixed recipes for a whole world model per simulator: what to collect, how many optimizer steps each part trains,
and the overrides of the ``tiny`` training presets. ``wm-video demo`` and the fidelity suite
(``eval/fidelity/run.py``) build from the same recipe, so ``wm-video demo --env E`` reproduces the suite's model of E.

Every budget is a count of optimizer steps (never minutes), so a busy machine changes how long a run takes, not
what it produces. The recipes are sized for about 15 minutes per environment on an idle 2-core CPU (400 tokenizer
and 600 dynamics steps; at 600/800 the demo took 18.2 minutes, at 450/650 15.1, and the figures of
docs/fidelity.md E1-E10 were made at 600/800); ``smoke``
shrinks every count so the whole pipeline runs in about a minute per environment (its numbers mean nothing).

Why these environments: in each, the agent's action visibly moves a large part of the frame, so a model that
follows its actions must score better with the true actions than with shuffled ones.

- ``ALE/Boxing-v5`` (discrete, 18 joystick actions): the player's boxer is a large sprite that walks and punches
  where the joystick says; the opponent moves on its own.
- ``Reacher-v5`` (gymnasium MuJoCo, continuous torques on 2 joints): a random torque swings the two-link arm across
  the arena (rendered cropped around the arena, see ``wm_video.envs.gym_env.FRAMING``).
- ``metaworld/reach-v3`` (Meta-World, continuous end-effector deltas): the Sawyer arm fills a third of the frame;
  the noisy scripted expert moves it towards the goal with large random deviations.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field


@dataclass
class Recipe:
    """How one environment's world model is built and scored.

    Args:
        env: simulator id (``wm-video data envs`` lists them).
        policy: collection policy (``random``, ``scripted``, ``noisy``).
        noise: noise of the ``noisy`` policy.
        hold: steps the ``random`` policy keeps each action (1: a new one every step).
        episodes: episodes collected; the last 10% of shards are held out and only they are scored.
        max_episode_steps: cap on episode length (None: the simulator's own).
        episodes_per_shard: episodes per shard.
        stride: frames between clip starts (None: no overlap).
        tokenizer_steps, dynamics_steps: optimizer steps of each part (the ``tiny`` presets otherwise).
        decoder_steps: optimizer steps of the diffusion decoder (the demo trains it when > 0; the fidelity suite
            leaves it out unless asked, and scores frames from the VQ decoder: its targets are about tokens and
            actions).
        tokenizer, dynamics: dotted overrides of the ``tiny`` training presets.
        temperature: token sampling temperature of the evaluation (0: argmax).
        guidance_scale: classifier-free guidance on actions in the evaluation (1: none).
        maskgit_steps: MaskGIT passes per frame in the evaluation (under argmax one pass scores as eight,
            docs/fidelity.md E15, at an eighth of the dynamics work).
        max_clips: held-out clips evaluated.
    """

    env: str
    policy: str = "random"
    noise: float = 0.3
    hold: int = 1
    episodes: int = 64
    max_episode_steps: int | None = None
    episodes_per_shard: int = 4
    stride: int | None = None
    tokenizer_steps: int = 400
    dynamics_steps: int = 600
    decoder_steps: int = 200
    tokenizer: list[str] = field(default_factory=list)
    dynamics: list[str] = field(default_factory=list)
    temperature: float = 0.0
    guidance_scale: float = 1.0
    maskgit_steps: int = 8
    max_clips: int = 64


# Pixels that differ from their clip's median get 30x the reconstruction weight: the moving sprites and arms are a
# few percent of the pixels, and an unweighted loss learns to leave them out (docs/benchmarks.md, tokenizer).
FOREGROUND = ["model.foreground_weight=30"]
# A patch-local encoder: a patch whose pixels did not change keeps its token, so the world model keeps its pixels.
# Token flicker 42% -> 11% (Boxing) and 48% -> 7.5% (Reacher); best mean PSNR and margins over copying on all three
# suite environments (docs/fidelity.md, E8), and 1.14x faster tokenizer steps.
PATCH = [*FOREGROUND, "model.encoder=patch"]

# Each target token's input carries the previous frame's token at its place, and a 3x3 convolution over each frame's
# token grid gives every cell its neighbours' content by direction: a synthetic action-driven token went from never
# learned in 600 steps to 97.5% right in 300, and on Boxing the model beats copying at every horizon (+0.35 / +0.69 dB
# at h=1 / h=8, against +0.03 / +0.66) with 18% more of the changing tokens right; Reacher's mean PSNR +0.31 dB,
# Meta-World reach's +0.09 and its margin over copying at h=8 +0.15 (docs/fidelity.md, E20 and E21).
FOLLOW = ["model.previous_token_input=true", "model.input_conv=true"]

RECIPES: dict[str, Recipe] = {
    # no diffusion decoder by default: with the patch tokenizer the VQ decoder keeps the still patches' true pixels,
    # and the demo then shows exactly what the suite measures (wm-video demo --decoder-steps 200 trains one)
    # guidance 2 doubles the margin of true over shuffled actions at the same PSNR, and one MaskGIT pass (equal to
    # eight under argmax) pays for its doubled batch (docs/fidelity.md, E15 and E17)
    "ALE/Boxing-v5": Recipe(env="ALE/Boxing-v5", episodes=48, max_episode_steps=300, tokenizer=PATCH, dynamics=FOLLOW,
                            decoder_steps=0, guidance_scale=2.0, maskgit_steps=1),
    "Reacher-v5": Recipe(env="Reacher-v5", episodes=256, episodes_per_shard=16, stride=8, tokenizer=PATCH,
                         dynamics=FOLLOW),
    "metaworld/reach-v3": Recipe(env="metaworld/reach-v3", policy="noisy", noise=0.5, episodes=64,
                                 max_episode_steps=150, tokenizer=PATCH, dynamics=FOLLOW),
}
DEFAULT_ENVS = tuple(RECIPES)
# The demo before the fidelity suite existed: its swing is gravity's, and a random torque barely shows in 8 frames,
# so true and shuffled actions score the same (docs/benchmarks.md). Kept for comparison: wm-video demo --env Pendulum-v1
RECIPES["Pendulum-v1"] = Recipe(env="Pendulum-v1", episodes=64, max_episode_steps=200, episodes_per_shard=2,
                                tokenizer_steps=450, dynamics_steps=550, temperature=1.0)
DEMO_ENV = "ALE/Boxing-v5"  # chosen by measurement: docs/benchmarks.md, fidelity suite


def recipe_for(env: str, smoke: bool = False) -> Recipe:
    """The suite's recipe for ``env`` (another id gets the defaults with ``FOREGROUND``); ``smoke``: tiny counts."""
    r = RECIPES.get(env) or Recipe(env=env, tokenizer=FOREGROUND)
    if smoke:
        r = dataclasses.replace(r, episodes=4, episodes_per_shard=1, max_episode_steps=40, tokenizer_steps=4,
                                dynamics_steps=4, decoder_steps=2, max_clips=4)
    return r
