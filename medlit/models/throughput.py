"""How close a model's forward pass comes to the machine's limit: its floating-point operations per image, the
rate it achieves under each forward engine, and the fp32 matrix-product rate it is measured against.

Used by the benchmark scripts (``scripts/bench_engine.py``, ``scripts/bench_explainers.py``), never by a chapter:
the numbers depend on the machine and are printed, not stored.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import torch

from medlit.models.inference import inference_forward


def forward_flops(model: torch.nn.Module, example: torch.Tensor) -> float:
    """Floating-point operations of one forward pass per image (multiply and add counted as two), by torch's
    FLOP counter on a batch of one shaped like ``example``."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(example[:1])
    return float(counter.get_total_flops())


def best_seconds(fn: Callable[[], object], repeats: int = 5, warmup: int = 1) -> float:
    """The shortest of ``repeats`` timed calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return min(times)


def matmul_peak_gflops(size: int = 2048, repeats: int = 5) -> float:
    """The machine's fp32 rate on one large square matrix product (GFLOP/s), the reference of "fraction of peak"."""
    a, b = torch.randn(size, size), torch.randn(size, size)
    return 2 * size ** 3 / best_seconds(lambda: a @ b, repeats) / 1e9


def engine_rate(model: torch.nn.Module, x: torch.Tensor, engine: str, repeats: int = 5) -> dict:
    """One engine's forward on the batch ``x``: seconds to build it (compile, trace), ms per image, GFLOP/s and
    the largest difference of its logits from the eager model's."""
    forward = inference_forward(model, engine)
    with torch.no_grad():
        reference = model(x)
        started = time.perf_counter()
        first = forward(x)
        build = time.perf_counter() - started
        seconds = best_seconds(lambda: forward(x), repeats)
    flops = forward_flops(model, x)
    return {"engine": engine, "build_s": build, "ms_per_image": 1e3 * seconds / len(x),
            "gflops": flops * len(x) / seconds / 1e9, "max_diff": float((first - reference).abs().max())}


def engine_report(model: torch.nn.Module, x: torch.Tensor, engines: tuple[str, ...] = ("eager", "frozen",
                                                                                      "compiled"),
                  peak: float | None = None) -> list[str]:
    """Lines for a benchmark script: each engine's forward on the batch ``x`` in GFLOP/s and as a fraction of
    the fp32 matrix-product rate (measured here unless given)."""
    peak = peak or matmul_peak_gflops()
    lines = [f"forward at batch {len(x)}: {forward_flops(model, x) / 1e6:.1f} MFLOP/image; fp32 matrix product "
             f"{peak:.0f} GFLOP/s"]
    for engine in engines:
        r = engine_rate(model, x, engine)
        lines.append(f"  {engine:9s} {r['ms_per_image']:7.3f} ms/image  {r['gflops']:6.1f} GFLOP/s  "
                     f"{r['gflops'] / peak:4.0%} of peak  (build {r['build_s']:.1f} s, max diff {r['max_diff']:.1e})")
    return lines
