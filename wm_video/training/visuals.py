"""What people look at while the dynamics model trains: open-loop rollouts of held-out clips as a TensorBoard video.

Every ``video_every_n_steps`` optimizer steps (:class:`~wm_video.training.dynamics_config.DynamicsTrainConfig`), a
few held-out clips (the first validation batch's; before the first validation run of a resumed run, the training
batch's) are rolled out open loop by :class:`~wm_video.models.dynamics.sampling.Rollout` (argmax, KV cache) from
their first ``video_context_frames`` frames, once with the clips' true actions and once with the same actions
shuffled in time, and decoded to pixels with the tokenizer the token dataset was made with (``dataset.json``'s
``tokens.tokenizer``). The video shows, side by side, truth | prediction (true actions) | prediction (shuffled
actions), one clip per row: a model that ignores its actions draws the two right columns alike.

Without the tokenizer (the recorded path is gone, or its vocabulary differs) the token ids are drawn as grey levels,
with one warning. TensorBoard's ``add_video`` encodes with moviepy, which is not a dependency (it brings its own
ffmpeg build through imageio-ffmpeg, tens of MB, for a logging nicety); without it the same frames are logged with
``add_image`` as one grid, time running left to right and the three rows of each clip stacked, which needs nothing.

A mixture run (several token datasets, one action domain each; :mod:`wm_video.data.mixture`) logs one video per
domain, tagged ``rollout/DOMAIN/truth_true-actions_shuffled-actions`` (:func:`video_tag`; a one-dataset run keeps
``rollout/truth_true-actions_shuffled-actions``), of the first validation batch seen of that domain (a domain that
holds no clips out has none; a resumed run, before its first validation, shows its training batch's domain alone),
rolled out with ``domain=DOMAIN`` (that domain's action encoder) and its own actions (:func:`log_rollouts`). All
sources of a mixture share one tokenizer (the mixture checks their token fingerprint), so every domain is decoded with
the one the first source's ``dataset.json`` records. An action-free domain (the null action) is rolled out once, with
no actions, and its shuffled column repeats that rollout: every video keeps the same three columns, and there the two
right ones are alike by construction, not because the model ignores actions.
"""

from __future__ import annotations

import importlib.util
import logging
from pathlib import Path
from typing import Any

import torch
from einops import rearrange

from wm_video.data.schema import DatasetInfo
from wm_video.models.dynamics import DynamicsModel
from wm_video.models.dynamics.sampling import Rollout
from wm_video.models.tokenizer import VQTokenizer

log = logging.getLogger(__name__)

PANELS = "truth_true-actions_shuffled-actions"  # what the video's columns show, left to right
VIDEO_TAG = f"rollout/{PANELS}"  # a one-dataset run's video
TOKEN_ID_SCALE = 8  # pixels per token when token ids are drawn instead of decoded frames


def video_tokenizer(info: DatasetInfo, data: str | Path, vocab_size: int) -> VQTokenizer | None:
    """The tokenizer a token dataset records (``dataset.json``: ``tokens.tokenizer``), for decoding rollout videos;
    None, with a warning, when it is not there or does not fit the data's vocabulary."""
    path = (info.tokens or {}).get("tokenizer")
    if not path or not Path(path).is_dir():
        log.warning("dynamics videos draw token ids, not frames: the tokenizer %s recorded in %s/dataset.json is not "
                    "there", path, data)
        return None
    try:
        tok = VQTokenizer.from_pretrained(path)
    except (OSError, ValueError) as e:
        log.warning("dynamics videos draw token ids, not frames: the tokenizer %s did not load (%s)", path, e)
        return None
    if tok.vocab_size != vocab_size:
        log.warning("dynamics videos draw token ids, not frames: the tokenizer %s has %d codes, the data %d", path,
                    tok.vocab_size, vocab_size)
        return None
    return tok.eval().requires_grad_(False)


def video_tag(domain: str | None) -> str:
    """The tag of a rollout video: :data:`VIDEO_TAG` for ``None`` (a one-dataset run), else ``rollout/DOMAIN/...``
    (a mixture's domain)."""
    return VIDEO_TAG if domain is None else f"rollout/{domain}/{PANELS}"


def shuffled_in_time(actions: torch.Tensor | None, start: int, generator: torch.Generator) -> torch.Tensor | None:
    """``actions`` ``(b, t, ...)`` with the entries from ``start`` on permuted in time (one permutation per clip)."""
    if actions is None:
        return None
    out = actions.clone()
    for i in range(len(out)):
        perm = torch.randperm(out.shape[1] - start, generator=generator) + start
        out[i, start:] = actions[i, perm.to(actions.device)]
    return out


