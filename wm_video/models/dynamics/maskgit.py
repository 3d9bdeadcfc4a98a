"""MaskGIT decoding of one frame (:func:`maskgit_generate`): every pass predicts all still-masked tokens, keeps
the most confident and re-masks the rest, following the mask schedule (``K = 1`` passes: one-shot). It knows nothing
of the network: ``predict`` maps the frame's ids to logits; :mod:`.sampling` wraps the dynamics model around it."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from wm_video.models.dynamics.config import mask_schedule


@dataclass
class MaskGITOutput:
    """``tokens`` ``(b, n)`` int64; ``logits`` ``(b, n, k)`` of the last pass."""

    tokens: torch.Tensor
    logits: torch.Tensor


def _sample(logits: torch.Tensor, temperature: float, top_k: int | None,
            generator: torch.Generator | None) -> torch.Tensor:
    """``(b, n, k)`` -> ``(b, n)`` ids: argmax at temperature 0, else a sample from the top-k of the tempered
    distribution."""
    if temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = logits.topk(top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1).flatten(0, 1)  # ((b n), k)
    if generator is not None:  # a generator draws on its own device
        probs = probs.to(generator.device)
    return torch.multinomial(probs, 1, generator=generator).view(logits.shape[:-1]).to(logits.device)


def maskgit_generate(predict: Callable[[torch.Tensor], torch.Tensor], batch: int, num_tokens: int, mask_id: int,
                     steps: int = 8, temperature: float = 1.0, top_k: int | None = None, schedule: str = "cosine",
                     generator: torch.Generator | None = None, device: torch.device | str = "cpu") -> MaskGITOutput:
    """Fill a frame of ``num_tokens`` tokens in ``steps`` passes.

    Args:
        predict: token ids ``(b, n)`` with ``mask_id`` at unknown positions -> logits ``(b, n, k)``.
        steps: passes ``K``; after pass ``s`` a fraction ``schedule((s + 1) / K)`` stays masked (at least one
            more token is fixed per pass, all after the last).
        temperature: sampling temperature; 0 is argmax and deterministic. It also scales the Gumbel noise added
            to the confidences (annealed to 0 over the passes, as in MaskGIT), so re-masking is random too.
        top_k: sample among the ``top_k`` most likely ids only.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tokens = torch.full((batch, num_tokens), mask_id, dtype=torch.long, device=device)
    known = torch.zeros(batch, num_tokens, dtype=torch.bool, device=device)
    logits = None
    for s in range(steps):
        logits = predict(tokens)  # (b, n, k)
        sampled = torch.where(known, tokens, _sample(logits, temperature, top_k, generator))
        unknown = num_tokens - int(known[0].sum())  # the same in every row
        keep_masked = 0 if s == steps - 1 else int(num_tokens * float(mask_schedule((s + 1) / steps, schedule)))
        keep_masked = max(0, min(keep_masked, unknown - 1))
        if keep_masked == 0:
            return MaskGITOutput(sampled, logits)
        confidence = logits.float().log_softmax(-1).gather(-1, sampled[..., None]).squeeze(-1)  # (b, n)
        if temperature > 0:
            u = torch.rand(confidence.shape, generator=generator, device=generator.device if generator else device)
            gumbel = -torch.log(-torch.log(u.to(device).clamp(1e-20, 1 - 1e-7)))
            confidence = confidence + temperature * (1 - (s + 1) / steps) * gumbel
        confidence = confidence.masked_fill(known, float("inf"))
        remask = confidence.topk(keep_masked, dim=-1, largest=False).indices  # (b, keep_masked)
        known = torch.ones_like(known).scatter_(-1, remask, False)
        tokens = sampled.masked_fill(~known, mask_id)
    return MaskGITOutput(tokens, logits)
