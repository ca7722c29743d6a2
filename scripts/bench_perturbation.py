"""Perturbation explainers and insertion/deletion against their pass-count bounds and peer implementations.

    .venv/bin/python scripts/bench_perturbation.py [--size 128] [--images 8] [--peer-images 4]
        [--metric-images 16] [--steps 64] [--device cuda|cpu] [--quick]

Everything runs on one model (the benchmark CNN, untrained weights: timing does not depend on them), one set of
phantom radiographs and one device, in one run.

A. Perturbation explainers (``occlusion``, ``rise``, ``kernel_shap``, ``lime``, ``scorecam``,
   ``feature_ablation``; a name that is not registered prints a "not registered" row):

   * bound: forward passes per image x seconds of one no-grad forward per image at the *best* batch size (the
     fastest per-image time over batch sizes 32 ... 512, measured here). ratio = bound / measured: 1 means the
     method costs exactly its forwards at the best batch size; target >= 0.8 for RISE and Occlusion.
   * peer: the same method as captum implements it (Occlusion, KernelShap, Lime, FeatureAblation; with
     ``perturbations_per_eval=1`` and batched), or a straightforward loop of one forward per mask (RISE) or per
     channel (Score-CAM), same model and inputs. ratio = peer s/img / medlit s/img (speed-up).

B. Insertion/deletion: medlit's batched ``deletion_auc``/``insertion_auc`` against a one-forward-per-(image, step)
   loop and against Quantus's ``PixelFlipping`` (deletion, "black" = per-image minimum baseline, the same number
   of steps), with the largest absolute difference of the curves. Target speed-up >= 3x.

The peers with ``perturbations_per_eval=1`` (and the per-mask / per-channel loops) run on ``--peer-images``
images and are scaled to seconds per image. Times are the best of ``--repeats`` (slow peers: one run).
"""

from __future__ import annotations

import argparse
import inspect
import math
import time
import warnings

import numpy as np
import torch
from torch import nn

from medlit.data.phantom import make_cxr_phantom
from medlit.explain import EXPLAINERS
from medlit.explain.targets import explained_score
from medlit.metrics import deletion_auc, insertion_auc, insertion_deletion_curves, step_counts
from medlit.metrics.faithfulness import road_morf
from medlit.models import ModelConfig, build_model
from medlit.models.inference import inference_forward
from medlit.models.throughput import engine_report
from medlit.perturbation import explained_forward, gaussian_blur, perturbation_fill

METHODS = ("occlusion", "rise", "kernel_shap", "lime", "scorecam", "feature_ablation")
DETERMINISTIC = ("occlusion", "feature_ablation", "scorecam")  # maps comparable with the peer's
BOUND_TARGET = {"occlusion": 0.8, "rise": 0.8}
METRIC_TARGET = 3.0
SWEEP = (32, 64, 128, 256, 512)


# ------------------------------------------------------------------------------------------------ timing

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def best_of(fn, repeats: int, device: torch.device, keep: list | None = None) -> float:
    """Fastest of ``repeats`` calls, in seconds; the last call's result is appended to ``keep``."""
    times = []
    for _ in range(max(repeats, 1)):
        sync(device)
        started = time.perf_counter()
        out = fn()
        sync(device)
        times.append(time.perf_counter() - started)
    if keep is not None:
        keep.append(out)
    return min(times)


def forward_sweep(model, x: torch.Tensor, repeats: int, device: torch.device) -> dict[int, float]:
    """Seconds per image of one no-grad forward at each batch size of ``SWEEP`` (inputs: ``x`` repeated), through
    the forward the perturbation methods use (``medlit.models.inference.inference_forward``: a frozen copy on the
    CPU), so the bound is what their forwards cost."""
    out = {}
    forward = inference_forward(model)
    for bs in SWEEP:
        xb = x.repeat(math.ceil(bs / len(x)), 1, 1, 1)[:bs].contiguous()
        with torch.no_grad():
            forward(xb)  # warm-up (allocator, kernel selection)
            out[bs] = best_of(lambda: forward(xb), repeats, device) / bs
    return out


# ------------------------------------------------------------------------------------------------ settings