@torch.no_grad()
def open_loop(model: DynamicsModel, tokens: torch.Tensor, actions: torch.Tensor | None, context: int,
              maskgit_steps: int = 8, domain: str | None = None) -> torch.Tensor:
    """Tokens ``(b, t, h, w)`` -> the same clip with frames ``context..t-1`` predicted open loop from the first
    ``context`` frames and ``actions`` of action domain ``domain`` (aligned, ``(b, t)`` or ``(b, t, a)``; action
    ``i`` follows frame ``i``; None: the null action; ``domain`` None: the model's only domain), argmax sampling.
    Leaves ``model`` in eval mode (the caller restores its mode)."""
    rollout = Rollout(model, steps=maskgit_steps, temperature=0.0, domain=domain)
    rollout.start(tokens[:, :context], None if actions is None else actions[:, :context])
    frames = [tokens[:, :context]]
    for i in range(context, tokens.shape[1]):
        frames.append(rollout.step(None if actions is None else actions[:, i - 1]).tokens[:, None])
    return torch.cat(frames, dim=1)  # (b, t, h, w)


def to_pixels(tokens: torch.Tensor, tokenizer: VQTokenizer | None, vocab_size: int) -> torch.Tensor:
    """Tokens ``(b, t, h, w)`` -> frames ``(b, t, 3, H, W)`` in [0, 1]: decoded, or token ids as grey levels."""
    if tokenizer is not None:
        return (tokenizer.detokenize(tokens).float().clamp(-1, 1) + 1) / 2
    grey = tokens.float() / max(vocab_size - 1, 1)  # (b, t, h, w)
    grey = grey.repeat_interleave(TOKEN_ID_SCALE, -2).repeat_interleave(TOKEN_ID_SCALE, -1)
    return grey[:, :, None].expand(-1, -1, 3, -1, -1)


@torch.no_grad()
def rollout_video(model: DynamicsModel, tokenizer: VQTokenizer | None, tokens: torch.Tensor,
                  actions: torch.Tensor | None, context: int, seed: int = 0, domain: str | None = None) -> torch.Tensor:
    """The panels of clips ``tokens`` ``(b, t, h, w)`` of action domain ``domain`` (None: the model's only one):
    ``(3, b, t, 3, H, W)`` in [0, 1], truth, prediction with the true actions, prediction with the actions shuffled
    in time (:func:`log_rollout` lays them out). Without actions (``None``: action-free clips) the one rollout, with
    the null action, fills both prediction columns."""
    was_training = model.training
    try:
        gen = torch.Generator().manual_seed(seed)
        k = model.config.vocab_size
        true = open_loop(model, tokens, actions, context, domain=domain)
        if actions is None:
            shuffled = true  # nothing to shuffle: the same rollout
        else:  # the actions after the last context frame on, permuted
            shuffled = open_loop(model, tokens, shuffled_in_time(actions, context - 1, gen), context, domain=domain)
        columns = [tokens, true, shuffled]
        pixels = [to_pixels(c, tokenizer, k) for c in columns]  # 3 x (b, t, 3, H, W)
    finally:
        model.train(was_training)
    return torch.stack(pixels)


def log_rollout(experiment: Any, tag: str, panels: torch.Tensor, step: int, fps: int = 4) -> str:
    """Log ``panels`` ``(col, b, t, 3, H, W)`` in [0, 1]: with moviepy, ``add_video`` of ``(1, t, 3, b*H, col*W)``
    (a clip per row, the panels side by side); without, ``add_image`` of ``(3, b*col*H, t*W)`` (the panels of each
    clip stacked, time left to right). Returns ``"video"`` or ``"image"``."""
    if importlib.util.find_spec("moviepy") is not None:
        experiment.add_video(tag, rearrange(panels, "col b t c h w -> 1 t c (b h) (col w)"), step, fps=fps)
        return "video"
    experiment.add_image(tag, rearrange(panels, "col b t c h w -> c (b col h) (t w)"), step)
    return "image"


def log_rollouts(experiment: Any, model: DynamicsModel, tokenizer: VQTokenizer | None,
                 clips: dict[str | None, dict[str, torch.Tensor]], context_frames: int, step: int,
                 mixture: bool = False) -> list[str]:
    """Roll out and log ``clips`` (per action domain, ``tokens`` ``(b, t, h, w)`` and ``actions`` if any, on the
    model's device; key None: the model's only domain) from their first ``context_frames`` frames (at most ``t - 1``:
    one frame predicted at least), each with ``domain=`` its key, under :func:`video_tag` of its domain for a
    ``mixture``, :data:`VIDEO_TAG` otherwise. Returns the tags logged (clips of one frame are skipped)."""
    tags = []
    for domain, clip in clips.items():
        context = min(context_frames, clip["tokens"].shape[1] - 1)
        if context < 1:
            continue
        panels = rollout_video(model, tokenizer, clip["tokens"], clip.get("actions"), context, domain=domain)
        tags.append(video_tag(domain if mixture else None))
        log_rollout(experiment, tags[-1], panels.cpu(), step)
    return tags
