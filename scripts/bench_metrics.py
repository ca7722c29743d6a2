"""Time batched insertion/deletion against a one-forward-per-step loop.

Usage: ``python scripts/bench_metrics.py [--size 128] [--images 16] [--steps 64] [--batch-size 256]``.
Prints seconds per image for both and the number of forward passes. Runs on CUDA when available.
"""

from __future__ import annotations

import argparse
import time

import torch
from torch import nn

from medlit.metrics import deletion_auc, forwards_needed, insertion_auc, step_counts


def toy_cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.ReLU(),
        nn.Conv2d(32, 64, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 2),
    ).eval()


@torch.no_grad()
def per_step_deletion(model, x, target, maps, steps):
    """The naive reference: one forward per (image, step)."""
    b, _, h, w = x.shape
    order = maps.flatten(1).argsort(dim=1, descending=True, stable=True)
    counts = step_counts(h * w, steps)
    curves = torch.empty(b, steps + 1)
    for i in range(b):
        for k, n in enumerate(counts.tolist()):
            img = x[i].clone().flatten(1)
            img[:, order[i, :n]] = 0
            curves[i, k] = torch.softmax(model(img.view(1, *x.shape[1:])), 1)[0, target[i]]
    return curves


def clock(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=256)
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    g = torch.Generator().manual_seed(0)
    x = torch.rand(args.images, 1, args.size, args.size, generator=g).to(device)
    maps = torch.rand(args.images, args.size, args.size, generator=g).to(device)
    target = torch.zeros(args.images, dtype=torch.int64, device=device)
    model = toy_cnn().to(device)
    kw = dict(steps=args.steps, batch_size=args.batch_size)
    with torch.no_grad():  # warm-up: first-call kernel selection would otherwise count
        model(x[:1]), model(x.repeat(-(-args.batch_size // args.images), 1, 1, 1)[:args.batch_size])
    t_del = clock(lambda: deletion_auc(model, x, target, maps, **kw))
    t_ins = clock(lambda: insertion_auc(model, x, target, maps, **kw))
    n_loop = min(args.images, 2)
    t_loop = clock(lambda: per_step_deletion(model, x[:n_loop], target[:n_loop], maps[:n_loop], args.steps))
    print(f"device {device}, {args.images} images {args.size}², {args.steps} steps, batch {args.batch_size}")
    print(f"deletion  batched : {t_del / args.images * 1e3:8.1f} ms/image "
          f"({forwards_needed(args.images, args.steps, args.batch_size)} forwards)")
    print(f"insertion batched : {t_ins / args.images * 1e3:8.1f} ms/image")
    print(f"deletion per step : {t_loop / n_loop * 1e3:8.1f} ms/image ({n_loop * (args.steps + 1)} forwards)")


if __name__ == "__main__":
    main()
