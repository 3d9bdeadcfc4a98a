"""When the models check the values of their inputs (token ids in the vocabulary, action ids in range, finite
actions and pixels).

Such a check reads tensor values back to the host (``int(x.min())``, ``bool(x.all())``): on an accelerator that
waits for every queued kernel, once per check. The models' public methods (``forward``, ``Rollout.start`` /
``step``, ``render``, ``detokenize``) check their inputs, as a caller calling them directly expects. The hot loops
validate once where the data enters, then run the model inside :func:`validated`, where these value checks are
skipped:

- :class:`~wm_video.world_model_env.WorldModelEnv` checks the context and actions at ``reset`` / ``step`` entry
  (once per call); the tokens the tokenizer and the dynamics model make are in the vocabulary by construction;
- the training modules check each batch on the CPU before it is copied to the device.

Shape and dtype checks need no host sync and always run. ``WM_VIDEO_CHECKS=1`` in the environment (read at import)
or ``checks.CHECK_VALUES = True`` turns every value check back on, also inside :func:`validated`: a debugging switch,
when a wrong value seems to arise inside the model rather than come in with its input.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Iterator
from contextlib import contextmanager

import torch

CHECK_VALUES: bool = os.environ.get("WM_VIDEO_CHECKS", "0").strip().lower() not in ("", "0", "false", "no", "off")

# A context variable rather than a global: a thread (or task) of its own starts outside any ``validated`` block.
_validated: contextvars.ContextVar[bool] = contextvars.ContextVar("wm_video_validated", default=False)


def check_values() -> bool:
    """Whether a value check that reads tensor values back to the host runs here: outside :func:`validated`, or
    everywhere with :data:`CHECK_VALUES` on."""
    return CHECK_VALUES or not _validated.get()


@contextmanager
def validated() -> Iterator[None]:
    """Mark the inputs of the model calls made inside as already validated: their value checks are skipped (unless
    :data:`CHECK_VALUES`). Nestable; the mark ends with the block, also on an error."""
    token = _validated.set(True)
    try:
        yield
    finally:
        _validated.reset(token)


def ids_out_of_range(ids: torch.Tensor, high: int) -> tuple[int, int] | None:
    """``(min, max)`` of the integer ids ``ids`` when one lies outside ``[0, high)``, else None. One host read (the
    minimum and maximum come back together), none when :func:`check_values` is off here or ``ids`` is empty."""
    if not ids.numel() or not check_values():
        return None
    lo, hi = torch.stack(torch.aminmax(ids)).tolist()
    return (lo, hi) if lo < 0 or hi >= high else None
