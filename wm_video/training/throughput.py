"""Training throughput and model FLOPs utilisation (MFU).

MFU is the model's analytically counted training FLOPs per second over the hardware's peak. On a GPU the peak
is the vendor's dense figure for the precision (Lightning's table, e.g. 989 TFLOP/s bf16 on an H100 SXM). A
CPU has no such table, so its peak is measured: the best of a few large matmuls in the training precision, on
the same threads, in the same run. That is the ceiling a transformer step could reach there.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from lightning.fabric.utilities.throughput import get_available_flops
from lightning.pytorch.callbacks import Callback


def measured_matmul_flops(dtype: torch.dtype = torch.float32, size: int = 2048, repeats: int = 5,
                          device: str | torch.device = "cpu") -> float:
    """FLOP/s of the best of ``repeats`` ``size x size`` matmuls (2 n^3 FLOPs each) on ``device``."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    best = float("inf")
    for _ in range(repeats + 1):  # the first is a warm-up
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        a @ b
        if torch.device(device).type == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best


def peak_flops(device: torch.device, precision: str) -> tuple[float, str]:
    """Peak FLOP/s for ``device`` at a Lightning ``precision`` string, and where the figure comes from."""
    dtype = torch.bfloat16 if "bf16" in precision else torch.float16 if "16" in precision else torch.float32
    if device.type == "cuda":
        flops = get_available_flops(device, dtype)
        if flops:
            return float(flops), f"{torch.cuda.get_device_name(device)} spec sheet ({dtype})"
        return measured_matmul_flops(dtype, 8192, device=device), f"measured {dtype} matmul"
    threads = torch.get_num_threads()
    return measured_matmul_flops(dtype), f"measured {dtype} 2048^3 matmul, {threads} threads"


def throughput_callback(flops_per_token: float, tokens_per_batch: Any, log_every: int = 25) -> Any:
    """A Lightning callback logging ``perf/tokens_per_s``, ``perf/tflops`` and ``perf/mfu`` every ``log_every``
    steps. ``tokens_per_batch(batch)`` counts the tokens a batch trains on; ``flops_per_token`` covers forward
    and backward (the model's analytic count)."""
    class Throughput(Callback):
        def __init__(self) -> None:
            self.peak: float | None = None
            self.tokens, self.t0 = 0, None

        def setup(self, trainer, pl_module, stage: str) -> None:
            # before data-loading workers start, so a measured peak has the cores to itself
            if stage == "fit" and self.peak is None:
                self.peak, source = peak_flops(trainer.strategy.root_device, str(trainer.precision))
                pl_module.print(f"MFU peak: {self.peak / 1e12:.2f} TFLOP/s ({source})")

        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
            if self.t0 is None:
                self.t0 = time.perf_counter()

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            self.tokens += int(tokens_per_batch(batch)) * trainer.world_size
            if trainer.global_step % log_every or self.t0 is None:
                return
            if pl_module.device.type == "cuda":
                torch.cuda.synchronize()
            dt = time.perf_counter() - self.t0
            rate = self.tokens / max(dt, 1e-9)
            achieved = rate * flops_per_token
            logs = {"perf/tokens_per_s": rate, "perf/tflops": achieved / 1e12}
            if self.peak:
                logs["perf/mfu"] = achieved / (self.peak * trainer.world_size)
            pl_module.log_dict(logs, rank_zero_only=True)
            self.tokens, self.t0 = 0, time.perf_counter()

    return Throughput()
