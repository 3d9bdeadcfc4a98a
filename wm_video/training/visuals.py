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

VIDEO_TAG = "rollout/truth_true-actions_shuffled-actions"
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
              maskgit_steps: int = 8) -> torch.Tensor:
    """Tokens ``(b, t, h, w)`` -> the same clip with frames ``context..t-1`` predicted open loop from the first
    ``context`` frames and ``actions`` (aligned, ``(b, t)`` or ``(b, t, a)``; action ``i`` follows frame ``i``),
    argmax sampling. Leaves ``model`` in eval mode (the caller restores its mode)."""
    rollout = Rollout(model, steps=maskgit_steps, temperature=0.0)
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
                  actions: torch.Tensor | None, context: int, seed: int = 0) -> torch.Tensor:
    """The panels of clips ``tokens`` ``(b, t, h, w)``: ``(3, b, t, 3, H, W)`` in [0, 1], truth, prediction with the
    true actions, prediction with the actions shuffled in time (:func:`log_rollout` lays them out)."""
    was_training = model.training
    try:
        gen = torch.Generator().manual_seed(seed)
        shuffled = shuffled_in_time(actions, context - 1, gen)  # the actions after the last context frame on
        k = model.config.vocab_size
        columns = [tokens, open_loop(model, tokens, actions, context), open_loop(model, tokens, shuffled, context)]
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
