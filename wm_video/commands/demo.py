"""``wm-video demo``: the main job on the built-in default."""

from __future__ import annotations

from wm_video.recipes import DEMO_ENV


def demo(out: str = "demo_out", env: str = DEMO_ENV, policy: str | None = None, noise: float | None = None,
         episodes: int | None = None, max_episode_steps: int | None = None, workers: int = 2,
         tokenizer_steps: int | None = None, dynamics_steps: int | None = None, decoder_steps: int | None = None,
         horizon: int = 8, max_clips: int | None = None, num_inference_steps: int = 1,
         temperature: float | None = None, guidance_scale: float | None = None, seed: int = 0) -> None:
    """Build a whole world model from a simulator on this machine's CPU, in about 15 minutes on 2 idle cores:
    collect episodes, train the tiny tokenizer, dynamics transformer and diffusion decoder, generate a held-out
    clip's future from its true actions (mp4 + GIF, ground truth beside it), evaluate held-out clips against
    copy-last-frame, shuffled actions and the null action, and say whether the model beats copy-last-frame and
    whether it follows its actions.

    Every setting left out comes from the environment's recipe (wm_video/recipes.py), the one the fidelity suite
    (eval/fidelity/run.py) builds, so --env with a suite environment gives the suite's model. Budgets are optimizer
    steps: a busy machine makes the demo slower, not worse. Rerunning with the same --out skips finished stages
    (delete OUT/runs/<part> to retrain one part). Outputs: OUT/data (shards, with OUT/data.png and OUT/data.gif),
    OUT/runs/{tokenizer,dynamics,decoder} (TensorBoard logs, checkpoints, exports), OUT/world_model,
    OUT/generated.mp4 (+ .gif, .json trace), OUT/eval (report.json, report.md, plots) and OUT/demo_summary.json
    (stage times, peak memory, the verdicts).

    Example:
        wm-video demo --out demo_out
        wm-video demo --out demo_reacher --env Reacher-v5
        wm-video demo --out demo_small --episodes 8 --tokenizer-steps 20 --dynamics-steps 20 --decoder-steps 10

    Args:
        out: output folder.
        env: simulator id; the recipes cover ALE/Boxing-v5, Reacher-v5, metaworld/reach-v3 and Pendulum-v1 (others
            get the default recipe).
        policy: collection policy: random, scripted or noisy (default: the recipe's).
        noise: noise level of the noisy policy (discrete: random-action probability; continuous: Gaussian std).
        episodes: episodes to collect (the last 10% of shards are held out).
        max_episode_steps: cap on episode length.
        workers: collection processes.
        tokenizer_steps: tokenizer optimizer steps (default: the recipe's).
        dynamics_steps: dynamics optimizer steps (default: the recipe's).
        decoder_steps: diffusion decoder optimizer steps (default: the recipe's; 0: frames from the VQ decoder).
        horizon: predicted frames per held-out clip in the evaluation.
        max_clips: held-out clips evaluated.
        num_inference_steps: diffusion decoder steps per frame.
        temperature: token sampling temperature of generation and evaluation (0: argmax).
        guidance_scale: classifier-free guidance on actions in the evaluation (1: none).
        seed: seed of collection, training and sampling.
    """
    from wm_video.demo import DemoConfig, run_demo

    cfg = DemoConfig(env=env, policy=policy, noise=noise, episodes=episodes, max_episode_steps=max_episode_steps,
                     workers=workers, tokenizer_steps=tokenizer_steps, dynamics_steps=dynamics_steps,
                     decoder_steps=decoder_steps, horizon=horizon, max_clips=max_clips,
                     num_inference_steps=num_inference_steps, temperature=temperature, guidance_scale=guidance_scale,
                     seed=seed)
    run_demo(cfg, out)
