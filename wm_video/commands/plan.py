"""``wm-video plan`` and ``wm-video imagine-train``: control a real simulator with a world model, by planning in
imagination at every step or with an actor trained in imagination, against the random policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal


def plan(*, model: str, env: str, planner: Literal["cem", "mcts"] = "cem",
         episodes: int = 10, out: str = "plan_out", horizon: int = 8, population: int = 64, elites: int = 8,
         iterations: int = 4, mppi: bool = False, simulations: int = 64, parallel: int = 16, rollout_depth: int = 4,
         samples: int = 1, uncertainty: float = 0.0, discount: float = 0.99, temperature: float = 0.0,
         maskgit_steps: int = 2, action_low: list[float] | None = None, action_high: list[float] | None = None,
         value: str | None = None, context_frames: int | None = None, max_steps: int | None = None,
         baseline: bool = True, video_episodes: int = 1, render_steps: int | None = None,
         num_inference_steps: int | None = None, scale: int = 2, seed: int = 0, device: str = "auto") -> dict:
    """Closed-loop control of a real simulator by planning in the world model (replanning every step); writes
    OUT/report.json, OUT/report.md and videos of the real episodes with the imagined plans beside them.

    CEM (continuous actions) scores POPULATION action sequences of HORIZON steps per iteration; MCTS (discrete
    actions) evaluates SIMULATIONS leaves, PARALLEL at a time, to depth HORIZON. Plans are scored by the predicted
    rewards weighted by the predicted probability of not having terminated. The random policy runs on the same
    episode seeds as the baseline; the report gives returns (mean, std, standard error), the planner's margin over
    random in standard errors, decisions/s, imagined frames/s and the compute used.

    Example:
        wm-video plan --model runs/wm_pendulum --env Pendulum-v1 --planner cem --episodes 10 --out runs/plan_cem
        wm-video plan --model runs/wm_pong --env ALE/Pong-v5 --planner mcts --simulations 64 --out runs/plan_mcts

    Args:
        model: world-model folder (its dynamics must have trained reward and termination heads).
        env: simulator id (e.g. Pendulum-v1, ALE/Pong-v5, metaworld/reach-v3); 'wm-video data envs' lists them.
        planner: cem (continuous actions) or mcts (discrete actions).
        episodes: real episodes per agent.
        out: report folder.
        horizon: planned steps (CEM's sequence length, MCTS's maximum depth).
        population: CEM: sequences scored per iteration.
        elites: CEM: best sequences the sampling distribution is refitted to.
        iterations: CEM: refits per decision.
        mppi: CEM: MPPI's score-weighted average instead of the elites' mean.
        simulations: MCTS: leaves evaluated per decision.
        parallel: MCTS: leaves imagined together in one batch.
        rollout_depth: MCTS: random-action steps after a leaf that estimate its value.
        samples: imagined rollouts per plan; > 1 needs --temperature > 0.
        uncertainty: penalty on the standard deviation of a plan's sampled returns (needs --samples >= 2).
        discount: per-step discount of predicted rewards.
        temperature: token sampling temperature of imagined rollouts (default 0: argmax, deterministic, so plans
            are compared on one predicted future each; > 0 with --samples scores several).
        maskgit_steps: MaskGIT passes per imagined frame.
        action_low: continuous lower bounds (default: the model's index, else the simulator's).
        action_high: continuous upper bounds (same defaults).
        value: an actor folder from 'wm-video imagine-train': its critic values the end of each plan (MCTS: also
            its policy as priors).
        context_frames: real frames given to the planner (default: 4, at most the model's window).
        max_steps: steps per episode (default: the simulator's own limit).
        baseline: also run the random policy.
        video_episodes: episodes recorded per agent.
        render_steps: plan steps rendered per decision for the video (default: the whole plan).
        num_inference_steps: diffusion decoder steps per rendered frame (default: the decoder's own).
        scale: upscaling of the video frames.
        seed: seed of episodes, sampling and search.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
    """
    import torch

    from wm_video.planning import CEMConfig, CEMPlanner, MCTSConfig, MCTSPlanner
    from wm_video.planning.scoring import model_action_space
    from wm_video.utils.device import resolve_device
    from wm_video.world_model_env import WorldModelEnv

    device = resolve_device(device)
    wm, sim, n_ctx = _setup(model, env, context_frames, max_steps, device)
    try:
        space = model_action_space(wm, action_low, action_high, fallback=sim.action_space)
        value_fn = prior_fn = None
        value_frames = 1
        if value:
            from wm_video.planning import ActorCritic

            critic = ActorCritic.from_pretrained(value).to(device).eval()
            value_fn, value_frames = critic.value, critic.config.frames
            prior_fn = critic.policy_logits if critic.config.action_type == "discrete" else None
        gen = torch.Generator(device).manual_seed(seed)
        imagined = WorldModelEnv(wm, maskgit_steps, temperature, render=False, generator=gen)
        search_gen = torch.Generator(device).manual_seed(seed + 1)
        if planner == "cem":
            cfg = CEMConfig(horizon=horizon, population=population, elites=elites, iterations=iterations,
                            discount=discount, mppi=mppi, samples=samples, uncertainty=uncertainty)
            agent = CEMPlanner(imagined, space, cfg, value_fn, value_frames, search_gen, device)
        elif planner == "mcts":
            cfg = MCTSConfig(simulations=simulations, parallel=parallel, max_depth=horizon,
                             rollout_depth=rollout_depth, discount=discount, samples=samples, uncertainty=uncertainty)
            agent = MCTSPlanner(imagined, space, cfg, value_fn, prior_fn, value_frames, search_gen, device)
        else:
            raise ValueError(f"--planner must be cem or mcts, got {planner!r}")
        settings = {"planner": planner, **vars(cfg), "temperature": temperature, "maskgit_steps": maskgit_steps,
                    "context_frames": n_ctx, "action_space": space.to_dict(), "value": value}
        report = _run_and_report(wm, sim, {planner: agent}, out, episodes, n_ctx, seed, max_steps, baseline,
                                 video_episodes, render_steps, maskgit_steps, temperature, num_inference_steps, scale,
                                 device, {"kind": "plan", "model": str(model), "env": env, "settings": settings})
    finally:
        sim.close()
    return report


def imagine_train(*, model: str, env: str | None = None, data: str | None = None,
                  out: str = "imagine_out", iterations: int = 300, batch_size: int = 16, horizon: int = 15,
                  discount: float = 0.99, return_lambda: float = 0.95, entropy: float = 3e-3,
                  actor_lr: float = 3e-4, critic_lr: float = 3e-4, frames: int = 2, start_states: int = 256,
                  temperature: float = 1.0, maskgit_steps: int = 2, action_low: list[float] | None = None,
                  action_high: list[float] | None = None, context_frames: int | None = None, episodes: int = 10,
                  max_steps: int | None = None, baseline: bool = True, video_episodes: int = 1,
                  num_inference_steps: int | None = None, scale: int = 2, log_every: int = 10, seed: int = 0,
                  device: str = "auto") -> dict:
    """Train an actor-critic purely in imagination (lambda-returns over HORIZON imagined steps from real start
    contexts), save it to OUT/actor, then evaluate it in the real simulator against the random policy.

    Start contexts come from --data (a frame dataset at the model's resolution) or, without it, from random-policy
    episodes of --env. Evaluation needs --env. OUT/report.json holds the training curve (imagined return, critic
    and actor losses), imagined frames/s, the real returns and the compute used. The actor can then value plans:
    'wm-video plan --value OUT/actor'.

    Example:
        wm-video imagine-train --model runs/wm_pendulum --env Pendulum-v1 --iterations 500 --out runs/imagine

    Args:
        model: world-model folder (its dynamics must have trained reward and termination heads).
        env: simulator id, for start contexts (without --data) and for the evaluation.
        data: frame dataset to take start contexts from.
        out: output folder (actor/, report.json, report.md, videos).
        iterations: training steps (one imagined batch each).
        batch_size: imagined episodes per step.
        horizon: imagined steps per episode.
        discount: per-step discount.
        return_lambda: lambda of the lambda-returns.
        entropy: weight of the policy's entropy bonus.
        actor_lr: actor learning rate.
        critic_lr: critic learning rate.
        frames: frames of tokens the actor and critic read.
        start_states: real start contexts collected.
        temperature: token sampling temperature of imagined rollouts (default 1: sampled, so the actor learns
            from the spread of futures the model predicts, not from one argmax future).
        maskgit_steps: MaskGIT passes per imagined frame.
        action_low: continuous lower bounds (default: the model's index, else the simulator's).
        action_high: continuous upper bounds (same defaults).
        context_frames: frames per start context and per evaluation step (default: 4, at most the model's window).
        episodes: real evaluation episodes per agent (0: no evaluation).
        max_steps: steps per evaluation episode (default: the simulator's own limit).
        baseline: also evaluate the random policy.
        video_episodes: evaluation episodes recorded per agent.
        num_inference_steps: diffusion decoder steps per rendered frame.
        scale: upscaling of the video frames.
        log_every: training steps between entries of the training curve.
        seed: random seed.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
    """
    import time

    import torch

    from wm_video.planning import ActorAgent, ActorCritic, ImaginationTrainer, ImagineConfig
    from wm_video.planning.scoring import model_action_space
    from wm_video.planning.starts import start_states_from_data, start_states_from_env
    from wm_video.utils import progress
    from wm_video.utils.device import resolve_device
    from wm_video.world_model_env import WorldModelEnv

    if not (env or data):
        raise ValueError("one of --env or --data (start contexts) is required")
    if episodes > 0 and not env:
        raise ValueError("--env is required to evaluate the actor (or pass --episodes 0)")
    cfg = ImagineConfig(horizon=horizon, batch_size=batch_size, discount=discount, return_lambda=return_lambda,
                        entropy=entropy, actor_lr=actor_lr, critic_lr=critic_lr)
    device = resolve_device(device)
    wm, sim, n_ctx = _setup(model, env, context_frames, max_steps, device)
    try:
        space = model_action_space(wm, action_low, action_high, fallback=sim.action_space if sim else None)
        if data:
            starts = start_states_from_data(data, start_states, n_ctx, wm.resolution)
        else:
            starts = start_states_from_env(sim, start_states, n_ctx, wm.resolution, seed)
        torch.manual_seed(seed)
        actor = ActorCritic.for_world_model(wm, space, frames=frames)
        gen = torch.Generator(device).manual_seed(seed)
        imagined = WorldModelEnv(wm, maskgit_steps, temperature, render=False, generator=gen)
        trainer = ImaginationTrainer(imagined, actor, starts, cfg, torch.Generator().manual_seed(seed + 1))
        history, t0 = [], time.perf_counter()
        bar = progress(total=iterations, desc="imagine-train", unit="step")
        for i in range(iterations):
            logs = trainer.train_step()
            if i % log_every == 0 or i == iterations - 1:
                history.append({"step": i, **logs})
                bar.set_postfix(R=f"{logs['imagined_return']:.2f}", critic=f"{logs['critic_loss']:.3f}")
            bar.update(1)
        bar.close()
        train_s = time.perf_counter() - t0
        actor.save_pretrained(Path(out) / "actor")
        training = {"iterations": iterations, "seconds": train_s, "imagined_frames": trainer.imagined_frames,
                    "imagined_frames_per_s": trainer.imagined_frames / max(train_s, 1e-9),
                    "start_states": len(starts.frames), "start_source": data or f"{env} (random policy)",
                    "history": history}
        settings = {**vars(cfg), "frames": frames, "temperature": temperature, "maskgit_steps": maskgit_steps,
                    "context_frames": n_ctx, "action_space": space.to_dict()}
        head = {"kind": "imagine-train", "model": str(model), "env": env, "settings": settings,
                "training": training, "actor": str(Path(out) / "actor")}
        agents = {"actor": ActorAgent(wm, actor, deterministic=True)} if episodes > 0 else {}
        report = _run_and_report(wm, sim, agents, out, episodes, n_ctx, seed, max_steps, baseline and episodes > 0,
                                 video_episodes, 1, maskgit_steps, 0.0, num_inference_steps, scale, device, head)
    finally:
        if sim is not None:
            sim.close()
    return report


# ---- shared ---------------------------------------------------------------------------------------------------


def _setup(model: str, env: str | None, context_frames: int | None, max_steps: int | None, device: str
           ) -> tuple[Any, Any, int]:
    """Load and check the world model, make the simulator at its resolution, and fix the context length."""
    from wm_video.envs import make_env
    from wm_video.planning.closed_loop import check_env_fits
    from wm_video.planning.scoring import check_outcome_heads
    from wm_video.world_model import WorldModel

    wm = WorldModel.from_pretrained(model).to(device)
    check_outcome_heads(wm)
    n_ctx = context_frames or min(4, wm.context_frames)
    if not 1 <= n_ctx <= wm.context_frames:
        raise ValueError(f"--context-frames must be in [1, {wm.context_frames}] (the model's window), got {n_ctx}")
    if max_steps is not None and max_steps < 1:
        raise ValueError(f"--max-steps must be >= 1, got {max_steps}")
    sim = None
    if env:
        sim = make_env(env, size=wm.resolution)  # max_steps caps evaluation episodes only, not start states
        try:
            check_env_fits(wm, sim.action_space, env)
        except ValueError:
            sim.close()
            raise
    return wm, sim, n_ctx


def _compute(device: str, wall_s: float) -> dict[str, Any]:
    import os
    import platform

    import torch

    gpu = torch.cuda.get_device_name(torch.device(device)) if device.startswith("cuda") else None
    return {"device": device, "gpu": gpu, "cpu": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "torch": torch.__version__,
            "wall_seconds": wall_s}


def _run_and_report(wm: Any, sim: Any, agents: dict[str, Any], out: str, episodes: int, n_ctx: int, seed: int,
                    max_steps: int | None, baseline: bool, video_episodes: int, render_steps: int | None,
                    maskgit_steps: int, temperature: float, num_inference_steps: int | None, scale: int,
                    device: str, head: dict[str, Any]) -> dict[str, Any]:
    """Run each agent (and the random baseline) in the simulator, then write OUT/report.json and report.md."""
    import math
    import time

    import torch

    from wm_video.planning import PlanRenderer, RandomAgent, run_closed_loop
    from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json

    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if agents and baseline:
        agents = {**agents, "random": RandomAgent(sim.action_space, seed)}
    results = {}
    for name, agent in agents.items():
        renderer = PlanRenderer(wm, render_steps, maskgit_steps, temperature, num_inference_steps,
                                torch.Generator(device).manual_seed(seed))
        res = run_closed_loop(sim, agent, wm, episodes, n_ctx, seed, max_steps, out_dir if video_episodes else None,
                              name.replace("/", "_"), video_episodes, renderer, scale)
        results[name] = res.summary()
    if "random" in results:
        base = results["random"]
        for name, r in results.items():
            if name != "random":
                se = math.hypot(r["stderr"], base["stderr"])
                r["margin_over_random"] = r["mean"] - base["mean"]
                r["margin_stderrs"] = (r["mean"] - base["mean"]) / se if se > 0 else None
    head = dict(head)
    compute = _compute(device, time.perf_counter() - start + head.get("training", {}).get("seconds", 0.0))
    report = {**head, "episodes": episodes, "seed": seed, "results": results, "compute": compute}
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_bytes(out_dir / "report.md", markdown(report).encode())
    print(markdown(report))
    print(f"wrote {out_dir / 'report.json'} and {out_dir / 'report.md'}")
    return report


def markdown(report: dict[str, Any]) -> str:
    """The report as a short Markdown page: returns per agent, the margin over random, speed, compute."""
    title = report["kind"]
    lines = [f"# {title}: {report.get('env')}", "", f"Model: `{report['model']}`", ""]
    if report.get("training"):
        t = report["training"]
        last = t["history"][-1] if t["history"] else {}
        lines += [f"Training: {t['iterations']} steps in {t['seconds']:.1f} s, {t['imagined_frames']} imagined frames "
                  f"({t['imagined_frames_per_s']:.1f}/s); last imagined return {last.get('imagined_return', 0):.3f}, "
                  f"critic loss {last.get('critic_loss', 0):.4f}.", ""]
    if report["results"]:
        lines += ["| agent | episodes | mean return | std | stderr | margin over random (stderrs) | decisions/s | "
                  "imagined frames/s |", "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
        for name, r in report["results"].items():
            margin = r.get("margin_stderrs")
            lines.append(f"| {name} | {r['episodes']} | {r['mean']:.2f} | {r['std']:.2f} | {r['stderr']:.2f} | "
                         f"{'-' if margin is None else f'{margin:.1f}'} | {r['decisions_per_s']:.2f} | "
                         f"{r['imagined_frames_per_s']:.1f} |")
        lines.append("")
    c = report["compute"]
    lines += [f"Compute: {c['wall_seconds']:.1f} s wall on {c['gpu'] or c['device']} ({c['cpu_count']} CPUs, "
              f"{c['torch_threads']} torch threads).", "", "Settings:", "", "```",
              *(f"{k}: {v}" for k, v in report["settings"].items()), "```", ""]
    return "\n".join(lines)
