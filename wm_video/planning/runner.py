"""Control a real simulator with a world model: :func:`run_planner` plans in imagination at every step (CEM or
MCTS), :func:`train_actor` trains an actor-critic in imagination and then runs it; both against the random policy on
the same episode seeds, with a report (:mod:`wm_video.planning.report`) and videos in the output folder.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from wm_video.data.reader import load_dataset_info
from wm_video.data.schema import ActionSpace
from wm_video.envs import make_env
from wm_video.envs.metaworld_env import task_text
from wm_video.planning.cem import CEMConfig, CEMPlanner
from wm_video.planning.closed_loop import PlanRenderer, RandomAgent, check_env_fits, run_closed_loop
from wm_video.planning.config import ImagineTrainConfig, PlanConfig, RealRunConfig
from wm_video.planning.imagination import ActorAgent, ActorCritic, ImaginationTrainer, StartStates
from wm_video.planning.mcts import MCTSConfig, MCTSPlanner
from wm_video.planning.report import add_margins, compute_record, write_report
from wm_video.planning.scoring import check_outcome_heads, model_action_space
from wm_video.planning.starts import start_states_from_data, start_states_from_env
from wm_video.task_text import TaskTextSettings, resolve_task, task_embedding
from wm_video.utils import progress
from wm_video.utils.device import resolve_device
from wm_video.world_model import WorldModel
from wm_video.world_model_env import WorldModelEnv


def run_planner(model: str | Path, env: str, out: str | Path, cfg: PlanConfig, device: str = "auto"
                ) -> dict[str, Any]:
    """Closed-loop control of simulator ``env`` by planning in the world model in folder ``model`` (replanning
    every step); writes ``out/report.json``, ``out/report.md`` and videos. Returns the report.

    ``device``: ``auto`` (cuda when a GPU is visible, else cpu), ``cpu`` or ``cuda``."""
    cfg.validate()
    device = resolve_device(device)
    wm, sim, n_ctx = _setup(model, env, cfg.context_frames, device, cfg.domain)
    try:
        space = model_action_space(wm, cfg.action_low, cfg.action_high, fallback=sim.action_space)
        task, text = _task(wm, cfg, "plan", model, task_text(env))
        agent, search = build_planner(wm, space, cfg, device, text)
        settings = {"planner": cfg.planner, **vars(search), "temperature": cfg.temperature,
                    "maskgit_steps": cfg.maskgit_steps, "context_frames": n_ctx, "action_space": space.to_dict(),
                    "value": cfg.value, "task": task, "text_guidance_scale": cfg.text_guidance_scale}
        renderer = _renderer(wm, cfg, cfg.render_steps, cfg.temperature, device, text, cfg.text_guidance_scale)
        head = {"kind": "plan", "model": str(model), "env": env, "settings": settings}
        return run_agents(sim, wm, {cfg.planner: agent}, out, cfg, n_ctx, renderer, head, device)
    finally:
        sim.close()


def build_planner(wm: WorldModel, space: ActionSpace, cfg: PlanConfig, device: str, text: torch.Tensor | None = None
                  ) -> tuple[CEMPlanner | MCTSPlanner, CEMConfig | MCTSConfig]:
    """``cfg.planner`` (``cem`` or ``mcts``) searching in imagination in ``wm`` over ``space``, with the critic of
    ``cfg.value`` as its value (and, for MCTS, prior) where one is given; -> the planner and its search settings.
    The imagined rollouts' random source is seeded with ``cfg.seed``, the search's with ``cfg.seed + 1``; they are
    conditioned on the task-text embedding ``text`` ``(text_dim,)`` (a model with text) with
    ``cfg.text_guidance_scale``."""
    value_fn = prior_fn = None
    value_frames = 1
    if cfg.value:
        critic = ActorCritic.from_pretrained(cfg.value).to(device).eval()
        value_fn, value_frames = critic.value, critic.config.frames
        prior_fn = critic.policy_logits if critic.config.action_type == "discrete" else None
    gen = torch.Generator(device).manual_seed(cfg.seed)
    imagined = WorldModelEnv(wm, cfg.maskgit_steps, cfg.temperature, render=False, generator=gen, text=text,
                             text_guidance_scale=cfg.text_guidance_scale)
    search_gen = torch.Generator(device).manual_seed(cfg.seed + 1)
    if cfg.planner == "cem":
        search = cfg.cem()
        return CEMPlanner(imagined, space, search, value_fn, value_frames, search_gen, device), search
    if cfg.planner == "mcts":
        search = cfg.mcts()
        return MCTSPlanner(imagined, space, search, value_fn, prior_fn, value_frames, search_gen, device), search
    raise ValueError(f"--planner must be cem or mcts, got {cfg.planner!r}")


def train_actor(model: str | Path, out: str | Path, cfg: ImagineTrainConfig, env: str | None = None,
                data: str | Path | None = None, device: str = "auto") -> dict[str, Any]:
    """Train an actor-critic purely in imagination from real start contexts (of dataset ``data``, else of
    random-policy episodes of ``env``), save it to ``out/actor``, then run it in simulator ``env`` against the
    random policy (``cfg.episodes`` > 0). Writes ``out/report.json`` and ``out/report.md``; returns the report."""
    if not (env or data):
        raise ValueError("one of --env or --data (start contexts) is required")
    if cfg.episodes > 0 and not env:
        raise ValueError("--env is required to evaluate the actor (or pass --episodes 0)")
    cfg.validate()
    device = resolve_device(device)
    wm, sim, n_ctx = _setup(model, env, cfg.context_frames, device, cfg.domain)
    try:
        space = model_action_space(wm, cfg.action_low, cfg.action_high, fallback=sim.action_space if sim else None)
        # a Meta-World task name is the default only where the start contexts come from that simulator
        task, text = _task(wm, cfg, "imagine-train", model, None if data else task_text(env))
        if data:
            wm.check_data_actions(load_dataset_info(data).action_space, f"{data}/dataset.json")
            starts = start_states_from_data(data, cfg.start_states, n_ctx, wm.resolution)
        else:
            starts = start_states_from_env(sim, cfg.start_states, n_ctx, wm.resolution, cfg.seed)
        torch.manual_seed(cfg.seed)
        actor = ActorCritic.for_world_model(wm, space, frames=cfg.frames)
        training = _train_in_imagination(wm, actor, starts, cfg, device, text)
        actor.save_pretrained(Path(out) / "actor")
        history = training.pop("history")  # last in the record, after where the start contexts came from
        training.update(start_source=str(data) if data else f"{env} (random policy)", history=history)
        settings = {**vars(cfg.imagine()), "frames": cfg.frames, "temperature": cfg.temperature,
                    "maskgit_steps": cfg.maskgit_steps, "context_frames": n_ctx, "action_space": space.to_dict(),
                    "task": task, "text_guidance_scale": cfg.text_guidance_scale}
        head = {"kind": "imagine-train", "model": str(model), "env": env, "settings": settings,
                "training": training, "actor": str(Path(out) / "actor")}
        agents = {"actor": ActorAgent(wm, actor, deterministic=True)} if cfg.episodes > 0 else {}
        run = dataclasses.replace(cfg, baseline=cfg.baseline and cfg.episodes > 0)
        # the actor's video shows the next imagined frame of each decision, argmax: what the actor acted on
        renderer = _renderer(wm, cfg, 1, 0.0, device, text, cfg.text_guidance_scale)
        return run_agents(sim, wm, agents, out, run, n_ctx, renderer, head, device)
    finally:
        if sim is not None:
            sim.close()


def _train_in_imagination(wm: WorldModel, actor: ActorCritic, starts: StartStates, cfg: ImagineTrainConfig,
                          device: str, text: torch.Tensor | None = None) -> dict[str, Any]:
    """``cfg.iterations`` imagination training steps of ``actor``, imagined with the task-text embedding ``text``
    (a model with text) and ``cfg.text_guidance_scale``; returns the training record (curve, speed)."""
    gen = torch.Generator(device).manual_seed(cfg.seed)
    imagined = WorldModelEnv(wm, cfg.maskgit_steps, cfg.temperature, render=False, generator=gen, text=text,
                             text_guidance_scale=cfg.text_guidance_scale)
    trainer = ImaginationTrainer(imagined, actor, starts, cfg.imagine(), torch.Generator().manual_seed(cfg.seed + 1))
    history, t0 = [], time.perf_counter()
    bar = progress(total=cfg.iterations, desc="imagine-train", unit="step")
    for i in range(cfg.iterations):
        logs = trainer.train_step()
        if i % cfg.log_every == 0 or i == cfg.iterations - 1:
            history.append({"step": i, **logs})
            bar.set_postfix(R=f"{logs['imagined_return']:.2f}", critic=f"{logs['critic_loss']:.3f}")
        bar.update(1)
    bar.close()
    train_s = time.perf_counter() - t0
    return {"iterations": cfg.iterations, "seconds": train_s, "imagined_frames": trainer.imagined_frames,
            "imagined_frames_per_s": trainer.imagined_frames / max(train_s, 1e-9),
            "start_states": len(starts.frames), "history": history}


def _task(wm: WorldModel, cfg: TaskTextSettings, where: str, model: str | Path, default: str | None
          ) -> tuple[str | None, torch.Tensor | None]:
    """The task text the verb ``where`` conditions ``wm`` on (``cfg.task``, else ``default``; an error naming
    --task for a text model with neither; None without text) and its embedding ``(text_dim,)`` (or None)."""
    task = resolve_task(wm.dynamics.config.text_dim, cfg, where, model, default=default)
    return task, task_embedding(wm, cfg, where, model, default=task)


def _setup(model: str | Path, env: str | None, context_frames: int | None, device: str, domain: str | None
           ) -> tuple[WorldModel, Any, int]:
    """Load and check the world model (as action domain ``domain`` sees it), make the simulator at its resolution,
    and fix the context length."""
    wm = WorldModel.from_pretrained(model).for_domain(domain).to(device)
    check_outcome_heads(wm)
    n_ctx = context_frames or min(4, wm.context_frames)
    if not 1 <= n_ctx <= wm.context_frames:
        raise ValueError(f"--context-frames must be in [1, {wm.context_frames}] (the model's window), got {n_ctx}")
    sim = None
    if env:
        sim = make_env(env, size=wm.resolution)  # max_steps caps evaluation episodes only, not start states
        try:
            check_env_fits(wm, sim.action_space, env)
        except ValueError:
            sim.close()
            raise
    return wm, sim, n_ctx


def _renderer(wm: WorldModel, cfg: RealRunConfig, render_steps: int | None, temperature: float, device: str,
              text: torch.Tensor | None = None, text_guidance_scale: float = 1.0) -> Callable[[], PlanRenderer]:
    """A maker of the renderer of each agent's videos (each agent gets its own, seeded the same)."""
    return lambda: PlanRenderer(wm, render_steps, cfg.maskgit_steps, temperature, cfg.num_inference_steps,
                                torch.Generator(device).manual_seed(cfg.seed), text, text_guidance_scale)


