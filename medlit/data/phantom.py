"""A procedural chest-radiograph (PA view) phantom with findings whose pixels are known exactly.

Every image is rendered analytically on a coordinate grid: each pixel centre is mapped through the image's
acquisition transform (patient scale, rotation, shift) into *anatomical coordinates* ``(X, Y)`` — both in about
[-1, 1], ``X`` to the image right (the patient's left), ``Y`` downwards — and every structure is a smooth function of
those coordinates. Image, lung mask and finding masks are evaluated on the same warped grid, so they stay aligned
whatever the transform. The pipeline per batch (chunk) of images is

1. density ``D`` = soft tissue (body outline, thicker in the middle) minus the air of the two lung fields, plus
   mediastinum, heart, hemidiaphragm domes (abdomen below), trachea, spine, posterior and anterior ribs,
   clavicles, gastric bubble, lung vessel markings and parenchymal texture, benign look-alikes and the findings;
2. intensity ``I = 1 - exp(-k D)`` (dense = bright, as on a CR print), then a window and a gamma;
3. an optional corner marker (the planted confounder), a Gaussian blur and signal-dependent noise; clipped to [0, 1].

Everything random comes from one ``numpy`` generator (per-image parameters) and one ``torch`` generator per
internal chunk (pixel noise), both seeded from a stable hash of ``(seed, split)``: the same arguments always give
bit-identical output, and the train, val and test splits of one seed are different patients.

The data card ``data_cards/cxr_phantom.md`` describes the anatomy, findings, look-alikes and known limits.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medlit.data import seeding
from medlit.data.sample import SampleSet, masks_to_boxes

__all__ = ["make_cxr_phantom", "split_seed", "FINDING_TYPES", "GENERATOR_VERSION", "ORIGINAL_SIZE"]

GENERATOR_VERSION = "medlit.data.phantom v1"
ORIGINAL_SIZE = 256  # the nominal native resolution (pointing-game tolerances are defined at this size)
NAME = "cxr-phantom"
CLASS_NAMES = ["no finding", "finding"]
FINDING_TYPES = ("nodule", "mass", "consolidation")
FINDING_WEIGHTS = (0.40, 0.30, 0.30)  # share of each finding type among positives
P_SECOND_NODULE = 0.15  # chance that a nodule case carries a second nodule
MAX_FINDINGS = 2  # K, the number of box rows per sample
MAX_LOOKALIKES = 8  # look-alike slots per image (unused slots have zero amplitude)
_PIXELS_PER_CHUNK = 1 << 19  # images per internal chunk = this / (size * size)
_N_WAVES = 6  # Fourier components of a consolidation's patchy texture
_WAVE_K = 30.0  # their typical spatial frequency (radians per anatomical unit)

# Finding contrast ranges (added density, before the intensity mapping) and sizes (radius in anatomical units,
# where the thorax is about 2 units wide). These were tuned so that the small ResNet of the quick profile reaches a
# test AUROC of roughly 0.9-0.98; see the data card.
NODULE_RADIUS = (0.035, 0.065)
NODULE_DENSITY = (0.25, 0.70)
MASS_RADIUS = (0.085, 0.14)
MASS_DENSITY = (0.12, 0.45)
CONSOLIDATION_AXES = (0.16, 0.30)
CONSOLIDATION_DENSITY = (0.22, 0.60)

_LOOKALIKE_KINDS = ("none", "nipple", "granuloma", "vessel", "bone-island")


def split_seed(seed: int, split: str) -> int:
    """A stable 63-bit seed for ``(seed, split)`` (sha256, not Python's salted ``hash``; see
    :func:`medlit.data.seeding.split_seed`)."""
    return seeding.split_seed("medlit.cxr-phantom", seed, split)


# ----------------------------------------------------------------------------------------------------------------
# Per-image parameters
# ----------------------------------------------------------------------------------------------------------------


def _patient_params(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Anatomy and acquisition parameters, one value per image (all float64 numpy arrays of length n)."""
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    p = {
        # acquisition geometry: anatomical -> image normalised coordinates
        "scale": u(0.90, 1.06),
        "angle": np.deg2rad(u(-5.0, 5.0)),
        "tx": u(-0.04, 0.04),
        "ty": u(-0.04, 0.04),
        # body and lungs
        "body_w": u(0.84, 0.97),
        "body_k": u(0.62, 0.80),  # soft-tissue density at the body's centre line
        "lung_cx": u(0.42, 0.46),
        "lung_cy": u(-0.10, -0.04),
        "lung_ax": u(0.31, 0.35),
        "lung_ay": u(0.72, 0.78),
        "lung_air": u(0.62, 0.72),  # fraction of the soft-tissue density replaced by air in the lung fields
        "dome_r": u(0.36, 0.48),  # top of the right hemidiaphragm (image left)
        "dome_drop": u(0.02, 0.07),  # the left dome lies this much lower
        "dome_c": u(0.8, 1.2),
        # mediastinum and heart
        "med_x": u(-0.02, 0.03),
        "med_w": u(0.085, 0.115),
        "knob": u(0.03, 0.07),  # aortic knob bulge to the image right
        "heart_x": u(0.12, 0.18),
        "heart_dy": u(0.08, 0.14),
        "heart_ax": u(0.34, 0.40),
        "heart_ay": u(0.22, 0.27),
        "heart_a": u(0.35, 0.60),
        # bones
        "spine_ph": u(0.0, 1.0),
        "spine_p": u(0.11, 0.13),
        "rib_p": u(0.125, 0.145),
        "rib_ph": u(0.0, 1.0),
        "rib_a": u(0.75, 0.90),
        "rib_b": u(0.58, 0.68),
        "arib_ph": u(0.0, 1.0),
        "bone_k": u(0.85, 1.15),
        "clav_y": u(-0.66, -0.58),
        # abdomen, lung markings
        "bubble": (rng.random(n) < 0.6).astype(np.float64),
        "bubble_x": u(0.35, 0.50),
        "bubble_r": u(0.05, 0.09),
        "vessel_m": rng.integers(11, 17, n).astype(np.float64),
        "vessel_ph": u(0.0, 2 * math.pi),
        "vessel_w": u(1.0, 3.0),
        "vessel_k": u(0.05, 0.09),
        "texture_k": u(0.015, 0.03),
        # acquisition: exposure, window, gamma, blur, noise
        "exposure": u(1.55, 1.95),
        "win_lo": u(0.02, 0.10),
        "win_hi": u(0.85, 0.97),
        "gamma": np.exp(u(np.log(0.8), np.log(1.25))),
        "blur": u(0.35, 0.9),  # Gaussian sigma in pixels at 128 px (scaled with the image size)
        "noise": u(0.008, 0.025),
    }
    p["dome_l"] = p["dome_r"] + p["dome_drop"]
    p["heart_y"] = p["dome_l"] - p["heart_dy"]
    return p


