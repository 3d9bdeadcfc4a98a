"""The settings of ``wm-video play`` as one typed config (kind ``play``), with its presets."""

from __future__ import annotations

from dataclasses import dataclass

from wm_video.config import register_kind, register_preset
from wm_video.task_text import TaskTextSettings


@dataclass
class PlayConfig(TaskTextSettings):
    """How the play page runs the world model.

    Args:
        host: address the server listens on (default 127.0.0.1: this machine only).
        port: its port (default 8765).
        fps: frames per second of play (default None: the model's fps).
        horizon: frames before a play-through ends and a new one starts (default 1000).
        split: which dataset clips the start menu offers: ``heldout`` (default), ``train`` or ``all``.
        maskgit_steps: MaskGIT passes per frame (default 8; fewer is faster).
        temperature: token sampling temperature at start (default 1; 0 is argmax); the page changes it.
        decoder_steps: diffusion decoder steps per frame at start (default None: the decoder's own); the page
            changes it.
        record: record each play-through (default True).
        record_dir: where the recordings go (default ``play_recordings``).
        clip_len: frames per clip of the recorded shards (default 8).
        policy: a policy the page can hand control to, beside ``random``: ``cem``, ``mcts``, or the folder of an
            actor trained in imagination (``wm-video imagine-train``) (default None).
        plan_horizon: planned steps of ``cem`` / ``mcts`` (default 4).
        policy_context: frames the policy sees (default 4).
        seed: random seed of the first play-through (default 0).
        domain: the action domain of a world model trained on several (its start states' data must be of that
            domain); None (the default) for a model of one action space.
        task: the task text of every play-through, for a world model trained with task text (required for one;
            the policies plan with it too); refused for a model trained without text.
    """

    host: str = "127.0.0.1"
    port: int = 8765
    fps: float | None = None
    horizon: int = 1000
    split: str = "heldout"
    maskgit_steps: int = 8
    temperature: float = 1.0
    decoder_steps: int | None = None
    record: bool = True
    record_dir: str = "play_recordings"
    clip_len: int = 8
    policy: str | None = None
    plan_horizon: int = 4
    policy_context: int = 4
    seed: int = 0
    domain: str | None = None

    def validate(self) -> None:
        """Every setting in range, checked before the model is loaded."""
        for flag, value, low in (("--port", self.port, 0), ("--horizon", self.horizon, 1),
                                 ("--maskgit-steps", self.maskgit_steps, 1), ("--clip-len", self.clip_len, 2),
                                 ("--plan-horizon", self.plan_horizon, 1), ("--policy-context", self.policy_context, 1),
                                 ("--decoder-steps", self.decoder_steps, 1), ("--temperature", self.temperature, 0)):
            if value is not None and value < low:
                raise ValueError(f"{flag} must be >= {low}, got {value}")
        if self.port > 65535:
            raise ValueError(f"--port must be <= 65535, got {self.port}")
        if self.fps is not None and not 0 < self.fps <= 120:
            raise ValueError(f"--fps must be in (0, 120], got {self.fps}")
        if self.split not in ("heldout", "train", "all"):
            raise ValueError(f"--split must be heldout, train or all, got {self.split!r}")


register_kind("play", PlayConfig)


@register_preset("play", "default")
def _play_default() -> PlayConfig:
    return PlayConfig()


@register_preset("play", "fast")
def _play_fast() -> PlayConfig:
    # for a CPU: two MaskGIT passes and one decoder step per frame
    return PlayConfig(maskgit_steps=2, decoder_steps=1)
