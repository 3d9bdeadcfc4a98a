"""Task text at sampling time, the one place the verbs share: ``--task``, ``--text-encoder`` and
``--text-guidance-scale`` (:class:`TaskTextSettings`, a base of the eval, generate, plan and play configs), the
refusals for a world model trained without text, the encoder folder resolution, and the embedding of one task.

    settings = TaskTextSettings(task="open the drawer", text_guidance_scale=2.0)
    text = task_embedding(world_model, settings, "generate", "runs/wm")   # (text_dim,) or None (no text)
    env = WorldModelEnv(world_model, text=text, text_guidance_scale=settings.text_guidance_scale)

A model trained with text needs its task text: ``--task``, else the default the verb takes from its data (a dataset
clip's own task, as ``wm-video eval`` gives each clip its own; a Meta-World simulator's task name, as ``wm-video data
collect`` wrote it); with neither, a clear error. The text-free model of such a model is
``--text-guidance-scale 0`` (with any task). The encoder is the folder given (``--text-encoder``), else the one
the model records; nothing is downloaded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from wm_video.models.text_encoder import TextEncoder


@dataclass
class TaskTextSettings:
    """The task-text settings of a sampling verb.

    Args:
        task: the task text the world model is conditioned on (models trained with task text; default None: the
            task the verb's data gives, else an error); refused for a model trained without text.
        text_encoder: the local text encoder folder (default None: the folder the model records); refused for a
            model trained without text.
        text_guidance_scale: classifier-free guidance on the task text (default 1: none; > 1 follows the text more
            strongly, 0 is the text-free model; any other value than 1 adds a dynamics pass per frame); refused,
            other than 1, for a model trained without text.
    """

    task: str | None = None
    text_encoder: str | None = None
    text_guidance_scale: float = 1.0


def _where(where: str, folder: str | Path | None) -> str:
    return f"{where} (model {folder})" if folder else where


def check_task_settings(text_dim: int, settings: TaskTextSettings, where: str, folder: str | Path | None = None
                        ) -> None:
    """Refusals readable from the dynamics config alone (``text_dim``), before any weights load: a negative
    ``--text-guidance-scale``, an empty ``--task``, and any text setting for a model trained without text."""
    if settings.text_guidance_scale < 0:
        raise ValueError(f"{where}: --text-guidance-scale must be >= 0, got {settings.text_guidance_scale}")
    if settings.task is not None and not settings.task.strip():
        raise ValueError(f"{where}: --task is empty; give the task text (or leave --task out)")
    if text_dim:
        return
    given = [f"--task {settings.task!r}" if settings.task is not None else "",
             f"--text-encoder {settings.text_encoder}" if settings.text_encoder else "",
             f"--text-guidance-scale {settings.text_guidance_scale:g}" if settings.text_guidance_scale != 1 else ""]
    given = [g for g in given if g]
    if given:
        raise ValueError(f"{where}: {', '.join(given)}: this world model{f' ({folder})' if folder else ''} was "
                         "trained without task text (text_dim=0); leave the task-text settings out")


def load_task_encoder(dynamics_config: Any, settings: TaskTextSettings, where: str, folder: str | Path | None = None
                      ) -> TextEncoder | None:
    """The text encoder of a dynamics model (its ``DynamicsConfig``) under ``settings``: None for a model without
    text (after :func:`check_task_settings`), else the :class:`~wm_video.models.text_encoder.TextEncoder` of
    ``--text-encoder`` or of the folder the model records (an error saying to give ``--text-encoder`` when that
    folder is not on this machine)."""
    from wm_video.models.text_encoder import text_encoder_for

    check_task_settings(dynamics_config.text_dim, settings, where, folder)
    recorded = dynamics_config.text_encoder or ""
    path = settings.text_encoder or recorded or None
    if dynamics_config.text_dim and not settings.text_encoder and recorded and not Path(recorded).is_dir():
        raise FileNotFoundError(f"{_where(where, folder)}: the model records the text encoder {recorded}, which is "
                                "not a folder on this machine; give its local copy with --text-encoder PATH")
    return text_encoder_for(dynamics_config.text_dim, recorded, path, _where(where, folder))


def resolve_task(text_dim: int, settings: TaskTextSettings, where: str, folder: str | Path | None = None,
                 default: str | None = None) -> str | None:
    """The task text a model with text (``text_dim`` > 0) is conditioned on: ``settings.task``, else ``default``
    (what the verb's data gives); neither is a clear error naming ``--task`` and the model folder. None for a
    model without text (after :func:`check_task_settings`)."""
    check_task_settings(text_dim, settings, where, folder)
    if not text_dim:
        return None
    task = settings.task if settings.task is not None else default
    if not task or not task.strip():
        raise ValueError(f"{_where(where, folder)}: this world model was trained with task text; give the task "
                         "with --task TEXT (--text-guidance-scale 0 with any task samples the text-free model)")
    return task


def task_embedding(model: Any, settings: TaskTextSettings, where: str, folder: str | Path | None = None,
                   default: str | None = None) -> torch.Tensor | None:
    """The embedding ``(text_dim,)`` of the task :func:`resolve_task` gives, on ``model``'s device (a
    :class:`~wm_video.world_model.WorldModel`), or None for a model trained without text."""
    task = resolve_task(model.dynamics.config.text_dim, settings, where, folder, default)
    encoder = load_task_encoder(model.dynamics.config, settings, where, folder)
    if encoder is None or task is None:
        return None
    return encoder([task])[0].to(model.device)
