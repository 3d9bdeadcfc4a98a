"""``wm-video plan`` and ``wm-video imagine-train``: control a real simulator with a world model, by planning in
imagination at every step or with an actor trained in imagination, against the random policy."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from wm_video.config import load_config
from wm_video.planning.report import markdown
from wm_video.planning.runner import run_planner, train_actor


def plan(*overrides: str, model: str, env: str, out: str = "plan_out", config: str | None = None,
         preset: str = "default", device: str = "auto", **settings: Any) -> dict:
    """Closed-loop control of a real simulator by planning in the world model (replanning every step); writes
    OUT/report.json, OUT/report.md and videos of the real episodes with the imagined plans beside them.

    CEM (continuous actions) scores POPULATION action sequences of HORIZON steps per iteration; MCTS (discrete
    actions) evaluates SIMULATIONS leaves, PARALLEL at a time, to depth HORIZON. Plans are scored by the predicted
    rewards weighted by the predicted probability of not having terminated. The random policy runs on the same
    episode seeds as the baseline; the report gives returns (mean, std, standard error), the planner's margin over
    random in standard errors, decisions/s, imagined frames/s and the compute used.

    A world model trained with task text plans conditioned on --task TEXT (default: a Meta-World simulator's task
    name, e.g. ``reach`` for metaworld/reach-v3; other simulators need --task), its encoder from --text-encoder or
    the folder the model records, with --text-guidance-scale S (1: none); the report's settings record both.

    Settings (kind ``plan``, wm_video/planning/config.py) resolve as: the preset, the YAML (--config), the flags
    given, then the trailing FIELD=VALUE overrides.

    Example:
        wm-video plan --model runs/wm_pendulum --env Pendulum-v1 --planner cem --episodes 10 --out runs/plan_cem
        wm-video plan --model runs/wm_pong --env ALE/Pong-v5 --planner mcts --simulations 64 --out runs/plan_mcts
        wm-video plan --model runs/wm_mt --env metaworld/reach-v3 --task "reach" --text-guidance-scale 2

    Args:
        overrides: dotted overrides of the plan config, e.g. ``population=32``; they beat flags and YAML.
        model: world-model folder (its dynamics must have trained reward and termination heads).
        env: simulator id (e.g. Pendulum-v1, ALE/Pong-v5, metaworld/reach-v3); 'wm-video data envs' lists them.
        out: report folder.
        config: YAML file with ``kind: plan``.
        preset: named preset the settings start from.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        settings: the fields of the plan config, as flags.
    """
    cfg = load_config("plan", preset_name=preset, yaml_path=config, flags=settings, overrides=overrides)
    report = run_planner(model, env, out, cfg, device)
    print(markdown(report))
    print(f"wrote {Path(out) / 'report.json'} and {Path(out) / 'report.md'}")
    return report


def imagine_train(*overrides: str, model: str, env: str | None = None, data: str | None = None,
                  out: str = "imagine_out", config: str | None = None, preset: str = "default",
                  device: str = "auto", **settings: Any) -> dict:
    """Train an actor-critic purely in imagination (lambda-returns over HORIZON imagined steps from real start
    contexts), save it to OUT/actor, then evaluate it in the real simulator against the random policy.

    Start contexts come from --data (a frame dataset at the model's resolution) or, without it, from random-policy
    episodes of --env. Evaluation needs --env. OUT/report.json holds the training curve (imagined return, critic
    and actor losses), imagined frames/s, the real returns and the compute used. The actor can then value plans:
    'wm-video plan --value OUT/actor'. Settings (kind ``imagine_train``) resolve as for 'wm-video plan'.

    A world model trained with task text imagines conditioned on --task TEXT (default: a Meta-World simulator's
    task name where the start contexts come from --env; with --data, give --task), with --text-encoder and
    --text-guidance-scale as for 'wm-video plan'; the report's settings record the task and the scale.

    Example:
        wm-video imagine-train --model runs/wm_pendulum --env Pendulum-v1 --iterations 500 --out runs/imagine
        wm-video imagine-train --model runs/wm_mt --env metaworld/reach-v3 --text-guidance-scale 2 --out runs/im_reach

    Args:
        overrides: dotted overrides of the imagine_train config, e.g. ``horizon=10``; they beat flags and YAML.
        model: world-model folder (its dynamics must have trained reward and termination heads).
        env: simulator id, for start contexts (without --data) and for the evaluation.
        data: frame dataset to take start contexts from.
        out: output folder (actor/, report.json, report.md, videos).
        config: YAML file with ``kind: imagine_train``.
        preset: named preset the settings start from.
        device: auto (cuda when a GPU is visible, else cpu), cpu or cuda.
        settings: the fields of the imagine_train config, as flags.
        context_frames: frames per start context and per evaluation step (default: 4, at most the model's window).
    """
    cfg = load_config("imagine_train", preset_name=preset, yaml_path=config, flags=settings, overrides=overrides)
    report = train_actor(model, out, cfg, env=env, data=data, device=device)
    print(markdown(report))
    print(f"wrote {Path(out) / 'report.json'} and {Path(out) / 'report.md'}")
    return report
