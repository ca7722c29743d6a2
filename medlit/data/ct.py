"""Head-CT lesion data built on pydicom's two real head CT slices, with inserted lesions whose pixels are known.

pydicom ships three CT slices it can decode offline (``pydicom.data.get_testdata_file``). Two are axial head slices
and serve as the *base slices*:

* ``J2K_pixelrep_mismatch.dcm`` — 512², 0.431 mm pixels, at the skull base / posterior fossa (frontal lobes between
  the orbital roofs, temporal lobes, cerebellum and brainstem), stored losslessly;
* ``693_J2KI.dcm`` — 512², 0.479 mm pixels, above the ventricles, stored as *lossy* JPEG 2000 (its Lossy Image
  Compression Ratio tag says about 339:1), so its parenchyma is nearly flat and its cortex smeared by codec
  artefacts.

The third, ``CT_small.dcm`` (128², a crop through the back and spine), is left out: it holds no brain, so brain
lesions cannot be placed in it, and a third "anatomy" that differs in everything but label would only add a
body-part shortcut.

Per image the pipeline is

1. pick a base slice and an acquisition transform (rotation ±15°, scale 0.85–1.15, shift ±8 mm, left-right flip);
   warp the slice's Hounsfield units and its brain mask onto the output grid with one ``affine_grid`` /
   ``grid_sample`` call per base slice and internal chunk (the slices are resampled beforehand, with anti-aliasing,
   to about the output pixel size);
2. add up to two lesions, in HU, at positions drawn inside the brain (with a margin) in the slice's own millimetre
   coordinates, so a lesion moves with the anatomy: haemorrhage (hyperdense), infarct (hypodense, larger, softer
   edge) or metastasis (hyperdense ring around a hypodense centre);
3. a mild Gaussian blur and white Gaussian noise in HU (σ 2–8 HU);
4. a brain window (centre 40 ± 10 HU, width 80–120 HU) to [0, 1] — after the lesions, so their contrast is physical.

Everything random comes from one ``numpy`` generator (per-image parameters, lesion placement) and one ``torch``
generator per internal chunk (pixel noise), seeded from a sha256 hash of ``("medlit.ct-lesions", seed, split)``:
the same arguments give bit-identical output and the splits of one seed are different draws. Per-image parameters
and lesion geometry (in mm) do not depend on the image size.

The data card ``data_cards/ct_lesions.md`` describes provenance, the lesion model and the limits of two base slices.
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from medlit.data import seeding
from medlit.data.sample import SampleSet, masks_to_boxes

__all__ = ["make_ct_lesions", "split_seed", "load_base_slices", "BASE_SLICES", "FINDING_TYPES", "GENERATOR_VERSION",
           "ORIGINAL_SIZE", "FIELD_OF_VIEW_MM"]

GENERATOR_VERSION = "medlit.data.ct v1"
ORIGINAL_SIZE = 512  # native matrix of both base slices
NAME = "ct-lesions"
CLASS_NAMES = ["no finding", "finding"]
BASE_SLICES = ("J2K_pixelrep_mismatch.dcm", "693_J2KI.dcm")
FINDING_TYPES = ("haemorrhage", "infarct", "metastasis")
FINDING_WEIGHTS = (0.40, 0.35, 0.25)  # share of each lesion type (first and second lesion alike)
P_SECOND_LESION = 0.20  # chance that a positive carries a second, separate lesion
MAX_FINDINGS = 2  # K, the number of box rows per sample
MIN_SIZE = 64  # below this the smallest lesion may fall between pixel centres
FIELD_OF_VIEW_MM = 210.0  # the output spans this many mm at scale 1 (the heads are 170-200 mm long, the brains < 160)
_PIXELS_PER_CHUNK = 1 << 20  # images per internal chunk = this / (size * size)
HU_RANGE = (-1024.0, 3071.0)  # the codec ringing of 693_J2KI.dcm reaches -3995 HU; clipped to this on loading

# Acquisition (per image).
ANGLE_DEG = (-15.0, 15.0)
SCALE = (0.85, 1.15)
SHIFT_MM = 8.0
WINDOW_CENTER = (30.0, 50.0)
WINDOW_WIDTH = (80.0, 120.0)
NOISE_HU = (2.0, 8.0)  # white Gaussian noise per output pixel, in HU
BLUR_MM = (0.5, 1.2)  # Gaussian sigma of the final blur, in mm

# Lesions: semi-axes (mm), contrast over the local tissue (HU), soft-edge width (fraction of the radius), border
# irregularity (total amplitude of the 2nd-5th angular harmonics of the radius). See the data card.
HAEMORRHAGE_AXIS_MM = (4.0, 12.0)  # major semi-axis; minor = major * (0.7-1.0), at least 3.5 mm
HAEMORRHAGE_HU = (30.0, 60.0)
INFARCT_AXIS_MM = (8.0, 20.0)  # major semi-axis; minor = major / (1.3-2.0), at least 5 mm
INFARCT_HU = (-20.0, -8.0)
METASTASIS_AXIS_MM = (4.5, 9.0)  # outer radius; minor = major * (0.85-1.0)
METASTASIS_RING_HU = (20.0, 40.0)
METASTASIS_CORE_HU = (-15.0, -5.0)
MIN_MINOR_MM = {"haemorrhage": 3.5, "infarct": 5.0, "metastasis": 4.0}
EDGE = {"haemorrhage": 0.15, "infarct": 0.45, "metastasis": 0.12}
PLACEMENT_MARGIN_MM = 5.0  # clearance between a lesion's outermost point and the edge of the brain mask

_CACHE: dict = {}  # file name -> base slice (HU, brain mask, spacing, ...), loaded once per process
_RESAMPLED: dict = {}  # (file name, resolution) -> (2, R, R) tensor: HU + 1024 and brain-mask fraction


def split_seed(seed: int, split: str) -> int:
    """A stable 63-bit seed for ``(seed, split)`` (sha256, not Python's salted ``hash``; see
    :func:`medlit.data.seeding.split_seed`)."""
    return seeding.split_seed("medlit.ct-lesions", seed, split)


# ----------------------------------------------------------------------------------------------------------------
# Base slices
# ----------------------------------------------------------------------------------------------------------------


def _brain_mask(hu: np.ndarray, spacing: float) -> np.ndarray:
    """The intracranial soft tissue of one axial slice: 0-80 HU inside the closed skull, cleaned up.

    Bone (> 200 HU, closed across thin gaps) outlines the cranial cavity; its filled interior minus the bone, kept
    where the tissue is 0-80 HU, is opened by 2 mm (cuts thin bridges through foramina and partial-volume rims),
    and every component of at least 10 % of the largest is kept (the skull base splits the brain into frontal,
    temporal and posterior-fossa parts). Holes are filled and the result eroded by 1.5 mm.
    """
    from scipy import ndimage as ndi

    bone = ndi.binary_closing(hu > 200.0, iterations=3)
    cavity = ndi.binary_fill_holes(bone) & ~bone
    soft = cavity & (hu >= 0.0) & (hu <= 80.0)
    soft = ndi.binary_opening(soft, structure=np.ones((3, 3), bool), iterations=max(1, round(2.0 / spacing)))
    lab, k = ndi.label(soft)
    if k == 0:
        raise RuntimeError("ct: no intracranial soft tissue found in a base slice")
    sizes = np.asarray(ndi.sum(soft, lab, range(1, k + 1)))
    keep = np.flatnonzero(sizes >= 0.1 * sizes.max()) + 1
    brain = ndi.binary_fill_holes(np.isin(lab, keep))
    return ndi.binary_erosion(brain, iterations=max(1, round(1.5 / spacing)))


def _head_centre(hu: np.ndarray) -> tuple[float, float]:
    """(row, col) centroid of the head (largest component above -300 HU, holes filled), in native pixels."""
    from scipy import ndimage as ndi

    head = ndi.binary_opening(hu > -300.0, iterations=3)  # drops the thin head holder
    lab, k = ndi.label(head)
    sizes = np.asarray(ndi.sum(head, lab, range(1, k + 1)))
    head = ndi.binary_fill_holes(lab == int(np.argmax(sizes)) + 1)
    r, c = ndi.center_of_mass(head)
    return float(r), float(c)


def load_base_slices() -> dict:
    """The base slices, decoded once per process: ``{file name: dict}``.

    Each entry holds ``hu`` (512, 512) float32 Hounsfield units clipped to ``HU_RANGE``, ``brain`` (512, 512) bool,
    ``spacing`` (mm per pixel, from the Pixel Spacing tag; both slices are isotropic), ``centre`` (row, col of the
    head centroid), ``parenchyma_hu`` (median HU inside the brain mask), and ``cand_mm`` / ``cand_dist`` (brain
    pixel positions in mm relative to the head centre, sorted by decreasing distance to the mask edge, in mm).
    """
    if _CACHE:
        return _CACHE
    import pydicom.data
    from scipy import ndimage as ndi

    from medlit.data.dicom import read_dicom

    out = {}
    for name in BASE_SLICES:
        image = read_dicom(pydicom.data.get_testdata_file(name))
        hu = np.clip(image.modality_values, *HU_RANGE).astype(np.float32)
        spacing = image.meta["pixel_spacing"]
        if not spacing or abs(spacing[0] - spacing[1]) > 1e-6:
            raise RuntimeError(f"ct: {name} has no isotropic Pixel Spacing ({spacing})")
        sp = float(spacing[0])
        brain = _brain_mask(hu, sp)
        centre = _head_centre(hu)
        dist = ndi.distance_transform_edt(brain) * sp  # mm to the nearest non-brain pixel
        rows, cols = np.nonzero(brain)
        order = np.lexsort((cols, rows, -dist[rows, cols]))  # decreasing distance, ties in raster order
        rows, cols = rows[order], cols[order]
        out[name] = {
            "hu": hu,
            "brain": brain,
            "spacing": sp,
            "centre": centre,
            "parenchyma_hu": float(np.median(hu[brain])),
            "cand_mm": np.stack([(cols - centre[1]) * sp, (rows - centre[0]) * sp], axis=1),  # (x, y) mm
            "cand_dist": dist[rows, cols],
        }
    _CACHE.update(out)
    return _CACHE


def _resampled(name: str, res: int) -> torch.Tensor:
    """(2, res, res): the base slice's HU + 1024 and its brain mask as a fraction, anti-aliased to ``res`` pixels."""
    key = (name, res)
    if key not in _RESAMPLED:
        base = load_base_slices()[name]
        stack = torch.stack([torch.from_numpy(base["hu"]) - HU_RANGE[0],
                             torch.from_numpy(base["brain"].astype(np.float32))])[None]
        if res != stack.shape[-1]:
            stack = F.interpolate(stack, size=(res, res), mode="bilinear", align_corners=False, antialias=True)
        _RESAMPLED[key] = stack[0].contiguous()
    return _RESAMPLED[key]