def run_agents(sim: Any, wm: WorldModel, agents: dict[str, Any], out: str | Path, cfg: RealRunConfig, n_ctx: int,
               renderer: Callable[[], PlanRenderer], head: dict[str, Any], device: str) -> dict[str, Any]:
    """Run each agent (and, with ``cfg.baseline``, the random policy) in the simulator on the same episode seeds;
    write the report beside the videos in ``out`` and return it. ``head``: the report's leading fields (kind,
    model, env, settings, and the training record whose seconds count in the compute)."""
    start = time.perf_counter()
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    if agents and cfg.baseline:
        agents = {**agents, "random": RandomAgent(sim.action_space, cfg.seed)}
    results = {}
    for name, agent in agents.items():
        res = run_closed_loop(sim, agent, wm, cfg.episodes, n_ctx, cfg.seed, cfg.max_steps,
                              out_dir if cfg.video_episodes else None, name.replace("/", "_"), cfg.video_episodes,
                              renderer(), cfg.scale)
        results[name] = res.summary()
    add_margins(results)
    compute = compute_record(device, time.perf_counter() - start + head.get("training", {}).get("seconds", 0.0))
    report = {**head, "episodes": cfg.episodes, "seed": cfg.seed, "results": results, "compute": compute}
    write_report(report, out_dir)
    return report
