"""``wm-video demo``: the built-in default job for a fresh machine (no GPU, no downloads)."""

from __future__ import annotations


def demo(out: str = "demo_out", env: str = "Pendulum-v1", policy: str = "random", noise: float = 0.3,
         episodes: int = 64, max_episode_steps: int = 200, workers: int = 2, tokenizer_steps: int | None = None,
         dynamics_steps: int | None = None, decoder_steps: int | None = None, horizon: int = 8,
         max_clips: int = 96, num_inference_steps: int = 1, temperature: float = 1.0, seed: int = 0) -> None:
    """Build a whole world model from a simulator on this machine's CPU, in about 12 minutes on 2 cores: collect
    episodes, train the tiny tokenizer, dynamics transformer and diffusion decoder, generate a held-out clip's
    future from its true actions (mp4 + GIF, ground truth beside it) and print the evaluation table against
    copy-last-frame and shuffled actions.

    Rerunning with the same --out skips finished stages (delete OUT/runs/<part> to retrain one part). Outputs:
    OUT/data (shards, with OUT/data.png and OUT/data.gif), OUT/runs/{tokenizer,dynamics,decoder} (TensorBoard logs,
    checkpoints, exports), OUT/world_model, OUT/generated.mp4 (+ .gif, .json trace), OUT/eval (report.json,
    report.md, plots) and OUT/demo_summary.json (stage times, peak memory, the verdict against copy-last-frame).

    Example:
        wm-video demo --out demo_out
        wm-video demo --out demo_small --episodes 8 --tokenizer-steps 20 --dynamics-steps 20 --decoder-steps 10

    Args:
        out: output folder.
        env: simulator id (the default, Pendulum-v1, is a rod swinging under gravity and the applied torque).
        policy: collection policy: random, scripted or noisy.
        noise: noise level of the noisy policy (discrete: random-action probability; continuous: Gaussian std).
        episodes: episodes to collect (2 per shard; the last 10% of shards are held out).
        max_episode_steps: cap on episode length.
        workers: collection processes.
        tokenizer_steps: tokenizer optimizer steps (default: the tiny preset's).
        dynamics_steps: dynamics optimizer steps (default: the tiny preset's).
        decoder_steps: decoder optimizer steps (default: the tiny preset's).
        horizon: predicted frames per held-out clip in the evaluation.
        max_clips: held-out clips evaluated.
        num_inference_steps: diffusion decoder steps per frame.
        temperature: token sampling temperature of generation and evaluation (0: argmax).
        seed: seed of collection, training and sampling.
    """
    from wm_video.demo import DemoConfig, run_demo

    cfg = DemoConfig(env=env, policy=policy, noise=noise, episodes=episodes, max_episode_steps=max_episode_steps,
                     workers=workers, tokenizer_steps=tokenizer_steps, dynamics_steps=dynamics_steps,
                     decoder_steps=decoder_steps, horizon=horizon, max_clips=max_clips,
                     num_inference_steps=num_inference_steps, temperature=temperature, seed=seed)
    run_demo(cfg, out)