# ----------------------------------------------------------------------------------------------------------------
# Per-image parameters
# ----------------------------------------------------------------------------------------------------------------


def _acquisition_params(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    u = lambda lo, hi: rng.uniform(lo, hi, n)  # noqa: E731
    return {
        "base": rng.integers(0, len(BASE_SLICES), n),
        "angle": np.deg2rad(u(*ANGLE_DEG)),
        "scale": u(*SCALE),
        "tx": u(-SHIFT_MM, SHIFT_MM),
        "ty": u(-SHIFT_MM, SHIFT_MM),
        "flip": rng.random(n) < 0.5,
        "wc": u(*WINDOW_CENTER),
        "ww": u(*WINDOW_WIDTH),
        "noise": u(*NOISE_HU),
        "blur": u(*BLUR_MM),
    }


def _lesion_params(labels: np.ndarray, base: np.ndarray, rng: np.random.Generator) -> dict:
    """Lesion slots (N, K): type code (0 none, 1 haemorrhage, 2 infarct, 3 metastasis), centre (mm, in the base
    slice's head-centred frame), semi-axes, orientation, border harmonics, contrasts."""
    n, k = labels.shape[0], MAX_FINDINGS
    slices = load_base_slices()
    f = {
        "type": np.zeros((n, k), np.int64),
        "cx": np.zeros((n, k)), "cy": np.zeros((n, k)),
        "a": np.ones((n, k)), "b": np.ones((n, k)),
        "ang": rng.uniform(0.0, math.pi, (n, k)),
        "harm": np.zeros((n, k, 5, 2)),  # cos/sin amplitudes of harmonics 1..5 of the radius
        "hu": np.zeros((n, k)),  # contrast (haemorrhage, infarct) or ring contrast (metastasis)
        "core": np.zeros((n, k)),  # metastasis: contrast of the necrotic centre
        "ring": np.full((n, k), 0.3),  # metastasis: ring thickness as a fraction of the radius
    }
    pos = labels == 1
    second = pos & (rng.random(n) < P_SECOND_LESION)
    types = rng.choice(len(FINDING_TYPES), size=(n, k), p=FINDING_WEIGHTS) + 1
    major = np.select([types == 1, types == 2, types == 3],
                      [rng.uniform(*HAEMORRHAGE_AXIS_MM, (n, k)), rng.uniform(*INFARCT_AXIS_MM, (n, k)),
                       rng.uniform(*METASTASIS_AXIS_MM, (n, k))])
    ratio = np.select([types == 1, types == 2, types == 3],
                      [rng.uniform(0.7, 1.0, (n, k)), 1.0 / rng.uniform(1.3, 2.0, (n, k)),
                       rng.uniform(0.85, 1.0, (n, k))])
    min_minor = np.select([types == 1, types == 2, types == 3], [MIN_MINOR_MM[t] for t in FINDING_TYPES])
    contrast = np.select([types == 1, types == 2, types == 3],
                         [rng.uniform(*HAEMORRHAGE_HU, (n, k)), rng.uniform(*INFARCT_HU, (n, k)),
                          rng.uniform(*METASTASIS_RING_HU, (n, k))])
    core = rng.uniform(*METASTASIS_CORE_HU, (n, k))
    ring = rng.uniform(0.25, 0.45, (n, k))
    # border: irregular (haemorrhage: harmonics 2-5, total <= 0.10), tapered (infarct: 1st harmonic 0.10-0.25 for a
    # wedge-like egg shape, plus mild 2-3), nearly round (metastasis: harmonics 2-3, total <= 0.05)
    amp = rng.uniform(0.0, 1.0, (n, k, 5))
    phase = rng.uniform(0.0, 2 * math.pi, (n, k, 5))
    budget = {1: np.array([0.0, 0.035, 0.03, 0.02, 0.015]),
              2: np.array([0.0, 0.04, 0.03, 0.0, 0.0]),
              3: np.array([0.0, 0.03, 0.02, 0.0, 0.0])}
    cand = rng.random((n, k, 64))  # placement: uniform picks among admissible brain pixels
    for i in np.flatnonzero(pos):
        sl = slices[BASE_SLICES[base[i]]]
        placed = []
        for j in range(k if second[i] else 1):
            t = int(types[i, j])
            amps = amp[i, j] * budget[t]
            if t == 2:
                amps[0] = 0.10 + 0.15 * amp[i, j, 0]
            a = major[i, j]
            b = max(min_minor[i, j], a * ratio[i, j])
            reach = 1.0 + amps.sum()  # the radius never exceeds reach * a
            clearance = a * reach + PLACEMENT_MARGIN_MM
            dist = sl["cand_dist"]
            count = int(np.searchsorted(-dist, -clearance, side="right"))  # pixels with dist >= clearance
            if count == 0:  # lesion too large for this brain: shrink it to fit at the deepest point
                shrink = max(0.3, (dist[0] - PLACEMENT_MARGIN_MM) / (a * reach))
                a, b = a * shrink, max(min_minor[i, j], b * shrink)
                count = 1
            ok = False
            for u in cand[i, j]:
                x, y = sl["cand_mm"][min(int(u * count), count - 1)]
                if all(math.hypot(x - px, y - py) > pr + a * reach + 4.0 for px, py, pr in placed):
                    ok = True
                    break
            if not ok:  # a second lesion that finds no room apart from the first is dropped
                continue
            placed.append((x, y, a * reach))
            f["type"][i, j] = t
            f["cx"][i, j], f["cy"][i, j] = x, y
            f["a"][i, j], f["b"][i, j] = a, b
            f["harm"][i, j, :, 0] = amps * np.cos(phase[i, j])
            f["harm"][i, j, :, 1] = amps * np.sin(phase[i, j])
            f["hu"][i, j] = contrast[i, j]
            f["core"][i, j] = core[i, j] if t == 3 else 0.0
            f["ring"][i, j] = ring[i, j]
    return f


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------


def _thetas(P: dict[str, np.ndarray], slices: dict) -> tuple[np.ndarray, np.ndarray]:
    """(N, 2, 3) affine maps from output normalised coordinates to (a) the base slice's normalised coordinates
    (for ``grid_sample``) and (b) head-centred anatomical millimetres (for the lesions)."""
    n = P["angle"].shape[0]
    half = FIELD_OF_VIEW_MM / 2.0
    ca, sa, s = np.cos(P["angle"]), np.sin(P["angle"]), P["scale"]
    fl = np.where(P["flip"], -1.0, 1.0)
    anat = np.zeros((n, 2, 3))
    # X = flip * R(-angle) (x_mm - t) / scale, with x_mm = half * x_out
    anat[:, 0, 0], anat[:, 0, 1] = fl * ca * half / s, fl * sa * half / s
    anat[:, 0, 2] = -fl * (ca * P["tx"] + sa * P["ty"]) / s
    anat[:, 1, 0], anat[:, 1, 1] = -sa * half / s, ca * half / s
    anat[:, 1, 2] = -(-sa * P["tx"] + ca * P["ty"]) / s
    sp = np.array([slices[BASE_SLICES[b]]["spacing"] for b in P["base"]])
    cr = np.array([slices[BASE_SLICES[b]]["centre"] for b in P["base"]])  # (N, 2) row, col
    size0 = float(ORIGINAL_SIZE)
    # native column = centre_col + X / sp; normalised (align_corners=False) = (2 col + 1) / 512 - 1
    img = np.empty_like(anat)
    img[:, 0] = anat[:, 0] * (2.0 / (size0 * sp))[:, None]
    img[:, 0, 2] += (2.0 * cr[:, 1] + 1.0) / size0 - 1.0
    img[:, 1] = anat[:, 1] * (2.0 / (size0 * sp))[:, None]
    img[:, 1, 2] += (2.0 * cr[:, 0] + 1.0) / size0 - 1.0
    return img, anat


def _gauss_kernels(sigma: torch.Tensor, radius: int) -> torch.Tensor:
    x = torch.arange(-radius, radius + 1, dtype=torch.float32)
    k = torch.exp(-0.5 * (x[None, :] / sigma[:, None].clamp_min(1e-3)) ** 2)
    return k / k.sum(dim=1, keepdim=True)


def _blur(img: torch.Tensor, kernel: torch.Tensor) -> torch.Tensor:
    """Separable per-image blur of (N, H, W) with (N, L) kernels (replicate padding)."""
    n = img.shape[0]
    rad = kernel.shape[1] // 2
    x = F.pad(img.unsqueeze(0), (rad, rad, rad, rad), mode="replicate")
    x = F.conv2d(x, kernel.view(n, 1, 1, -1), groups=n)
    x = F.conv2d(x, kernel.view(n, 1, -1, 1), groups=n)
    return x.squeeze(0)


def _lesion_field(X: torch.Tensor, Y: torch.Tensor, L: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """HU added by one lesion slot and its exact mask, at anatomical coordinates X, Y (n, H, W) in mm.

    The lesion is ``rho < 1`` with ``rho = r / R(theta)``: r the elliptical radius (semi-axes a, b, rotated by
    ``ang``) and R(theta) = 1 + sum_k (c_k cos k theta + s_k sin k theta) the irregular border. The HU profile is
    ``contrast * clip((1 - rho) / edge, 0, 1)`` (zero exactly outside the mask); a metastasis has a ring of
    relative thickness ``ring`` and a hypodense core.
    """
    v = lambda key: L[key].view(-1, 1, 1)  # noqa: E731
    dx, dy = X - v("cx"), Y - v("cy")
    ca, sa = torch.cos(v("ang")), torch.sin(v("ang"))
    u, w = (ca * dx + sa * dy) / v("a"), (-sa * dx + ca * dy) / v("b")
    r = torch.sqrt(u * u + w * w)
    c1, s1 = u / r.clamp_min(1e-6), w / r.clamp_min(1e-6)
    border = torch.ones_like(r)
    ck, sk = c1, s1
    for h in range(5):
        border = border + L["harm"][:, h, 0].view(-1, 1, 1) * ck + L["harm"][:, h, 1].view(-1, 1, 1) * sk
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1  # cos/sin of (h + 2) theta
    rho = r / border
    mask = rho < 1.0
    outer = ((1.0 - rho) / v("edge")).clamp(0.0, 1.0)
    inner = ((rho - (1.0 - v("ring"))) / v("edge") + 1.0).clamp(0.0, 1.0)  # 1 in the ring, 0 in a met's core
    is_met = v("met")
    profile = outer * ((1.0 - is_met) * v("hu") + is_met * (inner * v("hu") + (1.0 - inner) * v("core")))
    return torch.where(mask, profile, torch.zeros(())), mask


def _render_chunk(P: dict[str, np.ndarray], Ld: dict[str, np.ndarray], size: int, gen: torch.Generator):
    """Images (n, H, W) in [0, 1], brain masks, per-slot lesion masks (n, K, H, W) for one chunk."""
    slices = load_base_slices()
    n = P["angle"].shape[0]
    theta_img, theta_anat = _thetas(P, slices)
    theta_img = torch.from_numpy(theta_img).float()
    hu = torch.empty(n, size, size)
    brain = torch.empty(n, size, size, dtype=torch.bool)
    out_mm = FIELD_OF_VIEW_MM / size
    for b, name in enumerate(BASE_SLICES):
        idx = np.flatnonzero(P["base"] == b)
        if idx.size == 0:
            continue
        res = min(ORIGINAL_SIZE, max(8, round(ORIGINAL_SIZE * slices[name]["spacing"] / out_mm)))
        src = _resampled(name, res)
        grid = F.affine_grid(theta_img[idx], [idx.size, 2, size, size], align_corners=False)
        warped = F.grid_sample(src.expand(idx.size, -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                               align_corners=False)
        t_idx = torch.from_numpy(idx)
        hu[t_idx] = warped[:, 0] + HU_RANGE[0]
        brain[t_idx] = warped[:, 1] > 0.5

    lesion_masks = torch.zeros(n, MAX_FINDINGS, size, size, dtype=torch.bool)
    for j in range(MAX_FINDINGS):
        idx = np.flatnonzero(Ld["type"][:, j] > 0)
        if idx.size == 0:
            continue
        grid = F.affine_grid(torch.from_numpy(theta_anat[idx]).float(), [idx.size, 1, size, size],
                             align_corners=False)
        t = Ld["type"][idx, j]
        L = {key: torch.from_numpy(Ld[key][idx, j]).float() for key in ("cx", "cy", "a", "b", "ang", "hu", "core",
                                                                          "ring", "harm")}
        L["edge"] = torch.from_numpy(np.array([EDGE[FINDING_TYPES[c - 1]] for c in t])).float()
        L["met"] = torch.from_numpy((t == 3).astype(np.float32))
        delta, m = _lesion_field(grid[..., 0], grid[..., 1], L)
        t_idx = torch.from_numpy(idx)
        hu[t_idx] += delta
        lesion_masks[t_idx, j] = m

    sigma_px = torch.from_numpy(P["blur"] / (out_mm * P["scale"])).float()  # blur is fixed in patient mm
    radius = max(1, int(math.ceil(3.0 * float(sigma_px.max()))))
    hu = _blur(hu, _gauss_kernels(sigma_px, radius))
    hu = hu + torch.randn(hu.shape, generator=gen) * torch.from_numpy(P["noise"]).float().view(-1, 1, 1)
    # the linear VOI window of DICOM PS3.3 C.11.2.1.2 (as medlit.data.dicom.window), per image
    wc = torch.from_numpy(P["wc"]).float().view(-1, 1, 1)
    ww = torch.from_numpy(P["ww"]).float().view(-1, 1, 1)
    low = wc - 0.5 - (ww - 1.0) / 2.0
    images = ((hu - low) / (ww - 1.0)).clamp(0.0, 1.0)
    return images, brain, lesion_masks




def make_ct_lesions(n: int, *, size: int = 128, seed: int = 0, split: str = "test", prevalence: float = 0.5,
                    progress: bool = False) -> SampleSet:
    """Generate ``n`` head-CT images (pydicom's two real head slices, warped) with exactly known inserted lesions.

    Parameters
    ----------
    n : number of images
    size : image side in pixels (square, at least 64); the field of view is ``FIELD_OF_VIEW_MM`` (230 mm) whatever
        the size, so one output pixel is 230 / size mm at scale 1
    seed, split : the images are a deterministic function of ``(seed, split)`` (a stable hash), so the splits of one
        seed are different draws and the same arguments give bit-identical output
    prevalence : share of positives; exactly ``round(n * prevalence)`` images carry a lesion, in shuffled order
    progress : show a tqdm bar over the internal chunks

    Returns
    -------
    SampleSet
        ``images`` (N, 1, size, size) float32 in [0, 1] (brain window); ``labels`` (N,) int64; ``boxes`` (N, 2, 4)
        tight half-open boxes of each lesion's mask (NaN rows where absent); ``finding_masks`` the union of the
        exact lesion masks; ``anatomy_masks`` the warped brain mask. ``meta`` holds per image ``sample_id``,
        ``finding`` (lesion types joined with ``"+"``, ``"none"`` for negatives), ``n_findings``, ``base_slice``,
        ``angle_deg``, ``scale``, ``shift_x_mm``, ``shift_y_mm``, ``flipped``, ``window_center``, ``window_width``,
        ``noise_hu``, ``blur_mm``, ``contrast_hu`` (the first lesion's contrast over the local tissue, for a
        metastasis its ring; 0 for negatives), ``cnr`` (``|contrast_hu| / noise_hu``), ``finding_area`` (pixels),
        and per lesion slot (N, 2) ``lesion_type`` (``""`` where absent), ``lesion_contrast_hu`` and
        ``lesion_axis_mm`` (major semi-axis; NaN where absent).
    """
    if n < 0:
        raise ValueError("make_ct_lesions: n must be >= 0")
    if size < MIN_SIZE:
        raise ValueError(f"make_ct_lesions: size must be at least {MIN_SIZE} pixels")
    if not 0.0 <= prevalence <= 1.0:
        raise ValueError("make_ct_lesions: prevalence must lie in [0, 1]")
    slices = load_base_slices()
    root = split_seed(seed, split)
    rng = np.random.default_rng(root)

    n_pos = int(round(n * prevalence))
    labels = np.zeros(n, np.int64)
    labels[:n_pos] = 1
    labels = rng.permutation(labels)
    P = _acquisition_params(n, rng)
    Ld = _lesion_params(labels, P["base"], rng)

    chunk = max(8, _PIXELS_PER_CHUNK // (size * size))
    images = torch.empty(n, 1, size, size)
    brains = torch.empty(n, size, size, dtype=torch.bool)
    finding_masks = torch.empty(n, size, size, dtype=torch.bool)
    boxes = torch.empty(n, MAX_FINDINGS, 4)
    starts = range(0, n, chunk)
    if progress:
        from tqdm.auto import tqdm

        starts = tqdm(starts, desc=f"{NAME} {split}", unit="chunk")
    for i0 in starts:
        sl = slice(i0, min(n, i0 + chunk))
        gen = seeding.chunk_generator(root, i0 // chunk)
        img, brain, lm = _render_chunk({k: v[sl] for k, v in P.items()}, {k: v[sl] for k, v in Ld.items()},
                                       size, gen)
        images[sl, 0], brains[sl] = img, brain
        boxes[sl], finding_masks[sl] = masks_to_boxes(lm), lm.any(dim=1)

    present = Ld["type"] > 0
    n_found = (~torch.isnan(boxes[..., 0])).sum(dim=1).numpy().astype(np.int64)
    if not np.array_equal(n_found, present.sum(axis=1)):  # cannot happen above MIN_SIZE; guard all the same
        raise RuntimeError("make_ct_lesions: a lesion rendered with an empty mask")
    lesion_type = np.where(present, np.array(("",) + FINDING_TYPES, dtype=object)[Ld["type"]], "").astype(str)
    finding = np.array(["+".join(t for t in row if t) or "none" for row in lesion_type])
    lesion_contrast = np.where(present, Ld["hu"], np.nan)
    contrast0 = np.where(labels == 1, Ld["hu"][:, 0], 0.0)
    meta = {
        "sample_id": np.array([f"{NAME}-{split}-{i:05d}" for i in range(n)]),
        "finding": finding,
        "n_findings": n_found,
        "base_slice": np.array([BASE_SLICES[b] for b in P["base"]]),
        "angle_deg": np.rad2deg(P["angle"]),
        "scale": P["scale"],
        "shift_x_mm": P["tx"],
        "shift_y_mm": P["ty"],
        "flipped": P["flip"],
        "window_center": P["wc"],
        "window_width": P["ww"],
        "noise_hu": P["noise"],
        "blur_mm": P["blur"],
        "contrast_hu": contrast0,
        "cnr": np.abs(contrast0) / P["noise"],
        "finding_area": finding_masks.sum(dim=(1, 2)).numpy().astype(np.int64),
        "lesion_type": lesion_type,
        "lesion_contrast_hu": lesion_contrast,
        "lesion_axis_mm": np.where(present, Ld["a"], np.nan),
    }
    attrs = {
        "original_size": ORIGINAL_SIZE,
        "seed": seed,
        "generator": GENERATOR_VERSION,
        "class_names": list(CLASS_NAMES),
        "finding_types": list(FINDING_TYPES),
        "base_slices": list(BASE_SLICES),
        "pixel_spacing_mm": {name: slices[name]["spacing"] for name in BASE_SLICES},
        "field_of_view_mm": FIELD_OF_VIEW_MM,
        "output_pixel_spacing_mm": FIELD_OF_VIEW_MM / size,
        "size": size,
        "prevalence": prevalence,
        "split_seed": root,
    }
    return SampleSet(name=NAME, split=split, images=images, labels=torch.from_numpy(labels), boxes=boxes,
                     finding_masks=finding_masks, anatomy_masks=brains, meta=meta, attrs=attrs)
