"""Time the embedded data generators: images per second and peak memory (run by hand, not in the tests).

    .venv/bin/python scripts/bench_phantom.py [--dataset cxr-phantom|fundus-lesions|ct-lesions] [--n 2000]
                                              [--size 128] [--repeats 3]

Target: at least 2000 images at 128 x 128 in at most 30 s on a 2-core CPU, for every embedded set.
"""

from __future__ import annotations

import argparse
import resource
import time

import torch


def generator(name: str):
    if name == "cxr-phantom":
        from medlit.data.phantom import make_cxr_phantom
        return make_cxr_phantom
    if name == "fundus-lesions":
        from medlit.data.fundus import make_fundus_lesions
        return make_fundus_lesions
    from medlit.data.ct import make_ct_lesions
    return make_ct_lesions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="cxr-phantom", choices=["cxr-phantom", "fundus-lesions", "ct-lesions"])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    times = []
    for seed in range(args.repeats):
        started = time.perf_counter()
        data = generator(args.dataset)(args.n, size=args.size, seed=seed, split="train")
        times.append(time.perf_counter() - started)
    best, worst = min(times), max(times)
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"{args.dataset}: {args.n} images at {args.size}x{args.size}: best {best:.2f} s, worst {worst:.2f} s "
          f"({args.n / best:.0f} images/s); peak RSS {peak_mib:.0f} MiB; images tensor "
          f"{data.images.numel() * 4 / 2**20:.0f} MiB")
    print("target (<= 30 s):", "met" if worst <= 30 else f"MISSED by {worst - 30:.1f} s")


if __name__ == "__main__":
    main()
