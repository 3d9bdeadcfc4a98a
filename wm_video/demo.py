"""The README's main job: a whole world model from nothing, on a 2-core CPU, in about 15 minutes.

Stages, each skipped when its output already exists (so an interrupted demo resumes where it stopped):

1. ``data``: collect episodes from a real simulator (by default ``DEMO_ENV``, chosen with the fidelity suite as
   an environment where the actions visibly drive the frames) into shards,
   with a contact sheet and a GIF of sample clips;
2. ``tokenizer``: train the ``tiny`` VQ tokenizer;
3. ``tokens``: tokenize the dataset;
4. ``dynamics``: train the ``tiny`` action-conditioned dynamics transformer on the tokens;
5. ``decoder``: train the ``tiny`` residual diffusion decoder;
6. ``world_model``: assemble the three exports into one world-model folder;
7. ``generate``: predict a held-out clip's future from 4 context frames and its true actions, written as mp4 and
   GIF beside the ground truth;
8. ``eval``: the evaluation protocol (:mod:`wm_video.evaluation.rollout_eval`) on the held-out episodes, against
   copy-last-frame, shuffled actions and the tokenizer ceiling (the null-action row is left to the fidelity suite, to
   keep the demo within 15 minutes); the tables are printed with the two verdicts
   (:mod:`wm_video.evaluation.verdicts`): whether the model beats copy-last-frame, and whether it follows its
   actions (true actions beat shuffled ones).

Wall time per stage and peak resident memory go to ``OUT/demo_summary.json``. :func:`demo` is the verb
``wm-video demo`` (cli.py dispatches to it directly: this module sits above the commands).
"""

from __future__ import annotations

import dataclasses
import json
import resource
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import wm_video.registry  # noqa: F401  (every config kind: the demo resolves the training presets by name)
from wm_video.assembly import export_world_model
from wm_video.config import load_config
from wm_video.data.inspect import format_summary, inspect_dataset
from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
from wm_video.data.split import require_heldout, split_dataset
from wm_video.data.tokenize import tokenize_dataset
from wm_video.envs.collect import CollectConfig, collect
from wm_video.evaluation import EvalConfig, evaluate_world_model, write_report
from wm_video.evaluation.report import markdown
from wm_video.evaluation.verdicts import format_verdicts, verdicts
from wm_video.generation.config import GenerateConfig
from wm_video.generation.generate import generate_video
from wm_video.recipes import DEMO_ENV, Recipe, recipe_for
from wm_video.training.decoder_module import train_decoder
from wm_video.training.dynamics_module import train_dynamics
from wm_video.training.tokenizer_module import train_tokenizer
from wm_video.utils.atomic import atomic_write_json
from wm_video.utils.machine import machine_record
from wm_video.world_model import WorldModel

# the evaluation's rows in the demo: the fidelity suite adds the null action (a quarter of the evaluation's time)
DEMO_METHODS = ["model", "copy_last_frame", "shuffled_actions", "tokenizer_ceiling"]


@dataclass
class DemoConfig:
    """Every field left at None comes from the environment's recipe (:mod:`wm_video.recipes`, the fidelity suite's),
    so ``--env`` with any suite environment builds the suite's model of it.

    Args:
        env: simulator id (``wm-video data envs`` lists them; the recipes cover the fidelity suite's and Pendulum-v1).
        policy: collection policy: ``random``, ``scripted`` or ``noisy``.
        noise: noise level of the ``noisy`` policy (see :class:`~wm_video.envs.collect.CollectConfig`).
        episodes: episodes to collect; the last 10% of episodes are held out.
        max_episode_steps: cap on episode length.
        workers: collection processes.
        tokenizer_steps, dynamics_steps, decoder_steps: optimizer steps of each part. Budgets are steps, never
            minutes: a busy machine makes the demo slower, not worse. ``decoder_steps=0`` trains no diffusion
            decoder: frames come from the tokenizer's VQ decoder.
        horizon: predicted frames per held-out clip in the evaluation.
        context_frames: context frames of generation and evaluation.
        max_clips: held-out clips evaluated.
        num_inference_steps: diffusion decoder steps per frame.
        temperature: token sampling temperature of generation and evaluation (0: argmax).
        guidance_scale: classifier-free guidance on actions in generation and evaluation (1: none).
        seed: seed of collection, training and sampling.
        overrides: dotted config overrides per part, e.g. ``{"dynamics": ["model.depth=6"]}`` (keys
            ``tokenizer``, ``dynamics``, ``decoder``; applied to the ``tiny`` training presets after the recipe's).
    """

    env: str = DEMO_ENV
    policy: str | None = None
    noise: float | None = None
    episodes: int | None = None
    max_episode_steps: int | None = None
    workers: int = 2
    tokenizer_steps: int | None = None
    dynamics_steps: int | None = None
    decoder_steps: int | None = None
    horizon: int = 8
    context_frames: int = 4
    max_clips: int | None = None
    num_inference_steps: int = 1
    temperature: float | None = None
    guidance_scale: float | None = None
    seed: int = 0
    overrides: dict[str, list[str]] = field(default_factory=dict)

    def resolved(self) -> tuple[DemoConfig, Recipe]:
        """This config with every None filled from the environment's recipe, and the recipe."""
        r = recipe_for(self.env)
        fill = {k: getattr(r, k) for k in ("policy", "noise", "episodes", "max_episode_steps", "tokenizer_steps",
                                           "dynamics_steps", "decoder_steps", "max_clips", "temperature",
                                           "guidance_scale") if getattr(self, k) is None}
        return dataclasses.replace(self, **fill), r