def _view(t: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-image values (N,) shaped to broadcast against a per-image grid or point set ``like`` (N, ...)."""
    return t.view(-1, *([1] * (like.dim() - 1)))


def _soft(x: torch.Tensor, width: float) -> torch.Tensor:
    """A smooth step from 0 (x << 0) to 1 (x >> 0) of the given width."""
    return torch.sigmoid(x / width)


def _lung_parts(X: torch.Tensor, Y: torch.Tensor, P: dict[str, torch.Tensor]):
    """Signed quantities (> 0 inside) of everything that bounds the lung fields, and the heart/mediastinum.

    Returns a dict of tensors shaped like X: ``lung_r``/``lung_l`` (egg-shaped outer outline), ``dome_r``/``dome_l``
    (above the hemidiaphragm), ``heart`` (> 0 inside the heart), ``med`` (> 0 inside the mediastinum).
    """
    v = lambda k: _view(P[k], X)  # noqa: E731
    out = {}
    for name, side in (("r", -1.0), ("l", 1.0)):
        dx = X - side * v("lung_cx")
        dy = Y - v("lung_cy")
        ay = v("lung_ay")
        ax = v("lung_ax") * (1.0 + 0.22 * dy / ay)  # narrower apex, wide base
        q = (dx / ax.clamp_min(0.05)).abs() ** 2.4 + (dy / ay).abs() ** 2.2
        out[f"lung_{name}"] = 1.0 - q
        dome = v(f"dome_{name}") + 0.30 * v("dome_c") * ((X - side * 0.40) / 0.42) ** 2
        out[f"dome_{name}"] = dome - Y
    ca, sa = torch.cos(v("heart_a")), torch.sin(v("heart_a"))
    hx, hy = X - v("heart_x"), Y - v("heart_y")
    xr, yr = ca * hx + sa * hy, -sa * hx + ca * hy
    out["heart"] = 1.0 - (xr / v("heart_ax")) ** 2 - (yr / v("heart_ay")) ** 2
    mx = X - v("med_x")
    w_right = v("med_w") + 0.02 * _soft(Y + 0.45, 0.1)  # slightly wider lower (SVC / right atrium border)
    w_left = v("med_w") + v("knob") * torch.exp(-(((Y + 0.40) / 0.07) ** 2))  # aortic knob
    out["med"] = torch.minimum(mx + w_right, w_left - mx)
    return out


def _lung_mask(X: torch.Tensor, Y: torch.Tensor, P: dict[str, torch.Tensor]) -> torch.Tensor:
    """Hard lung-field membership (bool) at anatomical coordinates."""
    s = _lung_parts(X, Y, P)
    right = (s["lung_r"] > 0) & (s["dome_r"] > 0)
    left = (s["lung_l"] > 0) & (s["dome_l"] > 0)
    return (right | left) & (s["heart"] <= 0) & (s["med"] <= 0)


def _sample_in_lung(P: dict[str, torch.Tensor], radius: np.ndarray, rng: np.random.Generator,
                    region: str = "lung", n_cand: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """One point per image inside the lung fields whose disc of ``radius`` (anatomical units) lies inside too.

    ``region`` restricts the candidates: ``"lung"`` (anywhere) or ``"hilum"`` (near the hila). Falls back to the
    candidate with most of its disc inside.
    """
    n = radius.shape[0]
    if region == "hilum":
        side = rng.choice([-1.0, 1.0], (n, n_cand))
        cx = side * rng.uniform(0.14, 0.34, (n, n_cand))
        cy = rng.uniform(-0.25, 0.15, (n, n_cand))
    else:
        cx = rng.uniform(-0.75, 0.75, (n, n_cand))
        cy = rng.uniform(-0.75, 0.65, (n, n_cand))
    ring = np.linspace(0, 2 * math.pi, 8, endpoint=False)
    margin = (radius * 1.15 + 0.02)[:, None, None]
    px = np.concatenate([cx[..., None], cx[..., None] + margin * np.cos(ring)], axis=-1)
    py = np.concatenate([cy[..., None], cy[..., None] + margin * np.sin(ring)], axis=-1)
    inside = _lung_mask(torch.from_numpy(px).reshape(n, n_cand * 9), torch.from_numpy(py).reshape(n, n_cand * 9), P)
    inside = inside.reshape(n, n_cand, 9).numpy()
    score = inside.sum(-1) + 100 * inside[..., 0]  # centre inside first, then as much disc inside as possible
    best = np.argmax(score, axis=1)
    rows = np.arange(n)
    return cx[rows, best], cy[rows, best]


def _finding_params(labels: np.ndarray, P: dict[str, torch.Tensor], rng: np.random.Generator) -> dict:
    """Findings of the positives: type, slots (N, K) of centre, size, density and shape parameters."""
    n, k = labels.shape[0], MAX_FINDINGS
    kind = np.full(n, "none", dtype=object)
    pos = np.flatnonzero(labels == 1)
    kind[pos] = rng.choice(FINDING_TYPES, size=pos.size, p=FINDING_WEIGHTS)
    f = {
        "type": np.zeros((n, k), np.int64),  # 0 none, 1 nodule, 2 mass, 3 consolidation
        "cx": np.zeros((n, k)), "cy": np.zeros((n, k)),
        "r": np.full((n, k), 0.1),  # radius (nodule, mass) or first semi-axis (consolidation)
        "r2": np.full((n, k), 0.1),  # second semi-axis (consolidation)
        "ang": rng.uniform(0, math.pi, (n, k)),
        "density": np.zeros((n, k)),
        "lob": rng.uniform(0.0, 1.0, (n, k, 4)),  # lobulation amplitudes / phases (mass)
        "waves": rng.normal(0.0, 1.0, (n, k, _N_WAVES, 3)),  # consolidation texture: frequency x, y and phase
    }
    lr = lambda lo, hi, size: np.exp(rng.uniform(np.log(lo), np.log(hi), size))  # noqa: E731
    code = {"nodule": 1, "mass": 2, "consolidation": 3}
    f["type"][:, 0] = [code.get(t, 0) for t in kind]
    t0 = f["type"][:, 0]
    f["r"][:, 0] = np.select([t0 == 1, t0 == 2, t0 == 3],
                             [rng.uniform(*NODULE_RADIUS, n), rng.uniform(*MASS_RADIUS, n),
                              rng.uniform(*CONSOLIDATION_AXES, n)], 0.1)
    f["r2"][:, 0] = np.where(t0 == 3, f["r"][:, 0] * rng.uniform(0.65, 1.0, n), f["r"][:, 0])
    f["density"][:, 0] = np.select([t0 == 1, t0 == 2, t0 == 3],
                                   [lr(*NODULE_DENSITY, n), lr(*MASS_DENSITY, n), lr(*CONSOLIDATION_DENSITY, n)],
                                   0.0)
    # a consolidation must lie mostly in the lung, but only its centre region needs to be inside
    fit = np.where(t0 == 3, 0.5 * f["r2"][:, 0], f["r"][:, 0])
    f["cx"][:, 0], f["cy"][:, 0] = _sample_in_lung(P, fit, rng)
    # a second nodule in some nodule cases, well apart from the first
    second = (t0 == 1) & (rng.random(n) < P_SECOND_NODULE)
    r2 = rng.uniform(*NODULE_RADIUS, n)
    cx2, cy2 = _sample_in_lung(P, r2, rng)
    far = np.hypot(cx2 - f["cx"][:, 0], cy2 - f["cy"][:, 0]) > f["r"][:, 0] + r2 + 0.15
    second &= far
    f["type"][second, 1] = 1
    f["r"][second, 1] = r2[second]
    f["r2"][second, 1] = r2[second]
    f["cx"][second, 1], f["cy"][second, 1] = cx2[second], cy2[second]
    f["density"][second, 1] = lr(*NODULE_DENSITY, n)[second]
    f["kind"] = kind
    return f


def _lookalike_params(n: int, P: dict[str, torch.Tensor], rng: np.random.Generator) -> dict:
    """Benign look-alikes in MAX_LOOKALIKES slots, drawn independently of the label.

    Nipple shadows (lower lateral zones, often a symmetric pair), calcified granulomas (tiny and dense), end-on
    vessels (small, near the hila) and bone islands (small, fairly dense, anywhere over the lung fields). Codes are
    the positions in ``_LOOKALIKE_KINDS``.
    """
    m = MAX_LOOKALIKES
    kind = np.zeros((n, m), np.int64)
    cx, cy = np.zeros((n, m)), np.zeros((n, m))
    r, dens, soft = np.full((n, m), 0.02), np.zeros((n, m)), np.zeros((n, m))
    slot = 0
    # nipple shadows: slots 0, 1 (pair in 35 %, single in 15 %)
    u = rng.random(n)
    n_nip = np.where(u < 0.35, 2, np.where(u < 0.50, 1, 0))
    nx = rng.uniform(0.45, 0.60, n)
    ny = rng.uniform(0.22, 0.42, n)
    nr = rng.uniform(0.028, 0.045, n)
    nd = rng.uniform(0.04, 0.13, n)
    first_side = rng.choice([-1.0, 1.0], n)
    for j in range(2):
        on = n_nip > j
        side = first_side * (1 if j == 0 else -1)
        kind[on, slot] = 1
        cx[:, slot] = side * (nx + rng.uniform(-0.03, 0.03, n))
        cy[:, slot] = ny + rng.uniform(-0.03, 0.03, n)
        r[:, slot] = nr * rng.uniform(0.9, 1.1, n)
        dens[:, slot] = nd * rng.uniform(0.85, 1.15, n)
        soft[:, slot] = 0.5
        slot += 1
    # granulomas (0-2), vessels end-on (0-3), bone islands (0-1)
    specs = [(2, 2, (0.010, 0.022), (0.15, 0.40), "lung", 0.0),
             (3, 3, (0.014, 0.026), (0.07, 0.17), "hilum", 1.0),
             (4, 1, (0.012, 0.024), (0.10, 0.25), "lung", 0.2)]
    for code, count, rr, dd, region, sft in specs:
        present = rng.integers(0, count + 1, n)
        for j in range(count):
            on = present > j
            rad = rng.uniform(*rr, n)
            x, y = _sample_in_lung(P, rad, rng, region=region, n_cand=16)
            kind[on, slot] = code
            cx[:, slot], cy[:, slot], r[:, slot] = x, y, rad
            dens[:, slot] = rng.uniform(*dd, n)
            soft[:, slot] = sft
            slot += 1
    assert slot == m
    dens[kind == 0] = 0.0
    return {"kind": kind, "cx": cx, "cy": cy, "r": r, "density": dens, "soft": soft}


def _confounder_flags(labels: np.ndarray, split: str, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Corner-marker presence: label-correlated in train (exact counts), independent (half of each class) elsewhere.

    In train, a share ``(1 + strength) / 2`` of the positives and ``(1 - strength) / 2`` of the negatives carry the
    marker; at strength 0 half of each class does, at strength 1 only (and all) positives do.
    """
    s = strength if split == "train" else 0.0
    flags = np.zeros(labels.shape[0], bool)
    for cls, share in ((1, 0.5 + 0.5 * s), (0, 0.5 - 0.5 * s)):
        idx = np.flatnonzero(labels == cls)
        chosen = rng.permutation(idx)[: int(round(idx.size * share))]
        flags[chosen] = True
    return flags


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _gauss_kernel(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    """(N, 2r+1) normalised Gaussian kernels, one per sigma."""
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable per-image blur of (N, H, W) with (N, L) kernels (reflect padding)."""
    n, h, w = img.shape
    rad = kernel.shape[1] // 2
    x = F.pad(img.unsqueeze(0), (rad, rad, rad, rad), mode="reflect")  # (1, N, H+2r, W+2r)
    x = F.conv2d(x, kernel.view(n, 1, 1, -1), groups=n)
    x = F.conv2d(x, kernel.view(n, 1, -1, 1), groups=n)
    return x.squeeze(0)


def _disc(X, Y, cx, cy, r):
    """Normalised radius of each grid point from a disc centre: (N,H,W) for per-image (N,) cx, cy, r."""
    return torch.sqrt((X - _view(cx, X)) ** 2 + (Y - _view(cy, X)) ** 2) / _view(r, X)


def _render_chunk(P: dict[str, torch.Tensor], Fd: dict[str, torch.Tensor], L: dict[str, torch.Tensor],
                  marker: dict[str, torch.Tensor], size: int, gen: torch.Generator):
    """Render one chunk. Returns images (N,H,W), lung masks, per-finding masks (N,K,H,W), measured contrast (N,K)."""
    n = P["scale"].shape[0]
    h = w = size
    v = lambda k, like: _view(P[k], like)  # noqa: E731
    # pixel centres in normalised image coordinates, then the inverse acquisition transform
    c = (torch.arange(size, dtype=torch.float32) + 0.5) * (2.0 / size) - 1.0
    u = c.view(1, 1, w).expand(n, h, w)
    t = c.view(1, h, 1).expand(n, h, w)
    ca, sa = torch.cos(v("angle", u)), torch.sin(v("angle", u))
    ux, uy = (u - v("tx", u)) / v("scale", u), (t - v("ty", u)) / v("scale", u)
    X, Y = ca * ux + sa * uy, -sa * ux + ca * uy
    aX = X.abs()
    edge = 2.0 / size  # about one pixel, for soft edges

    # --- body: soft-tissue outline with neck and shoulders, thicker at the centre line
    shoulder = ((-0.55 - Y) / 0.35).clamp(0.0, 1.0) ** 2  # shoulders slope from Y = -0.55 up to the neck
    bw = v("body_w", X) - (v("body_w", X) - 0.70) * shoulder - 0.46 * _soft(-(Y + 0.88), 0.025)
    body = _soft(bw - aX, 1.5 * edge)
    thick = torch.sqrt((1.0 - (X / bw) ** 2).clamp_min(0.0))
    D = v("body_k", X) * body * (0.35 + 0.65 * thick)

    # --- lungs: air replaces part of the soft tissue
    s = _lung_parts(X, Y, P)
    lw = 0.6 * edge
    lung_r = _soft(s["lung_r"], 4 * lw) * _soft(s["dome_r"], lw)
    lung_l = _soft(s["lung_l"], 4 * lw) * _soft(s["dome_l"], lw)
    not_med = _soft(-s["heart"], 2 * lw) * _soft(-s["med"], lw)
    lung_soft = torch.clamp(lung_r + lung_l, 0.0, 1.0) * not_med
    lung_hard = (((s["lung_r"] > 0) & (s["dome_r"] > 0)) | ((s["lung_l"] > 0) & (s["dome_l"] > 0))) \
        & (s["heart"] <= 0) & (s["med"] <= 0)
    # denser towards the bases and the periphery (chest wall), darker in the middle zones
    lung_depth = 1.0 - 0.15 * torch.exp(-(((aX - 0.40) / 0.25) ** 2 + ((Y + 0.1) / 0.45) ** 2))
    D = D - v("lung_air", X) * v("body_k", X) * lung_soft * lung_depth * (0.35 + 0.65 * thick)

    # trachea: a darker column above the carina
    trach = _soft(0.035 - (X - v("med_x", X)).abs(), edge) * _soft(-(Y + 0.22), 0.03) * _soft(Y + 0.95, 0.03)
    D = D - 0.12 * trach

    # gastric bubble under the left dome (image right)
    gb = _disc(X, Y, P["bubble_x"], P["dome_l"] + P["bubble_r"] + 0.06, P["bubble_r"])
    D = D - 0.20 * v("bubble", X) * _soft(1.0 - gb, 0.15) * _soft(Y - v("dome_l", X) - 0.04, edge)

    # --- lung markings: vessels fanning out from the hila, and fine parenchymal texture
    for side in (-1.0, 1.0):
        hx, hy = X - side * 0.22, Y + 0.05
        rad = torch.sqrt(hx ** 2 + hy ** 2)
        phi = torch.atan2(hy, hx * side)
        wav = torch.cos(v("vessel_m", X) * phi + v("vessel_w", X) * rad + v("vessel_ph", X))
        D = D + v("vessel_k", X) * lung_soft * torch.exp(-rad / 0.35) * wav.clamp_min(0.0) ** 6
    # (white noise blurred over a fixed anatomical length, rescaled to unit standard deviation at every size)
    tsig = 1.2 * size / 128.0
    tex = _blur(torch.randn(n, h, w, generator=gen), _gauss_kernel(torch.full((n,), tsig), math.ceil(3 * tsig)))
    D = D + v("texture_k", X) * 0.705 * (2.0 * math.sqrt(math.pi) * tsig) * tex * lung_soft

    # --- bones
    bk = v("bone_k", X)
    # spine: bright column with vertebral bodies and end plates
    vert = torch.cos(2 * math.pi * (Y / v("spine_p", X) + v("spine_ph", X)))
    spine = _soft(0.075 - (X - v("med_x", X)).abs(), edge) * _soft(Y + 0.95, 0.03)
    D = D + bk * spine * (0.20 + 0.05 * vert + 0.05 * (vert > 0.85).float())
    # hila: the pulmonary arteries, soft densities beside the mediastinum
    for side, dy in ((-1.0, 0.0), (1.0, -0.04)):
        hil = ((X - v("med_x", X) - side * (v("med_w", X) + 0.07)) / 0.07) ** 2 + ((Y + 0.08 + dy) / 0.13) ** 2
        D = D + 0.10 * torch.exp(-hil) * lung_soft
    # posterior ribs: arcs that rise from the spine and curve down at the chest wall
    cpost = Y + v("rib_a", X) * aX - v("rib_b", X) * X ** 2
    ph = cpost / v("rib_p", X) + v("rib_ph", X)
    cosr = torch.cos(2 * math.pi * ph)
    band = _soft(cosr - 0.05, 0.12)
    cortex = _soft(cosr - 0.05, 0.06) - _soft(cosr - 0.45, 0.06)
    rib_lat = v("lung_cx", X) + 1.12 * v("lung_ax", X) + 0.04  # ribs end just outside the lung fields
    rib_zone = _soft(aX - 0.07, edge) * _soft(rib_lat - aX, 0.03) \
        * _soft(Y + 0.82, 0.02) * _soft(0.78 - Y, 0.05)
    below = _soft(torch.maximum(v("dome_r", X), v("dome_l", X)) + 0.12 - Y, 0.05)
    D = D + bk * rib_zone * (0.2 + 0.8 * below) * (0.06 * band + 0.04 * cortex)
    # anterior ribs: fainter, descending towards the midline; cartilage invisible medially
    cant = Y + 0.45 * aX
    cosa = torch.cos(2 * math.pi * (cant / (1.1 * v("rib_p", X)) + v("arib_ph", X)))
    ant_zone = _soft(aX - 0.28, 0.04) * _soft(rib_lat - aX, 0.03) \
        * _soft(Y + 0.6, 0.03) * _soft(0.35 - Y, 0.05)
    D = D + bk * 0.04 * ant_zone * _soft(cosa - 0.3, 0.1)
    # clavicles: slightly S-shaped bars from the sternal notch out and up to the shoulder
    tcl = (aX - 0.08) / 0.64
    ycl = v("clav_y", X) - 0.16 * tcl + 0.03 * torch.sin(2 * math.pi * tcl)
    clav = _soft(0.032 - (Y - ycl).abs(), edge) * _soft(tcl, 0.02) * _soft(1.0 - tcl, 0.03)
    D = D + bk * 0.28 * clav * (1.0 + 0.5 * _soft((Y - ycl).abs() - 0.02, edge))

    # --- benign look-alikes (computed only on the images whose slot is used)
    for j in range(L["kind"].shape[1]):
        sel = torch.nonzero(L["kind"][:, j] > 0).squeeze(1)
        if sel.numel() == 0:
            continue
        Xs, Ys = X[sel], Y[sel]
        d2 = ((Xs - _view(L["cx"][sel, j], Xs)) ** 2 + (Ys - _view(L["cy"][sel, j], Xs)) ** 2) \
            / _view(L["r"][sel, j] ** 2, Xs)
        soft = _view(L["soft"][sel, j], Xs)
        # a sharp-edged sphere (soft = 0) blended with a Gaussian bump that fades out by 1.6 radii (soft = 1)
        prof = (1 - soft) * torch.sqrt((1.0 - d2).clamp_min(0.0)) + soft * torch.exp(-1.5 * d2) * (d2 < 2.56)
        D.index_add_(0, sel, _view(L["density"][sel, j], Xs) * prof)

    # --- findings: each slot's density and its exact mask (the support of that density)
    k = Fd["type"].shape[1]
    fmask = torch.zeros(n, k, h, w, dtype=torch.bool)
    fdens = torch.zeros(n, h, w)
    for j in range(k):
        for code in (1, 2, 3):
            sel = torch.nonzero(Fd["type"][:, j] == code).squeeze(1)
            if sel.numel() == 0:
                continue
            Xs = X[sel]
            pv = lambda key: _view(Fd[key][sel, j], Xs)  # noqa: E731
            dx, dy = Xs - pv("cx"), Y[sel] - pv("cy")
            if code == 1:  # nodule: a well-defined sphere
                g = torch.sqrt((1.0 - (dx ** 2 + dy ** 2) / pv("r") ** 2).clamp_min(0.0))
            elif code == 2:  # mass: a lobulated outline (3- and 5-fold harmonics of the radius), flatter top
                lob = Fd["lob"][sel, j]
                lv = lambda i: _view(lob[:, i], Xs)  # noqa: E731
                theta = torch.atan2(dy, dx)
                rlob = pv("r") * (1.0 + 0.16 * lv(0) * torch.cos(3 * theta + 6.3 * lv(1))
                                  + 0.10 * lv(2) * torch.cos(5 * theta + 6.3 * lv(3)))
                g = (1.0 - (dx ** 2 + dy ** 2) / rlob ** 2).clamp_min(0.0) ** 0.3
            else:  # consolidation: patchy texture within an ellipse, cut by the lung boundary
                ang = pv("ang")
                ca, sa = torch.cos(ang), torch.sin(ang)
                xr, yr = ca * dx + sa * dy, -sa * dx + ca * dy
                q = torch.sqrt((xr / pv("r")) ** 2 + (yr / pv("r2")) ** 2)
                wv = Fd["waves"][sel, j]  # (S, W, 3): frequency x, frequency y, phase
                patch = torch.zeros_like(dx)
                for m in range(wv.shape[1]):
                    fx, fy = _view(_WAVE_K * wv[:, m, 0], Xs), _view(_WAVE_K * wv[:, m, 1], Xs)
                    ph = _view(3.0 * wv[:, m, 2], Xs)
                    patch = patch + torch.cos(fx * dx + fy * dy + ph)
                tex = 0.5 + 0.5 * torch.tanh(1.5 * patch / math.sqrt(wv.shape[1] / 2.0))  # in (0, 1)
                # > 0 wherever q < 0.4 (so never empty), patchy, fading out towards the ellipse's edge
                g = ((1.0 - q).clamp_min(0.0) * (0.35 + 0.65 * tex) - 0.2).clamp_min(0.0) / 0.8
                g = g * lung_hard[sel]
            fmask[sel, j] = g > 0
            fdens.index_add_(0, sel, pv("density") * g)

    # --- intensity: exponential attenuation, window, gamma; the same mapping with and without findings
    def to_intensity(dens):
        i = 1.0 - torch.exp(-v("exposure", dens) * dens.clamp_min(0.0))
        i = ((i - v("win_lo", dens)) / (v("win_hi", dens) - v("win_lo", dens))).clamp(0.0, 1.0)
        return i ** v("gamma", dens)

    base = to_intensity(D)
    img = to_intensity(D + fdens)
    diff = (img - base).unsqueeze(1)
    area = fmask.sum(dim=(2, 3)).clamp_min(1)
    contrast = (diff * fmask).sum(dim=(2, 3)) / area

    # --- confounder: a bright "L" marker near a top corner, on the detector (not transformed with the patient)
    # pixel centres against the marker's half-open box, the rule of medlit.data.sample.boxes_to_mask (the marker's
    # corners are whole pixels, so this is x0 <= column < x0 + width)
    pc = torch.arange(size, dtype=torch.float32).view(1, 1, w) + 0.5
    pr = torch.arange(size, dtype=torch.float32).view(1, h, 1) + 0.5
    x0, y0 = _view(marker["x0"], X), _view(marker["y0"], X)
    mw, mh, st = _view(marker["w"], X), _view(marker["h"], X), _view(marker["stroke"], X)
    stem = (pc >= x0) & (pc < x0 + st) & (pr >= y0) & (pr < y0 + mh)
    foot = (pc >= x0) & (pc < x0 + mw) & (pr >= y0 + mh - st) & (pr < y0 + mh)
    mark = (stem | foot) & _view(marker["on"], X).bool()
    img = torch.where(mark, torch.maximum(img, torch.full_like(img, 0.96)), img)

    # --- acquisition blur and noise (signal dependent plus electronic floor)
    sig = P["blur"].float() * (size / 128.0)
    img = _blur(img, _gauss_kernel(sig, max(1, int(math.ceil(3 * 0.9 * size / 128.0)))))
    # per-pixel noise grows with the pixel count (``noise`` is the level at 128 px): a 2x2 average of a 256 px
    # image has the noise of the 128 px image of the same patient
    noise_sd = v("noise", img) * (size / 128.0) * (0.5 + 0.7 * img.clamp_min(0.0).sqrt())
    img = img + noise_sd * torch.randn(n, h, w, generator=gen)
    img = img.clamp(0.0, 1.0)
    return img, lung_hard, fmask, contrast




def make_cxr_phantom(n: int, *, size: int = 128, seed: int = 0, split: str = "train",
                     prevalence: float = 0.5, confounder_strength: float = 0.0,
                     progress: bool = False, force_marker: bool | None = None) -> SampleSet:
    """Generate ``n`` procedural PA chest radiographs with exactly known findings.

    Parameters
    ----------
    n : number of images
    size : image side in pixels (square); the anatomy is resolution independent, so one seed gives the same
        patients at every size (pixel noise and texture differ)
    seed, split : the images are a deterministic function of ``(seed, split)`` (a stable hash), so every split of a
        seed holds different patients and the same arguments give bit-identical output
    prevalence : share of positives; exactly ``round(n * prevalence)`` images have a finding, in shuffled order
    confounder_strength : in [0, 1]; in the train split a share ``(1 + s) / 2`` of the positives and ``(1 - s) / 2``
        of the negatives carry a bright "L" marker near a top corner (s = 0: half of each class, independent of
        the label; s = 1: exactly the positives). In every other split half of each class carries it.
    progress : show a tqdm bar over the internal chunks
    force_marker : ``True`` puts the marker on every image, ``False`` on none; ``None`` (default) follows
        ``confounder_strength``. The marker is drawn from a random stream of its own, so the same arguments with
        another ``force_marker`` or ``confounder_strength`` give the same patients, findings and noise, and the
        images differ only around the marker: counterfactual pairs for the confounder analysis.

    Returns
    -------
    SampleSet
        ``images`` (N, 1, size, size) float32 in [0, 1]; ``labels`` (N,) int64; ``boxes`` (N, 2, 4) tight
        half-open boxes of each finding's mask (NaN rows where absent); ``finding_masks`` the union of the exact
        finding masks; ``anatomy_masks`` the lung fields. ``meta`` holds ``sample_id``, ``finding``,
        ``n_findings``, ``contrast`` (mean intensity the primary finding adds over its mask, before blur and
        noise; 0 for negatives), ``cnr`` (contrast / per-pixel noise scale), ``finding_area`` (pixels), ``confounder``,
        ``marker_box`` (the marker's half-open box, NaN when absent), ``n_lookalikes`` and ``lookalikes`` (e.g.
        ``"nipple+nipple+vessel"``), and the acquisition parameters ``scale``, ``angle_deg``, ``gamma``, ``blur``
        (pixels), ``noise``.
    """
    if n < 0:
        raise ValueError("make_cxr_phantom: n must be >= 0")
    if size < 48:  # below this the smallest nodule may fall between pixel centres
        raise ValueError("make_cxr_phantom: size must be at least 48 pixels")
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError("make_cxr_phantom: prevalence must lie in [0, 1]")
    if not 0.0 <= confounder_strength <= 1.0:
        raise ValueError("make_cxr_phantom: confounder_strength must lie in [0, 1]")
    root = split_seed(seed, split)
    rng = np.random.default_rng(root)

    n_pos = int(round(n * prevalence))
    labels = np.zeros(n, np.int64)
    labels[:n_pos] = 1
    labels = rng.permutation(labels)
    # the marker flags use a generator of their own, so that they never shift the patients' random stream
    confounder = _confounder_flags(labels, split, confounder_strength, np.random.default_rng([root, 1]))
    if force_marker is not None:
        confounder[:] = bool(force_marker)

    P_np = _patient_params(n, rng)
    P = {k: torch.from_numpy(v) for k, v in P_np.items()}  # float64 for placement; cast per chunk for rendering
    Fd_np = _finding_params(labels, P, rng)
    L_np = _lookalike_params(n, P, rng)
    # marker geometry in pixels (top-left or top-right corner)
    mh = np.maximum(3.0, np.round(size * rng.uniform(0.085, 0.11, n)))
    mw = np.maximum(2.0, np.round(mh * rng.uniform(0.6, 0.75, n)))
    st = np.maximum(1.0, np.round(size * rng.uniform(0.022, 0.03, n)))
    right = rng.random(n) < 0.5
    off_x = np.round(size * rng.uniform(0.04, 0.09, n))
    mx0 = np.where(right, size - off_x - mw, off_x)
    my0 = np.round(size * rng.uniform(0.04, 0.09, n))
    marker_np = {"x0": mx0, "y0": my0, "w": mw, "h": mh, "stroke": st, "on": confounder.astype(np.float64)}

    chunk = max(8, _PIXELS_PER_CHUNK // (size * size))
    images = torch.empty(n, 1, size, size)
    lungs = torch.empty(n, size, size, dtype=torch.bool)
    finding_masks = torch.empty(n, size, size, dtype=torch.bool)
    boxes = torch.empty(n, MAX_FINDINGS, 4)
    contrast = torch.zeros(n, MAX_FINDINGS)
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{NAME} {split}", unit="chunk")
    for i0 in starts:
        sl = slice(i0, min(n, i0 + chunk))
        gen = seeding.chunk_generator(root, i0 // chunk)
        Pc = {k: torch.from_numpy(v[sl]).float() for k, v in P_np.items()}
        Fc = {k: (torch.from_numpy(np.asarray(v[sl])).float() if k != "type" else torch.from_numpy(v[sl]))
              for k, v in Fd_np.items() if k != "kind"}
        Lc = {k: torch.from_numpy(v[sl]).float() if k != "kind" else torch.from_numpy(v[sl]) for k, v in L_np.items()}
        Mc = {k: torch.from_numpy(v[sl]).float() for k, v in marker_np.items()}
        img, lung, fm, con = _render_chunk(Pc, Fc, Lc, Mc, size, gen)
        images[sl, 0], lungs[sl], contrast[sl] = img, lung, con
        boxes[sl], finding_masks[sl] = masks_to_boxes(fm), fm.any(dim=1)

    n_found = (~torch.isnan(boxes[..., 0])).sum(dim=1).numpy()
    kind = Fd_np["kind"]
    if np.any((labels == 1) & (n_found == 0)):  # cannot happen with the placement margins; guard all the same
        raise RuntimeError("make_cxr_phantom: a positive sample rendered with an empty finding mask")
    noise_level = P_np["noise"] * (size / 128.0)  # the per-pixel noise scale at this size
    con0 = contrast[:, 0].numpy().astype(np.float64) * (labels == 1)
    marker_box = np.stack([mx0, my0, mx0 + mw, my0 + mh], axis=1).astype(np.float32)
    marker_box[~confounder] = np.nan
    meta = {
        "sample_id": np.array([f"{NAME}-{split}-{i:05d}" for i in range(n)]),
        "finding": kind.astype(str),
        "n_findings": n_found.astype(np.int64),
        "contrast": con0,
        "cnr": con0 / noise_level,
        "finding_area": finding_masks.sum(dim=(1, 2)).numpy().astype(np.int64),
        "confounder": confounder,
        "marker_box": marker_box,
        "n_lookalikes": (L_np["kind"] > 0).sum(axis=1).astype(np.int64),
        "lookalikes": np.array(["+".join(_LOOKALIKE_KINDS[c] for c in sorted(row) if c) or "none"
                                for row in L_np["kind"]]),
        "scale": P_np["scale"],
        "angle_deg": np.rad2deg(P_np["angle"]),
        "gamma": P_np["gamma"],
        "blur": P_np["blur"] * (size / 128.0),
        "noise": noise_level,
    }
    attrs = {
        "original_size": ORIGINAL_SIZE,
        "seed": seed,
        "generator": GENERATOR_VERSION,
        "class_names": list(CLASS_NAMES),
        "size": size,
        "prevalence": prevalence,
        "confounder_strength": confounder_strength,
        "split_seed": root,
        "finding_types": list(FINDING_TYPES),
    }
    return SampleSet(name=NAME, split=split, images=images, labels=torch.from_numpy(labels), boxes=boxes,
                     finding_masks=finding_masks, anatomy_masks=lungs, meta=meta, attrs=attrs)
