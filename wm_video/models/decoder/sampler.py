"""Noise schedule and samplers: diffusers' EDM schedulers (Euler, DPM-Solver++ 2M) driving the denoiser.

Training and sampling share the scheduler's EDM preconditioning (``precondition_inputs`` / ``_outputs``), so the
network (:mod:`.network`), the schedule and the sampler stay three separate things. Few-step sampling uses
"trailing" spacing: the Karras ramp is cut into ``steps`` pieces and the last stop before zero is the start of
the last piece rather than ``sigma_min``, so no step is spent denoising noise that is not there (with 2 steps the
plain schedule would visit sigma 80 and then 0.002, which is one useful step).

A scheduler holds the state of one sampling run (step index, solver history); :func:`sample` resets it first, so
the decoder builds one per sampler and reuses it for every frame (``DiffusionDecoder.scheduler``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable

import torch
from diffusers import EDMDPMSolverMultistepScheduler, EDMEulerScheduler
from diffusers.utils.torch_utils import randn_tensor

from wm_video.models.decoder.config import SAMPLERS, DecoderConfig


def make_scheduler(cfg: DecoderConfig, sampler: str | None = None) -> EDMEulerScheduler:
    """A fresh scheduler for ``sampler`` (default ``cfg.sampler``) with the config's EDM noise schedule."""
    sampler = sampler or cfg.sampler
    kw = dict(sigma_min=cfg.sigma_min, sigma_max=cfg.sigma_max, sigma_data=cfg.sigma_data, rho=cfg.rho,
              num_train_timesteps=cfg.max_inference_steps)
    with torch.device("cpu"):  # its sigmas live on the CPU, also when a model is built on the meta device
        if sampler == "euler":
            return EDMEulerScheduler(**kw)
        if sampler == "dpmsolver":
            return EDMDPMSolverMultistepScheduler(**kw, solver_order=2, algorithm_type="dpmsolver++")
    raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")


def check_steps(steps: int, cfg: DecoderConfig) -> int:
    if isinstance(steps, bool) or not isinstance(steps, int) or not 1 <= steps <= cfg.max_inference_steps:
        raise ValueError(f"num_inference_steps must be an integer in [1, {cfg.max_inference_steps}], got {steps!r}")
    return steps


def karras_sigmas(ramp: torch.Tensor, sigma_min: float, sigma_max: float, rho: float) -> torch.Tensor:
    """Karras et al. (2022) noise levels at ``ramp`` points in [0, 1]: ``sigma_max`` at 0, ``sigma_min`` at 1."""
    lo, hi = sigma_min ** (1 / rho), sigma_max ** (1 / rho)
    return (hi + ramp * (lo - hi)) ** rho


def set_steps(scheduler: EDMEulerScheduler, steps: int, device: torch.device) -> None:
    """Trailing Karras spacing for both schedulers: noise levels at ramp points 0, 1/steps, ..., (steps-1)/steps,
    then 0. Resets the scheduler's state (step index, solver history)."""
    ramp = torch.linspace(0, 1, steps + 1)[:-1].to(torch.float64)
    c = scheduler.config
    sigmas = karras_sigmas(ramp, c.sigma_min, c.sigma_max, c.rho).to(torch.float32)
    if "sigmas" in inspect.signature(scheduler.set_timesteps).parameters:
        # EDMEulerScheduler's public custom schedule. Its ``sigmas`` are ramp points that its Karras schedule maps
        # to noise levels (diffusers 0.42), not noise levels; that reading is checked, as it may change.
        scheduler.set_timesteps(steps, device=device, sigmas=ramp)
        if len(scheduler.sigmas) == steps + 1 and scheduler.sigmas[-1] == 0 and torch.allclose(
                scheduler.sigmas[:-1].cpu(), sigmas):
            return
    # EDMDPMSolverMultistepScheduler takes no custom schedule (diffusers 0.42): reset its state, then overwrite the
    # noise levels it made with its own spacing (attributes its step() reads; why pyproject bounds diffusers < 1).
    scheduler.set_timesteps(steps, device=device)
    scheduler.sigmas = torch.cat([sigmas, sigmas.new_zeros(1)])
    scheduler.timesteps = scheduler.precondition_noise(sigmas).to(device)


Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@torch.no_grad()
def sample(network: Denoise, shape: tuple[int, ...], cfg: DecoderConfig, steps: int, sampler: str | None = None,
           generator: torch.Generator | None = None, device: torch.device | str = "cpu",
           scheduler: EDMEulerScheduler | None = None) -> torch.Tensor:
    """Run the sampler: ``network(x_in, sigma)`` is the raw EDM network with its conditioning bound; returns
    ``shape`` samples. ``steps`` network calls, no more. ``scheduler``: one that :func:`make_scheduler` built for
    ``sampler``, to reuse (its state is reset here, so it gives the same samples as a fresh one); None builds one."""
    steps = check_steps(steps, cfg)
    if scheduler is None:
        scheduler = make_scheduler(cfg, sampler)
    set_steps(scheduler, steps, torch.device(device))
    x = randn_tensor(shape, generator=generator, device=torch.device(device)) * scheduler.sigmas[0]
    for i, t in enumerate(scheduler.timesteps):
        x_in = scheduler.scale_model_input(x, t)  # c_in * x
        out = network(x_in, scheduler.sigmas[i].to(device).expand(shape[0]))
        x = scheduler.step(out, t, x).prev_sample
    return x