class Stages:
    """Times each stage and records which ran and which were already done."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.skipped: list[str] = []
        self.t0 = time.perf_counter()

    def run(self, name: str, done: bool, fn: Any) -> None:
        if done:
            print(f"[demo] {name}: already done, skipped")
            self.skipped.append(name)
            return
        print(f"\n[demo] {name} ...", flush=True)
        t = time.perf_counter()
        fn()
        self.seconds[name] = round(time.perf_counter() - t, 1)
        print(f"[demo] {name}: {self.seconds[name]:.0f}s", flush=True)

    @property
    def total(self) -> float:
        return round(time.perf_counter() - self.t0, 1)


def peak_memory_gib() -> dict[str, float]:
    """Peak resident memory of this process and of its largest finished child (loader and collection workers)."""
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux
    child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 2**20
    return {"main_process_gib": round(own, 2), "largest_child_gib": round(child, 2)}


def _train_config(kind: str, steps: int, seed: int, overrides: list[str]) -> Any:
    cfg = load_config(kind, preset_name="tiny", overrides=tuple(overrides))
    return dataclasses.replace(cfg, trainer=dataclasses.replace(cfg.trainer, seed=seed, max_steps=steps))


def heldout_clip_key(data: Path) -> str:
    """Key of the first held-out clip (of the split training and evaluation use)."""
    info = load_dataset_info(data)
    heldout = require_heldout(split_dataset(data, info=info)).heldout
    url = shard_paths(data, info)[heldout.shards[0]]
    return next(c.key for c in iter_clips(url, info.action_space) if heldout.keeps(c.meta.episode_id))


def run_demo(cfg: DemoConfig, out: str | Path) -> dict[str, Any]:
    """Run every stage into ``out``; returns the summary (also written to ``out/demo_summary.json``)."""
    cfg, recipe = cfg.resolved()
    out = Path(out)
    data, wm_dir = out / "data", out / "world_model"
    stages = Stages()
    _build(cfg, recipe, out, stages)
    video = out / "generated.mp4"
    # the VQ decoder takes no steps (None: no warning about a setting it cannot use)
    render_steps = cfg.num_inference_steps if cfg.decoder_steps else None
    gen_cfg = GenerateConfig(num_frames=16 - cfg.context_frames, context_frames=cfg.context_frames, gif=True,
                             side_by_side=True, num_inference_steps=render_steps,
                             temperature=cfg.temperature, seed=cfg.seed)
    stages.run("generate", False, lambda: _generate(wm_dir, f"{data}#{heldout_clip_key(data)}", gen_cfg, video))

    report: dict[str, Any] = {}

    def evaluate() -> None:
        model = WorldModel.from_pretrained(wm_dir)
        ecfg = EvalConfig(horizon=cfg.horizon, context_frames=cfg.context_frames, max_clips=cfg.max_clips,
                          batch_size=16, temperature=cfg.temperature, num_inference_steps=render_steps,
                          guidance_scale=cfg.guidance_scale, maskgit_steps=recipe.maskgit_steps, seed=cfg.seed,
                          methods=DEMO_METHODS)
        report.update(evaluate_world_model(model, str(data), ecfg))
        report["model"] = str(wm_dir)
        write_report(report, out / "eval")

    stages.run("eval", False, evaluate)
    verdict, machine = verdicts(report), machine_record()
    summary = {"config": dataclasses.asdict(cfg), "stage_seconds": stages.seconds, "skipped": stages.skipped,
               "total_seconds": stages.total, "peak_memory": peak_memory_gib(), "verdicts": verdict,
               "outputs": {"video": str(video), "gif": str(video.with_suffix(".gif")),
                           "report": str(out / "eval" / "report.md"), "world_model": str(wm_dir),
                           "contact_sheet": str(out / "data.png")},
               "date": machine["date"], "machine": machine}
    atomic_write_json(out / "demo_summary.json", summary)
    print("\n" + markdown(report, horizons=[h for h in (1, 2, 4, 8, 16) if h in report["horizons"]]))
    print(format_verdicts(verdict))
    print(f"stage seconds: {json.dumps(stages.seconds)}")
    print(f"total {stages.total / 60:.1f} min; peak memory {summary['peak_memory']}")
    print(f"video: {video} (+ .gif), report: {out / 'eval' / 'report.md'}, world model: {wm_dir}")
    return summary


def _build(cfg: DemoConfig, recipe: Recipe, out: Path, stages: Stages) -> None:
    """The stages that make the world model: data, the three trainings, tokens, and the world-model folder."""
    data, tokens, runs, wm_dir = out / "data", out / "tokens", out / "runs", out / "world_model"
    ov = {part: [*getattr(recipe, part, []), *cfg.overrides.get(part, [])] for part in ("tokenizer", "dynamics")}
    ov["decoder"] = list(cfg.overrides.get("decoder", []))

    def collect_data() -> None:
        ccfg = CollectConfig(env=cfg.env, episodes=cfg.episodes, policy=cfg.policy, noise=cfg.noise, size=64,
                             clip_len=16, stride=recipe.stride, workers=cfg.workers,
                             episodes_per_shard=recipe.episodes_per_shard, max_episode_steps=cfg.max_episode_steps,
                             seed=cfg.seed, hold=recipe.hold if cfg.policy == "random" else 1)
        collect(ccfg, data)
        summary = inspect_dataset(data, sheet=out / "data.png", gif=out / "data.gif")
        print(format_summary(summary))

    stages.run("data", (data / "dataset.json").exists(), collect_data)
    stages.run("tokenizer", (runs / "tokenizer" / "export").is_dir(), lambda: train_tokenizer(
        _train_config("train_tokenizer", cfg.tokenizer_steps, cfg.seed, ov.get("tokenizer", [])), str(data),
        runs / "tokenizer"))
    stages.run("tokens", (tokens / "dataset.json").exists(), lambda: tokenize_dataset(
        runs / "tokenizer" / "export", data, tokens, show_progress=None))
    stages.run("dynamics", (runs / "dynamics" / "export").is_dir(), lambda: train_dynamics(
        _train_config("train_dynamics", cfg.dynamics_steps, cfg.seed, ov.get("dynamics", [])), str(tokens),
        runs / "dynamics"))
    decoder = None  # 0 decoder steps: frames come from the VQ decoder (keeping still patches, for a patch tokenizer)
    if cfg.decoder_steps:
        decoder = str(runs / "decoder")
        stages.run("decoder", (runs / "decoder" / "export").is_dir(), lambda: train_decoder(
            _train_config("train_decoder", cfg.decoder_steps, cfg.seed, ov.get("decoder", [])), str(data),
            str(runs / "tokenizer" / "export"), runs / "decoder"))
    stages.run("world_model", False, lambda: export_world_model(
        str(runs / "tokenizer"), str(runs / "dynamics"), decoder, str(data), str(wm_dir)))


def _generate(model: Path, context: str, cfg: GenerateConfig, video: Path) -> None:
    result = generate_video(model, context, cfg, out=video)
    print(f"wrote {result.video} ({result.frames} frames at {result.fps:g} fps) and {result.trace}")
    print(f"wrote {result.gif}")


def demo(out: str = "demo_out", env: str = DEMO_ENV, policy: str | None = None, noise: float | None = None,
         episodes: int | None = None, max_episode_steps: int | None = None, workers: int = 2,
         tokenizer_steps: int | None = None, dynamics_steps: int | None = None, decoder_steps: int | None = None,
         horizon: int = 8, max_clips: int | None = None, num_inference_steps: int = 1,
         temperature: float | None = None, guidance_scale: float | None = None, seed: int = 0) -> None:
    """Build a whole world model from a simulator on this machine's CPU, in about 15 minutes on 2 idle cores:
    collect episodes, train the tiny tokenizer, dynamics transformer and diffusion decoder, generate a held-out
    clip's future from its true actions (mp4 + GIF, ground truth beside it), evaluate held-out clips against
    copy-last-frame, shuffled actions and the tokenizer ceiling, and say whether the model beats copy-last-frame and
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
    cfg = DemoConfig(env=env, policy=policy, noise=noise, episodes=episodes, max_episode_steps=max_episode_steps,
                     workers=workers, tokenizer_steps=tokenizer_steps, dynamics_steps=dynamics_steps,
                     decoder_steps=decoder_steps, horizon=horizon, max_clips=max_clips,
                     num_inference_steps=num_inference_steps, temperature=temperature, guidance_scale=guidance_scale,
                     seed=seed)
    run_demo(cfg, out)
