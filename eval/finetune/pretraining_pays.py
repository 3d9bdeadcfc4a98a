"""Does pretraining on action-free video pay? Pretrain the dynamics model on videos of several Meta-World tasks,
fine-tune it on a LeRobot-format robot dataset of another task, and compare it, at the same number of steps on the
robot data, with the same model trained from scratch on the robot data alone; both are scored on held-out robot
episodes with their true actions and with shuffled ones.

    python eval/finetune/pretraining_pays.py --out runs/pretraining_pays                  # about 45 minutes
    python eval/finetune/pretraining_pays.py --smoke --out runs/pretraining_pays_smoke    # a few minutes

Everything goes through the project's own commands, run as subprocesses (logs in ``OUT/logs/``):

1. collect: noisy scripted-expert episodes (action held 4 physics steps: 20 frames/s, 64x64) of the video tasks,
   written as mp4 files (``wm_video.utils.video_io.write_mp4``), and of the robot task, written as a LeRobot
   v2.1 dataset (parquet frames + H.264 videos + JSONL metadata; :mod:`metaworld_lerobot`);
2. ``wm-video data videos`` (the video tasks: pretraining clips; the videos plus the robot's training episodes:
   the tokenizer's mix) and ``wm-video data lerobot`` (the robot clips, with actions);
3. ``wm-video train tokenizer`` on the mix, then ``wm-video data tokenize`` of the video and robot clips;
4. ``wm-video train dynamics`` on the video tokens (action-free: pretraining), then on the robot tokens with
   ``--init-from`` the pretrained export (fine-tuning) and without it (from scratch), same steps and recipe;
5. ``eval/dynamics/eval_dynamics.py`` (one-shot next-frame token cross-entropy and accuracy with true, shuffled and
   null actions) and ``wm-video export`` + ``wm-video eval`` (open-loop rollouts on held-out clips: PSNR and token
   accuracy per horizon, with shuffled actions, copy-last-frame and the tokenizer's ceiling);
6. ``OUT/results.json``, ``OUT/results.md`` and ``OUT/pretraining_pays.png``.

Held-out robot episodes are the last shards of the robot dataset (the split training validates on); shards hold
whole episodes, and the tokenizer never sees the held-out episodes either.

Budget. ``--budget-minutes`` (default 45) is the whole run's wall clock. Collection, data pipelines, tokenization
and evaluation are estimated from their sizes; the rest goes to the tokenizer (20%), pretraining (44%), fine-tuning
(18%) and training from scratch (18%). Training step counts come from timing a few steps of the model in this
process first (``plan.json`` records them); the plan is printed before anything runs.

Model size. The ``small`` dynamics preset (23M parameters) takes about 8 s per step on a 2-core CPU, so 45
minutes would buy a few hundred steps in all. This script trains a 1.6M-parameter model (width 128, depth 4, 4
heads, conditioning width 64, 8-frame window, batch 8): about 1 s per step on 2 cores, so several hundred
pretraining steps and a few hundred fine-tuning steps fit the budget. ``--smoke`` shrinks data, model and steps to
check the pipeline end to end in minutes (its numbers mean nothing).

Resuming. Rerunning the same command skips every stage whose outputs exist; an interrupted training run resumes
from its last checkpoint (the CLIs do that themselves). The stored ``OUT/plan.json`` wins over new flags: use a new
``--out`` to change settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import metaworld_lerobot as mwl

from wm_video.utils.atomic import atomic_write_bytes, atomic_write_json

REPO = Path(__file__).resolve().parents[2]
WM = [sys.executable, "-m", "wm_video"]
ROBOT_RUNS = ("finetuned", "scratch")
SHARE = {"tokenizer": 0.20, "pretrain": 0.44, "finetune": 0.18, "scratch": 0.18}  # of the time left for training
SIM_STEPS_PER_S = 115  # Meta-World at 64x64 per process (measured on the 2-core CPU machine)
STEP_OVERHEAD = 1.15  # loader, logging and validation on top of the timed optimizer step
RUN_STARTUP_S = 25  # a training command's imports, MFU probe, loader start and sanity validation


@dataclass
class Plan:
    """Every setting of one run (``OUT/plan.json``)."""

    budget_minutes: float
    smoke: bool
    video_tasks: list[str]
    robot_task: str
    video_episodes: int  # per video task
    robot_episodes: int
    episodes_per_shard: int  # robot shards hold whole episodes
    heldout_shards: int
    max_sim_steps: int  # physics steps per episode
    repeat: int = 4
    size: int = 64
    clip_len: int = 16
    stride: int = 8
    noise_video: float = 0.3
    noise_robot: float = 0.5
    workers: int = 2
    seed: int = 0
    tokenizer_config: str = "configs/tokenizer/metaworld_small.yaml"
    model: dict[str, Any] = field(default_factory=dict)
    batch_size: int = 8
    lr_pretrain: float = 1e-3
    lr_robot: float = 1e-3
    lora_rank: int = 0
    eval_context: int = 4
    eval_horizon: int = 8
    eval_max_clips: int = 64
    maskgit_steps: int = 8
    minutes: dict[str, float] = field(default_factory=dict)
    seconds_per_step: float = 0.0
    threads: int = 1
    tokenizer_steps: int = 0
    pretrain_steps: int = 0
    robot_steps: int = 0
    robot_steps_measured: bool = False  # re-planned from the pretraining run's own speed (before the robot runs)

    @property
    def frames_per_episode(self) -> int:
        return math.ceil(self.max_sim_steps / self.repeat)


# ---- planning --------------------------------------------------------------------------------------------------

def make_plan(args: argparse.Namespace) -> Plan:
    if args.smoke:
        plan = Plan(budget_minutes=args.budget_minutes or 6, smoke=True, video_tasks=args.video_tasks[:2],
                    robot_task=args.robot_task, video_episodes=3, robot_episodes=8, episodes_per_shard=2,
                    heldout_shards=1, max_sim_steps=64, clip_len=8, stride=4, workers=args.workers,
                    model=dict(width=32, depth=2, heads=2, cond_dim=16, context_frames=4), batch_size=4,
                    eval_context=2, eval_horizon=4, eval_max_clips=8, maskgit_steps=2, lora_rank=args.lora_rank)
    else:
        plan = Plan(budget_minutes=args.budget_minutes or 45, smoke=False, video_tasks=args.video_tasks,
                    robot_task=args.robot_task, video_episodes=args.video_episodes,
                    robot_episodes=args.robot_episodes, episodes_per_shard=4, heldout_shards=2, max_sim_steps=200,
                    workers=args.workers, model=dict(width=128, depth=4, heads=4, cond_dim=64, context_frames=8),
                    lora_rank=args.lora_rank)
    if plan.robot_task in plan.video_tasks:
        raise SystemExit(f"--robot-task {plan.robot_task} is also a video task: the robot task is held out of "
                         "pretraining")
    plan.threads = _threads()
    sim_steps = (len(plan.video_tasks) * plan.video_episodes + plan.robot_episodes) * plan.max_sim_steps
    frames = sim_steps // plan.repeat
    # minutes; each command starts in about 10 s (imports); rollouts cost one model pass per MaskGIT step
    rollout = plan.eval_max_clips * plan.eval_horizon * plan.maskgit_steps * 0.004 / 60
    fixed = {"collect": sim_steps / (SIM_STEPS_PER_S * plan.workers) / 60 * 1.1 + 0.2,
             "pipelines": 3 * 0.2 + 2 * frames / 3000 / 60,
             "tokenize": 2 * 0.2 + frames / 800 / 60,
             "evaluate": 3 * 0.2 + 2 * (0.4 + 2 * rollout)}
    left = plan.budget_minutes - sum(fixed.values()) - 0.3  # the calibration
    if left < 0.4 * plan.budget_minutes:
        print(f"warning: data and evaluation alone take about {sum(fixed.values()):.1f} of the "
              f"{plan.budget_minutes:g} minutes; training gets {max(left, 0):.1f}")
    left = max(left, 2.0)
    plan.minutes = {**{k: round(v, 2) for k, v in fixed.items()},
                    **{k: round(left * share, 2) for k, share in SHARE.items()}}
    plan.seconds_per_step = calibrate(plan)
    per_step = plan.seconds_per_step * STEP_OVERHEAD
    steps = {k: max(10, int((plan.minutes[k] * 60 - RUN_STARTUP_S) / per_step)) for k in ("pretrain", "finetune")}
    plan.pretrain_steps, plan.robot_steps = steps["pretrain"], steps["finetune"]
    # the small tokenizer trains at about 2.8 steps/s on 2 cores: a cap its time limit normally reaches first
    plan.tokenizer_steps = max(20, int(plan.minutes["tokenizer"] * 60 * 3))
    if plan.smoke:
        plan.pretrain_steps, plan.robot_steps, plan.tokenizer_steps = (min(plan.pretrain_steps, 30),
                                                                       min(plan.robot_steps, 20), 40)
    return plan


def replan_robot_steps(plan: Plan, runner: Runner) -> None:
    """Before the robot runs: set their (shared) step count from the pretraining run's measured seconds per step
    and from the time left in the budget, so the run keeps to it even when earlier stages ran long or the
    calibration was optimistic. Done once; stored in ``plan.json``."""
    spent = runner.timings.get("pretrain")
    if plan.robot_steps_measured or not spent or plan.smoke:
        return
    done = trained_steps(runner.out / "runs" / "pretrain") or plan.pretrain_steps  # fewer if its time limit hit
    per_step = max(spent - RUN_STARTUP_S, 1.0) / done
    left = plan.budget_minutes * 60 - sum(runner.timings.values()) - plan.minutes["evaluate"] * 60
    each = min(plan.minutes["finetune"] * 60, left / 2) - RUN_STARTUP_S - 20  # 20 s: held-out scores before/after
    steps = max(10, int(each / per_step))
    print(f"    robot runs: {steps} steps each ({per_step:.2f} s per step measured in pretraining, "
          f"{max(left, 0) / 60:.1f} min left for them and the evaluation; planned {plan.robot_steps})")
    plan.robot_steps, plan.robot_steps_measured = steps, True
    atomic_write_json(runner.out / "plan.json", dataclasses.asdict(plan))


def _threads() -> int:
    import torch

    return torch.get_num_threads()


def calibrate(plan: Plan) -> float:
    """Seconds per optimizer step of the planned dynamics model on a batch of the planned shape (median of a few
    timed steps after two warm-up steps), in this process with this process's threads."""
    import torch

    from wm_video.models.dynamics import DynamicsConfig, DynamicsModel

    grid = plan.size // 8  # the small tokenizer's 8x downsampling
    cfg = DynamicsConfig(vocab_size=512, token_h=grid, token_w=grid, action_type="continuous", action_dim=4,
                         **plan.model)
    model = DynamicsModel(cfg)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    t, b = cfg.context_frames, plan.batch_size
    batch = {"tokens": torch.randint(0, 512, (b, t, grid, grid)), "actions": torch.randn(b, t, 4),
             "rewards": torch.rand(b, t), "terminations": torch.zeros(b, t, dtype=torch.bool)}
    times = []
    for i in range(6 if plan.smoke else 7):
        start = time.perf_counter()
        loss, _ = model.compute_loss(batch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return round(sorted(times)[len(times) // 2], 4)


def print_plan(plan: Plan, out: Path) -> None:
    n_params = _model_params(plan)
    m = plan.minutes
    rows = [
        ("collect", m["collect"], f"{len(plan.video_tasks)} video tasks x {plan.video_episodes} episodes "
                                  f"({', '.join(plan.video_tasks)}) -> mp4; {plan.robot_task} x "
                                  f"{plan.robot_episodes} episodes -> LeRobot v2.1; {plan.frames_per_episode} frames "
                                  f"each at {80 / plan.repeat:g} fps"),
        ("pipelines", m["pipelines"], "data videos (pretraining clips; tokenizer mix), data lerobot (robot clips)"),
        ("tokenizer", m["tokenizer"], f"small preset on the mix, at most {plan.tokenizer_steps} steps"),
        ("tokenize", m["tokenize"], "video and robot clips"),
        ("pretrain", m["pretrain"], f"{plan.pretrain_steps} steps on the video tokens (action-free)"),
        ("finetune", m["finetune"], f"{plan.robot_steps} steps on the robot tokens from the pretrained model"
                                    + (f" (LoRA rank {plan.lora_rank})" if plan.lora_rank else "")),
        ("scratch", m["scratch"], f"{plan.robot_steps} steps on the robot tokens from a random init"),
        ("evaluate", m["evaluate"], f"held-out robot episodes: one-shot tokens; rollouts of {plan.eval_horizon} "
                                    f"frames after {plan.eval_context}, true vs shuffled actions"),
    ]
    print(f"pretraining pays: {'SMOKE run, ' if plan.smoke else ''}budget {plan.budget_minutes:g} min, "
          f"{plan.threads} torch thread(s), out {out}")
    print(f"dynamics model: {n_params / 1e6:.2f}M parameters {plan.model}, batch {plan.batch_size} x "
          f"{plan.model['context_frames']} frames; {plan.seconds_per_step:.2f} s per step measured here")
    for i, (name, minutes, what) in enumerate(rows, 1):
        print(f"  {i}. {name:<10} {minutes:5.1f} min  {what}")
    print(f"  total about {sum(m.values()):.1f} min", flush=True)


def _model_params(plan: Plan) -> int:
    from wm_video.models.dynamics import DynamicsConfig, DynamicsModel

    grid = plan.size // 8
    model = DynamicsModel(DynamicsConfig(vocab_size=512, token_h=grid, token_w=grid, action_type="continuous",
                                         action_dim=4, **plan.model))
    return sum(p.numel() for p in model.parameters())


# ---- running stages --------------------------------------------------------------------------------------------

class Runner:
    """Runs the stages in order, skipping finished ones, timing the rest (``OUT/timings.json``)."""

    PROGRESS = re.compile(r"step \d+/\d+|clips?/s|frames/s|\d+%\|")

    def __init__(self, plan: Plan, out: Path) -> None:
        self.plan, self.out = plan, out
        self.logs = out / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.timings_path = out / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.exists() else {}
        self.t0 = time.monotonic()

    def stage(self, name: str, done: bool, fn: Any) -> None:
        elapsed = (time.monotonic() - self.t0) / 60
        if done:
            print(f"[{elapsed:5.1f} min] {name}: done before, skipped", flush=True)
            return
        print(f"[{elapsed:5.1f} min] {name}: starting (planned {self.plan.minutes.get(name, 0):.1f} min)",
              flush=True)
        start = time.monotonic()
        fn()
        self.timings[name] = round(time.monotonic() - start, 1)
        atomic_write_json(self.timings_path, self.timings)
        print(f"[{(time.monotonic() - self.t0) / 60:5.1f} min] {name}: finished in {self.timings[name] / 60:.1f} min",
              flush=True)

    def run(self, args: list[str], log: str) -> None:
        """Run a command from the repository root, its output into ``logs/<log>.log``; progress lines are echoed
        at most every 20 s; a failure prints the log's tail and stops the script (a rerun resumes)."""
        path = self.logs / f"{log}.log"
        cmd = [str(a) for a in args]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        last = 0.0
        with open(path, "a") as f:
            f.write(f"\n$ {' '.join(cmd)}\n")
            f.flush()
            proc = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                    text=True, bufsize=1)
            assert proc.stdout is not None
            for line in proc.stdout:
                f.write(line)
                if self.PROGRESS.search(line) and time.monotonic() - last > 20:
                    last = time.monotonic()
                    print(f"    {log}: {line.strip()[:150]}", flush=True)
            rc = proc.wait()
        if rc:
            tail = path.read_text().splitlines()[-25:]
            print("\n".join(f"    | {t}" for t in tail))
            raise SystemExit(f"{log} failed (exit status {rc}); full log: {path}. Rerun the same command to resume.")


# ---- the stages ------------------------------------------------------------------------------------------------

def paths(out: Path) -> dict[str, Path]:
    d, r = out / "data", out / "runs"
    return {"videos": d / "videos", "lerobot": d / "robot_lerobot", "work": d / "robot_episodes",
            "video_frames": d / "video_frames", "robot_frames": d / "robot_frames", "mix": d / "mix_frames",
            "mix_list": d / "mix_videos.txt", "video_tokens": d / "video_tokens", "robot_tokens": d / "robot_tokens",
            "tokenizer": r / "tokenizer", "pretrain": r / "pretrain", "finetuned": r / "finetuned",
            "scratch": r / "scratch", "eval": out / "eval"}


def collect(plan: Plan, p: dict[str, Path]) -> None:
    fps = 80 / plan.repeat
    mwl.run_jobs(mwl.video_jobs(p["videos"], plan.video_tasks, plan.video_episodes, plan.size, plan.repeat,
                                plan.max_sim_steps, plan.noise_video, plan.seed), plan.workers, "video episodes")
    mwl.run_jobs(mwl.robot_jobs(p["lerobot"], p["work"], plan.robot_task, plan.robot_episodes, plan.size,
                                plan.repeat, plan.max_sim_steps, plan.noise_robot, plan.seed + 100_000),
                 plan.workers, "robot episodes")
    info = mwl.write_lerobot_v21(p["lerobot"], p["work"], plan.robot_task, plan.robot_episodes, plan.size,
                                 int(fps) if fps == int(fps) else fps)
    print(f"    LeRobot v2.1 dataset: {info['total_episodes']} episodes, {info['total_frames']} frames in "
          f"{p['lerobot']}")


def clips_per_episode(plan: Plan) -> int:
    from wm_video.data.writer import clip_starts

    return len(clip_starts(plan.frames_per_episode, plan.clip_len, plan.stride))


def pipelines(plan: Plan, p: dict[str, Path], runner: Runner) -> None:
    common = ["--size", plan.size, "--clip-len", plan.clip_len, "--stride", plan.stride, "--workers", plan.workers]
    video_shard = 8 if plan.smoke else 64
    if not (p["video_frames"] / "dataset.json").exists():
        runner.run([*WM, "data", "videos", "--data", p["videos"], "--out", p["video_frames"], "--fps", 80 / plan.repeat,
                    "--clips-per-shard", video_shard, *common], "data_videos")
    if not (p["robot_frames"] / "dataset.json").exists():
        # shards of whole episodes, so the held-out shards are held-out episodes
        runner.run([*WM, "data", "lerobot", "--data", p["lerobot"], "--out", p["robot_frames"], "--camera",
                    mwl.CAMERA, "--clips-per-shard", clips_per_episode(plan) * plan.episodes_per_shard, *common],
                   "data_lerobot")
    held = heldout_episodes(plan, p)
    train_eps = [e for e in range(plan.robot_episodes) if e not in held]
    videos = sorted(str(v) for v in p["videos"].rglob("*.mp4"))
    videos += [str(p["lerobot"] / mwl.lerobot_video_path(e)) for e in train_eps]
    p["mix_list"].write_text("\n".join(videos) + "\n")
    print(f"    tokenizer mix: {len(videos)} videos ({len(train_eps)} robot training episodes; held-out robot "
          f"episodes {sorted(held)} left out)")
    runner.run([*WM, "data", "videos", "--data", p["mix_list"], "--out", p["mix"], "--fps", 80 / plan.repeat,
                "--clips-per-shard", video_shard, *common], "data_mix")


def robot_val_fraction(plan: Plan, p: dict[str, Path]) -> float:
    """The val_fraction whose split holds out the last ``plan.heldout_shards`` robot shards: their episodes (shards
    hold whole episodes), or the shards themselves in a dataset.json written before splits were recorded."""
    from wm_video.data.reader import load_dataset_info

    n = len(load_dataset_info(p["robot_frames"]).shards)
    if n < plan.heldout_shards + 1:
        raise SystemExit(f"{p['robot_frames']} has {n} shards; need more than {plan.heldout_shards}")
    return plan.heldout_shards / n


def heldout_episodes(plan: Plan, p: dict[str, Path]) -> set[int]:
    """Robot episode indices held out (read from the held-out clips' metadata)."""
    from wm_video.data.reader import iter_clips, load_dataset_info, shard_paths
    from wm_video.data.split import split_dataset

    info = load_dataset_info(p["robot_frames"])
    held = split_dataset(p["robot_frames"], robot_val_fraction(plan, p), info=info).heldout
    urls = shard_paths(p["robot_frames"], info)
    return {int(clip.meta.extra["episode_index"]) for k in held.shards for clip in iter_clips(urls[k])
            if held.keeps(clip.meta.episode_id)}


def train_tokenizer(plan: Plan, p: dict[str, Path], runner: Runner) -> None:
    runner.run([*WM, "train", "tokenizer", "--config", plan.tokenizer_config, "--data", p["mix"], "--out",
                p["tokenizer"], "--max-steps", plan.tokenizer_steps, "--max-minutes", plan.minutes["tokenizer"],
                "trainer.logger=none", "trainer.log_every_n_steps=25",
                f"trainer.checkpoint_every_n_steps={max(50, plan.tokenizer_steps // 10)}"], "train_tokenizer")


def tokenize(p: dict[str, Path], runner: Runner) -> None:
    for src, dst in (("video_frames", "video_tokens"), ("robot_frames", "robot_tokens")):
        if not (p[dst] / "dataset.json").exists():
            runner.run([*WM, "data", "tokenize", "--tokenizer", p["tokenizer"] / "export", "--data", p[src], "--out",
                        p[dst], "--device", "cpu"], f"tokenize_{src}")


def dynamics_overrides(plan: Plan, steps: int, lr: float) -> list[str]:
    """The run config shared by all three dynamics runs (the model fields matter to pretraining and scratch; a
    fine-tuning run takes the architecture from the pretrained export)."""
    model = [f"model.{k}={v}" for k, v in plan.model.items()]
    return [*model, f"train_frames={plan.model['context_frames']}", f"loader.batch_size={plan.batch_size}",
            f"optim.lr={lr}", f"optim.warmup_steps={max(5, min(100, steps // 10))}", "trainer.logger=none",
            f"trainer.log_every_n_steps={max(1, min(25, steps // 20))}",
            f"trainer.val_check_interval={max(10, steps // 3)}",
            f"trainer.checkpoint_every_n_steps={max(10, steps // 5)}", "val_batches=2"]


def train_dynamics(plan: Plan, p: dict[str, Path], runner: Runner, which: str) -> None:
    minutes = plan.minutes["pretrain" if which == "pretrain" else which.replace("finetuned", "finetune")]
    if which == "pretrain":
        steps, data, extra = plan.pretrain_steps, p["video_tokens"], []
        overrides = dynamics_overrides(plan, steps, plan.lr_pretrain)
    else:
        steps, data = plan.robot_steps, p["robot_tokens"]
        vf = robot_val_fraction(plan, p)
        extra = ["--init-from", p["pretrain"] / "export"] if which == "finetuned" else []
        overrides = [*dynamics_overrides(plan, steps, plan.lr_robot), f"val_fraction={vf}",
                     "model.null_action_prob=0.05", "finetune.eval_batch_size=8"]
        if which == "finetuned" and plan.lora_rank:
            overrides.append(f"finetune.lora.rank={plan.lora_rank}")
    # the time limit is a safety net (1.5x the plan): the step count is what the runs are compared at
    runner.run([*WM, "train", "dynamics", "--preset", "small", "--data", data, "--out", p[which], "--max-steps", steps,
                "--max-minutes", round(1.5 * minutes + 1, 1), *extra, *overrides], f"train_{which}")


def evaluate(plan: Plan, p: dict[str, Path], runner: Runner) -> None:
    vf = robot_val_fraction(plan, p)
    p["eval"].mkdir(parents=True, exist_ok=True)
    for name in ROBOT_RUNS:  # the pretrained model itself: finetune_eval.json's "before" (same protocol and clips)
        target = p["eval"] / f"{name}_one_shot.json"
        if not target.exists():
            runner.run([sys.executable, "eval/dynamics/eval_dynamics.py", "--dynamics", p[name] / "export", "--data",
                        p["robot_tokens"], "--val-fraction", vf, "--out", target], f"eval_{name}_one_shot")
    for name in ROBOT_RUNS:
        report = p["eval"] / f"{name}_rollout"
        if (report / "report.json").exists():
            continue
        wm = p[name] / "world_model"
        runner.run([*WM, "export", "--tokenizer", p["tokenizer"] / "export", "--dynamics", p[name] / "export", "--data",
                    p["robot_frames"], "--out", wm], f"export_{name}")
        runner.run([*WM, "eval", "--model", wm, "--data", p["robot_frames"], "--horizon", plan.eval_horizon,
                    "--context-frames", plan.eval_context, "--max-clips", plan.eval_max_clips, "--val-fraction", vf,
                    "--maskgit-steps", plan.maskgit_steps, "--out", report], f"eval_{name}_rollout")


# ---- the report ------------------------------------------------------------------------------------------------

def trained_steps(run: Path) -> int | None:
    from wm_video.training.checkpointing import load_checkpoint_meta

    last = run / "checkpoints" / "last.ckpt"
    return int(load_checkpoint_meta(last)["global_step"]) if last.exists() else None


def mean(xs: list[float]) -> float:
    return sum(xs) / len(xs)


def report(plan: Plan, p: dict[str, Path], out: Path, timings: dict[str, float]) -> dict[str, Any]:
    from wm_video.utils.machine import machine_record  # imports torch: kept out of the orchestrator's start-up

    finetune_eval = json.loads((p["finetuned"] / "finetune_eval.json").read_text())
    # before fine-tuning, every robot action is the null action: this is the pretrained model as it was
    models: dict[str, Any] = {"pretrain": {"steps": trained_steps(p["pretrain"]), "one_shot": finetune_eval["before"]}}
    for name in ROBOT_RUNS:
        models[name] = {"steps": trained_steps(p[name]),
                        "one_shot": json.loads((p["eval"] / f"{name}_one_shot.json").read_text()),
                        "rollout": json.loads((p["eval"] / f"{name}_rollout" / "report.json").read_text())}
    models["finetuned"]["finetune_eval"] = finetune_eval
    ft, sc = models["finetuned"], models["scratch"]

    def psnr(m: dict, method: str) -> float:
        return mean(m["rollout"]["results"][method]["psnr_db"])

    def tok(m: dict, method: str) -> float:
        return mean(m["rollout"]["results"][method]["token_accuracy"])

    margins = {
        "one_shot_ce_scratch_minus_finetuned": sc["one_shot"]["token_ce_true_actions"]
        - ft["one_shot"]["token_ce_true_actions"],
        "one_shot_ce_finetuned_shuffled_minus_true": ft["one_shot"]["token_ce_shuffled_actions"]
        - ft["one_shot"]["token_ce_true_actions"],
        "one_shot_ce_scratch_shuffled_minus_true": sc["one_shot"]["token_ce_shuffled_actions"]
        - sc["one_shot"]["token_ce_true_actions"],
        "rollout_psnr_finetuned_minus_scratch": psnr(ft, "model") - psnr(sc, "model"),
        "rollout_psnr_finetuned_true_minus_shuffled": psnr(ft, "model") - psnr(ft, "shuffled_actions"),
    }
    claims = {
        "finetuned_beats_scratch_one_shot_ce": ft["one_shot"]["token_ce_true_actions"]
        < sc["one_shot"]["token_ce_true_actions"],
        "finetuned_true_beats_shuffled_one_shot_ce": ft["one_shot"]["token_ce_true_actions"]
        < ft["one_shot"]["token_ce_shuffled_actions"],
        "finetuned_beats_scratch_rollout_psnr": psnr(ft, "model") > psnr(sc, "model"),
        "finetuned_true_beats_shuffled_rollout_psnr": psnr(ft, "model") > psnr(ft, "shuffled_actions"),
        "finetuned_beats_scratch_rollout_token_acc": tok(ft, "model") > tok(sc, "model"),
        "same_robot_steps": ft["steps"] == sc["steps"] == plan.robot_steps,
    }
    result = {
        "experiment": "pretraining pays: action-free video pretraining, then robot fine-tuning, against scratch",
        "claims": claims, "margins": margins, "models": models,
        "summary": {name: {"steps": models[name]["steps"], **{k: models[name]["one_shot"].get(k) for k in (
            "token_ce_true_actions", "token_ce_shuffled_actions", "token_ce_null_action", "next_frame_token_acc",
            "copy_last_frame_acc")}, **({"rollout_psnr_mean": psnr(models[name], "model"),
                                         "rollout_psnr_mean_shuffled": psnr(models[name], "shuffled_actions"),
                                         "rollout_token_acc_mean": tok(models[name], "model"),
                                         "rollout_token_acc_mean_shuffled": tok(models[name], "shuffled_actions")}
                                        if name in ROBOT_RUNS else {})} for name in models},
        "protocol": {"script": "eval/finetune/pretraining_pays.py", "plan": dataclasses.asdict(plan),
                     "stage_seconds": timings, **machine_record(threads=False),  # the stages ran as processes
                     "heldout": "the last robot shards (whole episodes); the tokenizer never saw them",
                     "one_shot": "eval/dynamics/eval_dynamics.py (the pretrained model: finetune_eval.json's "
                                 "'before'): every frame from its clean past, argmax",
                     "rollout": "wm-video eval: open-loop, VQ decoder, argmax MaskGIT"}}
    atomic_write_json(out / "results.json", result)
    atomic_write_bytes(out / "results.md", markdown(result, plan).encode())
    plot(result, out / "pretraining_pays.png")
    return result


def markdown(result: dict, plan: Plan) -> str:
    s, m = result["summary"], result["models"]
    horizons = m["finetuned"]["rollout"]["horizons"]
    shown = sorted({1, max(1, len(horizons) // 2), len(horizons)})
    lines = [f"# Pretraining pays ({'SMOKE run: numbers mean nothing' if plan.smoke else 'Meta-World'})", "",
             f"Pretrained on action-free videos of {', '.join(plan.video_tasks)} ({plan.video_episodes} episodes "
             f"each); robot data: {plan.robot_task}, {plan.robot_episodes} LeRobot v2.1 episodes "
             f"({plan.heldout_shards * plan.episodes_per_shard} held out). Model {plan.model}; "
             f"{plan.robot_steps} robot steps for both fine-tuning and scratch. {result['protocol']['date']}.", "",
             "## One-shot next-frame tokens on held-out robot clips (cross-entropy in nats per token; lower is better)",
             "", "| model | steps | CE true actions | CE shuffled | CE null action | token acc | copy-last-frame acc |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    labels = {"pretrain": "pretrained only (action-free)", "finetuned": "pretrained + fine-tuned",
              "scratch": "from scratch"}
    for name, row in s.items():
        def fmt(k: str, r: dict = row) -> str:
            return "-" if r.get(k) is None else f"{r[k]:.4f}"
        lines.append(f"| {labels[name]} | {row['steps']} | {fmt('token_ce_true_actions')} | "
                     f"{fmt('token_ce_shuffled_actions')} | {fmt('token_ce_null_action')} | "
                     f"{fmt('next_frame_token_acc')} | {fmt('copy_last_frame_acc')} |")
    lines += ["", f"## Open-loop rollouts on held-out robot clips ({plan.eval_context} context frames)", "",
              "| model | actions | " + " | ".join(f"PSNR h={h}" for h in shown) + " | mean PSNR | "
              + " | ".join(f"token acc h={h}" for h in shown) + " |",
              "| --- | --- |" + " --- |" * (2 * len(shown) + 1)]
    for name in ROBOT_RUNS:
        res = m[name]["rollout"]["results"]
        for method, label in (("model", "true"), ("shuffled_actions", "shuffled")):
            r = res[method]
            lines.append(f"| {labels[name]} | {label} | " + " | ".join(f"{r['psnr_db'][h - 1]:.2f}" for h in shown)
                         + f" | {mean(r['psnr_db']):.2f} | "
                         + " | ".join(f"{r['token_accuracy'][h - 1]:.3f}" for h in shown) + " |")
    base = m["finetuned"]["rollout"]["results"]
    for method in ("copy_last_frame", "tokenizer_ceiling"):
        if method in base:
            r = base[method]
            toks = " | ".join(f"{r['token_accuracy'][h - 1]:.3f}" if "token_accuracy" in r else "-" for h in shown)
            psnrs = " | ".join(f"{r['psnr_db'][h - 1]:.2f}" for h in shown)
            lines.append(f"| {method.replace('_', ' ')} | - | {psnrs} | {mean(r['psnr_db']):.2f} | {toks} |")
    lines += ["", "## Claims", ""] + [f"- {k}: **{v}**" for k, v in result["claims"].items()]
    lines += ["", "Margins (positive: the claim's direction):", ""]
    lines += [f"- {k}: {v:+.4f}" for k, v in result["margins"].items()] + [""]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = result["models"]
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6), dpi=110)
    colors = {"finetuned": "tab:blue", "scratch": "tab:orange"}
    for metric, ax, label in (("psnr_db", axes[0], "rollout PSNR (dB)"),
                              ("token_accuracy", axes[1], "rollout token accuracy")):
        hs = m["finetuned"]["rollout"]["horizons"]
        for name in ROBOT_RUNS:
            res = m[name]["rollout"]["results"]
            ax.plot(hs, res["model"][metric], "-o", ms=3, color=colors[name], label=f"{name}, true actions")
            ax.plot(hs, res["shuffled_actions"][metric], "--", color=colors[name], label=f"{name}, shuffled")
        base = m["finetuned"]["rollout"]["results"]
        for method, style in (("copy_last_frame", ":k"), ("tokenizer_ceiling", "-.g")):
            if method in base and metric in base[method]:
                ax.plot(hs, base[method][metric], style, label=method.replace("_", " "))
        ax.set_xlabel("horizon (frames ahead)")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    names = ["pretrain", *ROBOT_RUNS]
    x = range(len(names))
    for i, (key, lab) in enumerate((("token_ce_true_actions", "true"), ("token_ce_shuffled_actions", "shuffled"),
                                    ("token_ce_null_action", "null"))):
        vals = [m[n]["one_shot"].get(key) or 0.0 for n in names]
        axes[2].bar([j + 0.27 * (i - 1) for j in x], vals, width=0.27, label=f"{lab} actions")
    axes[2].set_xticks(list(x), ["pretrained\nonly", "fine-tuned", "scratch"])
    axes[2].set_ylabel("one-shot token CE (nats)")
    axes[2].legend(fontsize=7)
    axes[2].grid(alpha=0.3, axis="y")
    fig.suptitle("Pretraining on action-free video, then fine-tuning on robot data, vs. training from scratch")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


# ---- main ------------------------------------------------------------------------------------------------------

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=None, help="output folder (default runs/pretraining_pays[_smoke])")
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="wall-clock budget of the whole run (default 45; 6 with --smoke)")
    parser.add_argument("--smoke", action="store_true", help="tiny data, model and steps: checks the pipeline only")
    parser.add_argument("--video-tasks", nargs="+", default=["reach-v3", "pick-place-v3", "door-open-v3",
                                                             "drawer-close-v3", "button-press-v3"],
                        help="Meta-World tasks of the action-free pretraining videos")
    parser.add_argument("--robot-task", default="push-v3", help="Meta-World task of the robot (LeRobot) dataset")
    parser.add_argument("--video-episodes", type=int, default=40, help="episodes per video task")
    parser.add_argument("--robot-episodes", type=int, default=48, help="robot episodes (8 of them held out)")
    parser.add_argument("--lora-rank", type=int, default=0, help="fine-tune with LoRA adapters of this rank "
                                                                 "(0: full fine-tuning)")
    parser.add_argument("--workers", type=int, default=2, help="collection and pipeline processes")
    parser.add_argument("--dry-run", action="store_true", help="print the plan (after timing the model) and exit")
    args = parser.parse_args()
    out = Path(args.out or ("runs/pretraining_pays_smoke" if args.smoke else "runs/pretraining_pays")).resolve()
    plan_path = out / "plan.json"
    if plan_path.exists():
        plan = Plan(**json.loads(plan_path.read_text()))
        print(f"resuming with the plan in {plan_path} (its settings win over the flags; use another --out to change "
              "them)")
    else:
        plan = make_plan(args)
        if not args.dry_run:
            out.mkdir(parents=True, exist_ok=True)
            atomic_write_json(plan_path, dataclasses.asdict(plan))
    print_plan(plan, out)
    if args.dry_run:
        return
    p = paths(out)
    runner = Runner(plan, out)
    runner.stage("collect", (p["lerobot"] / "meta" / "info.json").exists(), lambda: collect(plan, p))
    runner.stage("pipelines", (p["mix"] / "dataset.json").exists(), lambda: pipelines(plan, p, runner))
    runner.stage("tokenizer", (p["tokenizer"] / "export" / "config.json").exists(),
                 lambda: train_tokenizer(plan, p, runner))
    tokens_done = all((p[d] / "dataset.json").exists() for d in ("video_tokens", "robot_tokens"))
    runner.stage("tokenize", tokens_done, lambda: tokenize(p, runner))
    for which in ("pretrain", *ROBOT_RUNS):
        name = {"finetuned": "finetune"}.get(which, which)
        if which == "finetuned" and not p["finetuned"].exists():
            replan_robot_steps(plan, runner)
        runner.stage(name, (p[which] / "export" / "config.json").exists(),
                     lambda which=which: train_dynamics(plan, p, runner, which))
    runner.stage("evaluate", all((p["eval"] / f"{n}_rollout" / "report.json").exists() for n in ROBOT_RUNS)
                 and all((p["eval"] / f"{n}_one_shot.json").exists() for n in ROBOT_RUNS),
                 lambda: evaluate(plan, p, runner))
    result = report(plan, p, out, runner.timings)
    print((out / "results.md").read_text())
    print(f"total time of the stages run so far: {sum(runner.timings.values()) / 60:.1f} min; wrote "
          f"{out / 'results.json'}, {out / 'results.md'}, {out / 'pretraining_pays.png'}")
    if not plan.smoke and not (result["claims"]["finetuned_beats_scratch_one_shot_ce"]
                               and result["claims"]["finetuned_true_beats_shuffled_one_shot_ce"]):
        print("note: the expected ordering did not hold in this run; see results.md")


if __name__ == "__main__":
    main()
