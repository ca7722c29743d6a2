"""The forward engines against the machine's limit (run by hand; the numbers behind ``AUTO_ENGINE``).

    .venv/bin/python scripts/bench_engine.py [--models resnet10 vit] [--batches 16 32 64 128] [--size 128]

For each model kind, engine (eager, frozen, compiled) and batch size: the build time (trace or compile, the first
call), ms per image, the achieved GFLOP/s and its fraction of the fp32 matrix-product rate measured in the same
run, and the largest logit difference from the eager model. The compiled engine's shapes are compiled once per
batch bucket; with a warm inductor cache (a second run) its build time drops to a few seconds.
"""

from __future__ import annotations

import argparse

import torch

from medlit.models import MODEL_KINDS, ModelConfig, build_model
from medlit.models.inference import ENGINES
from medlit.models.throughput import engine_rate, forward_flops, matmul_peak_gflops


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="*", default=["resnet10", "vit"], choices=MODEL_KINDS.names())
    parser.add_argument("--engines", nargs="*", default=[e for e in ENGINES if e != "auto"])
    parser.add_argument("--batches", nargs="*", type=int, default=[16, 32, 64, 128])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--channels", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()

    peak = matmul_peak_gflops()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads; fp32 2048x2048 matrix product: "
          f"{peak:.0f} GFLOP/s\n")
    print(f"{'model':10s} {'engine':9s} {'batch':>5s} {'build s':>8s} {'ms/image':>9s} {'GFLOP/s':>8s} "
          f"{'of peak':>8s} {'max diff':>9s}")
    for kind in args.models:
        model = build_model(ModelConfig(dataset="cxr-phantom", image_size=args.size, n_train=1, n_val=1, epochs=1,
                                        batch_size=64, arch=kind, in_channels=args.channels)).eval()
        x = torch.rand(max(args.batches), args.channels, args.size, args.size)
        print(f"{kind}: {forward_flops(model, x) / 1e6:.1f} MFLOP per image")
        for engine in args.engines:
            for batch in args.batches:
                r = engine_rate(model, x[:batch], engine, args.repeats)
                print(f"{kind:10s} {engine:9s} {batch:5d} {r['build_s']:8.1f} {r['ms_per_image']:9.3f} "
                      f"{r['gflops']:8.1f} {r['gflops'] / peak:8.0%} {r['max_diff']:9.1e}")


if __name__ == "__main__":
    main()