def occlusion_geometry(size: int) -> tuple[int, int, int]:
    """(window, stride, forward passes per image) of the registered Occlusion at ``size``: window size/8,
    stride window/2, one forward per window position plus one for the unperturbed input (as captum does)."""
    try:
        from medlit.explain.occlusion import occlusion_window
        window, stride = occlusion_window(size)
    except ImportError:
        window = max(2, size // 8)
        stride = max(1, window // 2)
    positions = ((size - window) // stride + 1) ** 2
    return window, stride, positions + 1


def default_kwarg(fn, name: str, fallback):
    try:
        p = inspect.signature(fn).parameters.get(name)
    except (TypeError, ValueError):
        return fallback
    return fallback if p is None or p.default is inspect.Parameter.empty else p.default


def feature_channels(model, x: torch.Tensor) -> int:
    got = {}

    def hook(module, inputs, output) -> None:
        got["c"] = output.shape[1]

    handle = model.feature_layers["last"].register_forward_hook(hook)
    with torch.no_grad():
        model(x[:1])
    handle.remove()
    return got["c"]


def grid_mask(size: int, cells: int, device: torch.device) -> torch.Tensor:
    """(1, 1, size, size) long feature mask: a cells x cells grid of square superpixels."""
    idx = torch.arange(size, device=device) * cells // size
    return (idx[:, None] * cells + idx[None, :])[None, None]


def mean_baseline(x: torch.Tensor) -> torch.Tensor:
    """The registered methods' default fill, the protocol substrate (the blurred image), full shape (captum accepts
    it for any perturbations_per_eval). The name is historical: it was the per-image mean."""
    return perturbation_fill(x)


# ------------------------------------------------------------------------------------------------ peers (A)

def captum_occlusion(model, x, target, size, ppe):
    from captum.attr import Occlusion
    window, stride, _ = occlusion_geometry(size)
    attr = Occlusion(explained_forward(model)).attribute(x, sliding_window_shapes=(1, window, window), strides=(1, stride, stride),
                                      baselines=mean_baseline(x), target=target, perturbations_per_eval=ppe)
    return attr[:, 0]


def captum_surrogate(kind, model, x, target, size, ppe, n_samples, cells):
    """captum KernelShap / Lime, one image at a time (captum fits one surrogate per example)."""
    from captum.attr import KernelShap, Lime
    cls = KernelShap if kind == "kernel_shap" else Lime
    explainer = cls(explained_forward(model))
    mask = grid_mask(size, cells, x.device)
    maps = []
    for i in range(len(x)):
        xi = x[i:i + 1]
        attr = explainer.attribute(xi, target=int(target[i]), baselines=mean_baseline(xi), feature_mask=mask,
                                   n_samples=n_samples, perturbations_per_eval=ppe)
        maps.append(attr[:, 0])
    return torch.cat(maps)


def captum_ablation(model, x, target, size, ppe, cells):
    from captum.attr import FeatureAblation
    attr = FeatureAblation(explained_forward(model)).attribute(x, baselines=mean_baseline(x), target=target,
                                            feature_mask=grid_mask(size, cells, x.device), perturbations_per_eval=ppe)
    return attr[:, 0]


@torch.no_grad()
def rise_loop(model, x, target, n_masks, cells=8, p=0.5, seed=0):
    """RISE, straightforwardly: per image, per mask, draw the mask, one forward, accumulate score * mask.

    Masks as in the registered RISE (binary grid, bilinear upsampling, random shift; the blurred image as the
    substrate, the explained score centred over the masks), drawn one at a time inside the loop."""
    b, _, h, w = x.shape
    g = torch.Generator().manual_seed(seed)
    cell_h, cell_w = math.ceil(h / cells), math.ceil(w / cells)
    maps = torch.zeros(b, h, w, device=x.device)
    fill = perturbation_fill(x)  # the registered RISE's substrate, the protocol blur
    for i in range(b):
        scores, masks = [], []
        for _ in range(n_masks):
            grid = (torch.rand(1, 1, cells, cells, generator=g) < p).float().to(x.device)
            up = nn.functional.interpolate(grid, size=((cells + 1) * cell_h, (cells + 1) * cell_w),
                                           mode="bilinear", align_corners=False)
            dy = int(torch.randint(0, cell_h, (1,), generator=g))
            dx = int(torch.randint(0, cell_w, (1,), generator=g))
            mask = up[:, :, dy:dy + h, dx:dx + w]
            xi = x[i:i + 1]
            masked = xi * mask + fill[i:i + 1] * (1 - mask)
            scores.append(explained_score(model(masked), target[i:i + 1])[0])
            masks.append(mask[0, 0])
        centred = torch.stack(scores) - torch.stack(scores).mean()
        maps[i] = (centred[:, None, None] * torch.stack(masks)).sum(dim=0)
    return maps / (n_masks * p)


@torch.no_grad()
def scorecam_loop(model, x, target):
    """Score-CAM, straightforwardly: per image, one forward per channel of the feature layer (min-max normalised,
    upsampled activation times the image), weights softmax(f_t(masked) - f_t(black)), f_t the explained score,
    as the registered one."""
    b, _, h, w = x.shape
    feats = {}

    def hook(module, inputs, output) -> None:
        feats["a"] = output

    handle = model.feature_layers["last"].register_forward_hook(hook)
    maps = []
    try:
        for i in range(b):
            xi = x[i:i + 1]
            model(xi)
            acts = feats["a"]
            up = nn.functional.interpolate(acts, size=(h, w), mode="bilinear", align_corners=False)[0]
            base = explained_score(model(torch.zeros_like(xi)), target[i:i + 1])[0]
            weights = torch.empty(up.shape[0], device=x.device)
            for k in range(up.shape[0]):
                a = up[k]
                lo, hi = a.min(), a.max()
                norm = (a - lo) / (hi - lo) if hi > lo else torch.zeros_like(a)
                weights[k] = explained_score(model(xi * norm), target[i:i + 1])[0]
            weights = torch.softmax(weights - base, dim=0)
            cam = torch.relu((weights[:, None, None] * acts[0]).sum(0))
            maps.append(nn.functional.interpolate(cam[None, None], size=(h, w), mode="bilinear",
                                                  align_corners=False)[0, 0])
    finally:
        handle.remove()
    return torch.stack(maps)


# ------------------------------------------------------------------------------------------------ peers (B)

@torch.no_grad()
def per_step_curves(model, x, target, maps, steps, mode, substrate):
    """One forward per (image, step): pixels moved in place, most relevant first, step by step."""
    b, c, h, w = x.shape
    order = torch.sort(maps.flatten(1), dim=1, descending=True, stable=True).indices
    counts = step_counts(h * w, steps).tolist()
    curves = torch.empty(b, steps + 1)
    for i in range(b):
        start, finish = (x[i], substrate[i]) if mode == "deletion" else (substrate[i], x[i])
        img, fin = start.clone().reshape(c, -1), finish.reshape(c, -1)
        moved = 0
        for k, n in enumerate(counts):
            idx = order[i, moved:n]
            img[:, idx] = fin[:, idx]
            moved = n
            curves[i, k] = explained_score(model(img.view(1, c, h, w)), target[i:i + 1])[0].item()
    return curves


def quantus_pixel_flipping(model, x, target, maps, steps, device):
    import quantus
    h, w = x.shape[-2:]
    metric = quantus.PixelFlipping(features_in_step=h * w // steps, perturb_baseline="black", abs=False,
                                   normalise=False, disable_warnings=True, display_progressbar=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scores = metric(model=model, x_batch=x.cpu().numpy(), y_batch=target.cpu().numpy(),
                        a_batch=maps[:, None].cpu().numpy(), channel_first=True, softmax=True,
                        device=str(device))
    return np.asarray(scores, dtype=np.float64)


# ------------------------------------------------------------------------------------------------ main

class Table:
    def __init__(self) -> None:
        self.rows: list[tuple[str, str, str, str, str, str]] = []

    def add(self, item, medlit=None, reference=None, ratio=None, target=None, note=None):
        fmt = lambda v: "" if v is None else f"{v:.4g}"
        met = "" if target is None or ratio is None else ("yes" if ratio >= target else "NO")
        self.rows.append((item, fmt(medlit), fmt(reference), "" if ratio is None else f"{ratio:.2f}",
                          "" if target is None else f">= {target:g}", met or (note or "")))

    def print(self) -> None:
        head = ("item", "medlit s/img", "reference s/img", "ratio", "target", "met?")
        widths = [max(len(str(r[i])) for r in [head, *self.rows]) for i in range(6)]
        line = lambda r: " | ".join(str(v).ljust(wd) if i == 0 else str(v).rjust(wd)
                                    for i, (v, wd) in enumerate(zip(r, widths)))
        print(line(head))
        print("-+-".join("-" * wd for wd in widths))
        for r in self.rows:
            print(line(r))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--images", type=int, default=8, help="images for the medlit methods and batched peers")
    parser.add_argument("--peer-images", type=int, default=4,
                        help="images for the slow peers (perturbations_per_eval=1, per-mask/per-channel loops)")
    parser.add_argument("--metric-images", type=int, default=16)
    parser.add_argument("--steps", type=int, default=64)
    parser.add_argument("--metric-batch-size", type=int, default=64, help="(image, step) pairs per forward (medlit's default)")
    parser.add_argument("--method-batch", type=int, default=None,
                        help="batch_size passed to the medlit methods (default: each one's registered default)")
    parser.add_argument("--rise-masks", type=int, default=None, help="n_masks for RISE (default: registered)")
    parser.add_argument("--peer-batch", type=int, default=None,
                        help="perturbed images per forward of the batched captum peers (default: the registered "
                             "method's batch_size; Occlusion/FeatureAblation: perturbations_per_eval = this // "
                             "images, as captum evaluates all images of the call per perturbation)")
    parser.add_argument("--loop-masks", type=int, default=500,
                        help="masks the one-forward-per-mask RISE loop is timed on, scaled to n_masks")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--methods", nargs="*", default=list(METHODS))
    parser.add_argument("--skip-metrics", action="store_true")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true",
                        help="a smoke run: 64 px, 2 images (1 for slow peers), 4 metric images, 16 steps, "
                             "RISE with 200 masks, one repeat")
    args = parser.parse_args()
    if args.quick:
        args.size, args.images, args.peer_images = 64, 2, 1
        args.metric_images, args.steps, args.repeats = 4, 16, 1
        args.rise_masks = args.rise_masks or 200
    args.peer_images = min(args.peer_images, args.images)
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = build_model(ModelConfig(dataset="cxr-phantom", image_size=args.size, n_train=1, n_val=1, epochs=1,
                                    batch_size=1)).eval().to(device)
    for p in model.parameters():
        p.requires_grad_(False)
    n_data = max(args.images, args.metric_images)
    data = make_cxr_phantom(n_data, size=args.size, seed=1, split="test", prevalence=1.0)
    x_all = data.images.to(device)
    t_all = torch.ones(n_data, dtype=torch.long, device=device)
    x, target = x_all[:args.images], t_all[:args.images]
    xp, tp = x[:args.peer_images], target[:args.peer_images]

    sweep = forward_sweep(model, x, args.repeats, device)
    best_bs = min(sweep, key=sweep.get)
    fwd = sweep[best_bs]
    with torch.no_grad():
        x1 = x[:1].clone()
        for _ in range(3):  # the first calls at a new batch shape can be slow (allocator, kernel selection)
            model(x1)
        fwd1 = best_of(lambda: model(x1), 5, device)
    threads = torch.get_num_threads() if device.type == "cpu" else None
    print(f"torch {torch.__version__}, device {device}" + (f" ({threads} threads)" if threads else "")
          + f", {args.size} px; methods on {args.images} images ({args.peer_images} for slow peers); "
          f"insertion/deletion on {args.metric_images} images x {args.steps} steps")
    print("no-grad forward, ms/image by batch size: "
          + ", ".join(f"{bs}: {s * 1e3:.3f}" for bs, s in sweep.items())
          + f"; batch 1: {fwd1 * 1e3:.3f}")
    print(f"best batch size {best_bs}: {fwd * 1e3:.3f} ms/image per forward (the bound's unit)")
    if device.type == "cpu":  # against the machine's limit, every engine at the best batch
        xb = x.repeat(math.ceil(best_bs / len(x)), 1, 1, 1)[:best_bs].contiguous()
        print("\n".join(engine_report(model, xb)))
    print()

    table = Table()
    channels = feature_channels(model, x)

    # ---------------------------------------------------------------------------------------- A
    for name in args.methods:
        if name not in EXPLAINERS:
            table.add(f"{name}: not registered", note="not registered")
            print(f"{name}: not registered")
            continue
        spec = EXPLAINERS[name]
        kwargs = {}
        if args.method_batch and "batch_size" in inspect.signature(spec.fn).parameters:
            kwargs["batch_size"] = args.method_batch
        if name == "rise":
            n_masks = args.rise_masks or default_kwarg(spec.fn, "n_masks", spec.forward_passes)
            if args.rise_masks:
                kwargs["n_masks"] = args.rise_masks
            passes = n_masks
        elif name == "occlusion":
            passes = occlusion_geometry(args.size)[2]
        else:
            passes = spec.forward_passes  # registered at default settings
        run = lambda: spec.fn(model, x, target, **kwargs)
        spec.fn(model, x[:1], target[:1], **kwargs)  # warm-up (RISE makes and caches its masks here)
        ours = []
        seconds = best_of(run, args.repeats, device, ours) / args.images
        ours = ours[0].detach().float().cpu()
        bound = passes * fwd
        print(f"{name}: {seconds:.4f} s/image; {passes} forwards x {fwd * 1e3:.3f} ms = {bound:.4f} s/image bound"
              + (f" (registry says {spec.forward_passes} forwards at defaults)" if passes != spec.forward_passes
                 else ""))
        table.add(f"{name}: pass bound ({passes} fwd) / measured", seconds, bound, bound / seconds,
                  BOUND_TARGET.get(name))

        peer_batch = args.peer_batch or default_kwarg(spec.fn, "batch_size", 256)
        ppe_img = peer_batch  # KernelShap/Lime: one image per call
        ppe_occ = max(1, peer_batch // args.images)  # Occlusion/FeatureAblation: all images per perturbation
        peers = []
        if name == "occlusion":
            peers = [("captum Occlusion ppe=1", lambda: captum_occlusion(model, xp, tp, args.size, 1), len(xp), 1),
                     (f"captum Occlusion ppe={ppe_occ}",
                      lambda: captum_occlusion(model, x, target, args.size, ppe_occ), len(x), args.repeats)]
        elif name in ("kernel_shap", "lime"):
            n_samples = default_kwarg(spec.fn, "n_samples", 256)
            cells = default_kwarg(spec.fn, "cells", 8)
            label = "KernelShap" if name == "kernel_shap" else "Lime"
            peers = [(f"captum {label} ppe=1",
                      lambda: captum_surrogate(name, model, xp, tp, args.size, 1, n_samples, cells), len(xp), 1),
                     (f"captum {label} ppe={ppe_img}",
                      lambda: captum_surrogate(name, model, x, target, args.size, ppe_img, n_samples, cells),
                      len(x), args.repeats)]
        elif name == "feature_ablation":
            cells = default_kwarg(spec.fn, "cells", 8)
            peers = [("captum FeatureAblation ppe=1",
                      lambda: captum_ablation(model, xp, tp, args.size, 1, cells), len(xp), 1),
                     (f"captum FeatureAblation ppe={ppe_occ}",
                      lambda: captum_ablation(model, x, target, args.size, ppe_occ, cells), len(x), args.repeats)]
        elif name == "rise":
            n_loop = min(args.loop_masks, n_masks)  # the loop's cost is linear in the masks: scaled to n_masks
            peers = [(f"loop: 1 forward per mask ({n_masks}" + (f", timed on {n_loop}" if n_loop < n_masks else "")
                      + ")", lambda: rise_loop(model, xp, tp, n_loop), len(xp) * n_loop / n_masks, 1)]
        elif name == "scorecam":
            peers = [(f"loop: 1 forward per channel ({channels})", lambda: scorecam_loop(model, xp, tp),
                      len(xp), 1)]
        for label, fn, n, reps in peers:
            got = []
            peer = best_of(fn, reps, device, got) / n
            agree = ""
            if name in DETERMINISTIC:
                diff = (got[0].detach().float().cpu() - ours[:len(got[0])]).abs().max().item()
                agree = f"; max |map difference| {diff:.2e} (map range {ours[:len(got[0])].abs().max().item():.2e})"
            print(f"  {label}: {peer:.4f} s/image, speed-up {peer / seconds:.2f}x{agree}")
            table.add(f"{name} vs {label}", seconds, peer, peer / seconds)

    # ---------------------------------------------------------------------------------------- B
    if not args.skip_metrics:
        xm, tm = x_all[:args.metric_images], t_all[:args.metric_images]
        if "saliency" in EXPLAINERS:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # captum: "did not already require gradients"
                maps = EXPLAINERS["saliency"].fn(model, xm, tm).detach().float()
            source = "saliency"
        else:
            maps = torch.rand(xm.shape[0], *xm.shape[-2:], generator=torch.Generator().manual_seed(0)).to(device)
            source = "random"
        # break exact ties (Quantus sorts with an unstable argsort): a tiny deterministic jitter, same for both
        jitter = torch.rand(maps.shape, generator=torch.Generator().manual_seed(1)).to(device)
        maps = maps + jitter * 1e-4 * maps.abs().amax().clamp(min=1e-12)
        black = xm.amin(dim=(1, 2, 3), keepdim=True)  # Quantus's "black": the per-image minimum
        kw = dict(steps=args.steps, batch_size=args.metric_batch_size)
        kw_best = dict(steps=args.steps, batch_size=best_bs)
        blur = gaussian_blur(xm)
        print(f"\ninsertion/deletion: maps from {source} (+ tie-breaking jitter), {args.steps} steps, "
              f"batch {args.metric_batch_size} pairs per forward")

        del_run = lambda: deletion_auc(model, xm, tm, maps, substrate=black, **kw)
        ins_run = lambda: insertion_auc(model, xm, tm, maps, **kw)
        del_run()
        t_del = best_of(del_run, args.repeats, device) / len(xm)
        t_ins = best_of(ins_run, args.repeats, device) / len(xm)
        t_del_best = best_of(lambda: deletion_auc(model, xm, tm, maps, substrate=black, **kw_best),
                             args.repeats, device) / len(xm)

        ours_del = insertion_deletion_curves(model, xm, tm, maps, mode="deletion", substrate=black, **kw).cpu()
        ours_ins = insertion_deletion_curves(model, xm, tm, maps, mode="insertion", **kw).cpu()
        ours_del_p = insertion_deletion_curves(model, xm, tm, maps, mode="deletion", substrate=black,
                                               quantity="probability", **kw).cpu()  # Quantus records p

        t0 = time.perf_counter()
        ref_del = per_step_curves(model, xm, tm, maps, args.steps, "deletion", black.expand_as(xm))
        sync(device)
        t_ref_del = (time.perf_counter() - t0) / len(xm)
        t0 = time.perf_counter()
        ref_ins = per_step_curves(model, xm, tm, maps, args.steps, "insertion", blur)
        sync(device)
        t_ref_ins = (time.perf_counter() - t0) / len(xm)

        quantus_pixel_flipping(model, xm[:1], tm[:1], maps[:1], args.steps, device)  # warm-up / imports
        t0 = time.perf_counter()
        theirs = quantus_pixel_flipping(model, xm, tm, maps, args.steps, device)
        sync(device)
        t_q = (time.perf_counter() - t0) / len(xm)

        d_ref_del = (ours_del - ref_del).abs().max().item()
        d_ref_ins = (ours_ins - ref_ins).abs().max().item()
        d_q = float(np.abs(ours_del_p[:, 1:].numpy().astype(np.float64) - theirs).max())
        print(f"deletion : batched {t_del:.4f} s/image (batch {best_bs}: {t_del_best:.4f}), per step "
              f"{t_ref_del:.4f}, Quantus PixelFlipping {t_q:.4f}")
        print(f"insertion: batched {t_ins:.4f} s/image, per step {t_ref_ins:.4f}")
        print(f"max |curve difference|: deletion vs per step {d_ref_del:.2e}, insertion vs per step "
              f"{d_ref_ins:.2e}, deletion[1:] vs Quantus {d_q:.2e}")
        table.add("deletion_auc vs per-step loop", t_del, t_ref_del, t_ref_del / t_del, METRIC_TARGET)
        table.add("insertion_auc vs per-step loop", t_ins, t_ref_ins, t_ref_ins / t_ins, METRIC_TARGET)
        table.add("deletion_auc vs Quantus PixelFlipping", t_del, t_q, t_q / t_del, METRIC_TARGET)
        table.add(f"deletion_auc (batch {best_bs}) vs Quantus", t_del_best, t_q, t_q / t_del_best, METRIC_TARGET)

        # ROAD: noisy linear imputation of every (image, fraction) pair, then one forward per batch of pairs
        road_steps = default_kwarg(road_morf, "steps", 5)
        t_road = best_of(lambda: road_morf(model, xm, tm, maps, batch_size=args.metric_batch_size),
                         args.repeats, device) / len(xm)
        road_bound = math.ceil(road_steps + 1) * fwd
        print(f"road_morf ({road_steps - 1} fractions): {t_road:.4f} s/image ({96 * t_road:.2f} s per 96 images); "
              f"its {road_steps + 1} forwards alone {road_bound:.4f} s/image")
        table.add("road_morf: forward bound / measured", t_road, road_bound, road_bound / t_road)

    print()
    table.print()


if __name__ == "__main__":
    main()
