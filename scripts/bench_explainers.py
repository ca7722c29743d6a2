"""Cost of every registered explainer against the cost of its forward/backward passes (run by hand).

    .venv/bin/python scripts/bench_explainers.py [--size 128] [--images 64] [--batch-size 32] [--model resnet10]
                                                 [--methods a b ...]

For each method: seconds per image (best of ``--repeats``), and the ratio to its pass bound, the time the
forward and backward passes it declares in the registry take on the same model, inputs and batch size,
measured in the same run. A ratio near 1 means the method costs what its passes cost; well above 1 means
overhead (hooks, copies, per-step Python work) worth a look.
"""

from __future__ import annotations

import argparse

import torch

from medlit.data.phantom import make_cxr_phantom
from medlit.explain import EXPLAINERS, explain_batched, not_applicable_reason, positive_class
from medlit.explain.memo import MEMO
from medlit.models import MODEL_KINDS, ModelConfig, build_model
from medlit.models.inference import inference_forward
from medlit.models.throughput import best_seconds, engine_report


def pass_costs(model, x: torch.Tensor, batch_size: int, repeats: int) -> tuple[float, float]:
    """Seconds per image of one forward, and of one backward to the input (forward excluded)."""
    forward = inference_forward(model)  # what the no-grad methods run (a frozen copy on the CPU)

    def forwards():
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                forward(x[i:i + batch_size])

    def forward_backward():
        for i in range(0, len(x), batch_size):
            xb = x[i:i + batch_size].clone().requires_grad_(True)
            torch.autograd.grad(model(xb)[:, 1].sum(), xb)

    fwd = best_seconds(forwards, repeats, warmup=0) / len(x)
    both = best_seconds(forward_backward, repeats, warmup=0) / len(x)
    return fwd, max(both - fwd, 0.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=64)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--model", default="resnet10", choices=MODEL_KINDS.names(), help="a registered model kind")
    parser.add_argument("--methods", nargs="*", default=None)
    args = parser.parse_args()

    model = build_model(ModelConfig(dataset="cxr-phantom", image_size=args.size, n_train=1, n_val=1, epochs=1,
                                    batch_size=args.batch_size, arch=args.model)).eval()
    data = make_cxr_phantom(args.images, size=args.size, seed=1, split="test", prevalence=1.0)
    x, target = data.images, positive_class(args.images)
    fwd, bwd = pass_costs(model, x, args.batch_size, args.repeats)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.model}, {args.images} images at "
          f"{args.size} px, batch {args.batch_size}")
    print(f"one forward: {fwd * 1e3:.2f} ms/image; one backward: {bwd * 1e3:.2f} ms/image")
    print("\n".join(engine_report(model, x[:args.batch_size])) + "\n")
    print(f"{'method':26s} {'family':12s} {'fwd':>4s} {'bwd':>4s} {'s/image':>9s} {'bound s/image':>13s} {'ratio':>7s}")
    for name in args.methods or EXPLAINERS.names():
        spec = EXPLAINERS[name]
        if not_applicable_reason(name, model):
            print(f"{name:26s} {spec.family:12s} not applicable: {not_applicable_reason(name, model)}")
            continue
        def run():
            MEMO.clear()  # every repeat computes its maps: a memo hit would time a lookup
            explain_batched(name, model, x, target, batch_size=args.batch_size)

        seconds = best_seconds(run, args.repeats, warmup=0) / args.images
        bound = spec.forward_passes * fwd + spec.backward_passes * bwd
        ratio = f"{seconds / bound:7.2f}" if bound > 0 else "    n/a"
        print(f"{name:26s} {spec.family:12s} {spec.forward_passes:4d} {spec.backward_passes:4d} "
              f"{seconds:9.5f} {bound:13.5f} {ratio}")


if __name__ == "__main__":
    main()
