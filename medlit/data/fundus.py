"""A fundus lesion set on a real photograph: scikit-image's retina with inserted diabetic-retinopathy lesions.

The anatomy is real and ships with scikit-image: ``skimage.data.retina()`` (a 1411² colour photograph of a healthy
fundus: optic disc, vessels, macula, the black surround of the camera's field of view) and
``skimage.data.microaneurysms()`` (a 102² green-channel crop of a diabetic fundus with two real microaneurysms).
Each image of the set is a different *view* of the one photograph, and the lesions are painted on it:

1. **view**: a random crop (zoom), rotation, translation and left/right flip (left or right eye), one bilinear
   ``grid_sample`` of the photograph together with its field-of-view and optic-disc masks;
2. **lesions** (positives only), each with its own pixel mask (opacity >= ``MASK_LEVEL``, inside the field of view)
   and tight half-open box: *microaneurysms* stamped with the intensity profile of the real microaneurysms of
   ``microaneurysms()``, *haemorrhages* (irregular dark-red blots) and *hard exudates* (clusters of small bright
   yellow spots, one box per cluster). They are placed on the retina away from the optic disc;
3. **look-alikes** on both classes: lens dust (soft grey shadows) and light reflexes (small bright spots), so that
   "a dark dot" or "a bright spot" alone does not mean disease;
4. **camera**: per-channel colour gains, a global brightness, an illumination gradient and vignetting, a gamma, a
   blur and pixel noise; then clipping to [0, 1].

Lesion sizes are given as fractions of the image width so the set keeps its look at every profile size. They are
larger than real lesions at this field of view (a real microaneurysm would be under one pixel at 128 px): the set is
a localisation benchmark, not a screening simulator. Everything random comes from one numpy generator per
``(seed, split)`` (sha256-derived) and one torch generator per chunk: the same call gives bit-identical output.
The data card is ``data_cards/fundus_lesions.md``.
"""

from __future__ import annotations

import math
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from medlit.data import seeding
from medlit.data.sample import SampleSet, masks_to_boxes

__all__ = ["make_fundus_lesions", "LESION_TYPES", "GENERATOR_VERSION"]

GENERATOR_VERSION = "medlit.data.fundus v1"
NAME = "fundus-lesions"
CLASS_NAMES = ["no referable lesion", "referable lesions present"]
LESION_TYPES = ("microaneurysm", "haemorrhage", "hard exudate")
BASE_SIZE = 512  # the photograph is resampled once to this working resolution
ORIGINAL_SIZE = 1411  # the photograph's native width (pointing-game tolerances are defined at this size)
MAX_LESIONS = 6  # K, box rows per sample
MAX_LOOKALIKES = 2
MASK_LEVEL = 0.3  # a pixel belongs to a lesion where the lesion's opacity reaches this level
_IMAGES_PER_CHUNK = 128

# Lesion patterns of a positive image: (probability, lesion slots) with slot = (type, count range).
PATTERNS = (
    (0.35, (("microaneurysm", (3, 6)),)),
    (0.35, (("haemorrhage", (1, 2)), ("microaneurysm", (0, 2)))),
    (0.30, (("hard exudate", (1, 2)), ("haemorrhage", (0, 1)))),
)
# Sizes as fractions of the image width (radius) and strengths (0-1 opacity scale).
MA_RADIUS = (0.014, 0.022)
MA_DEPTH = (0.7, 0.95)
HAEMORRHAGE_RADIUS = (0.025, 0.05)
HAEMORRHAGE_DEPTH = (0.6, 0.9)
EXUDATE_CLUSTER_RADIUS = (0.025, 0.05)
EXUDATE_SPOT_RADIUS = (0.009, 0.016)
EXUDATE_STRENGTH = (0.6, 0.9)
# Multiplicative darkening per RGB channel: blood absorbs green and blue far more than red.
BLOOD_ABSORPTION = (0.35, 0.9, 0.85)
EXUDATE_COLOUR = (1.0, 0.86, 0.42)


def split_seed(seed: int, split: str) -> int:
    """A stable 63-bit seed for ``(seed, split)`` (see :func:`medlit.data.seeding.split_seed`)."""
    return seeding.split_seed("medlit.fundus-lesions", seed, split)


# ----------------------------------------------------------------------------------------------------------------
# The real images, prepared once per process
# ----------------------------------------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def _base() -> tuple[torch.Tensor, dict]:
    """(5, S, S): the photograph's RGB, its field-of-view mask and its optic-disc mask, at ``BASE_SIZE``."""
    from skimage import data, filters

    rgb = data.retina().astype(np.float32) / 255.0
    fov = rgb.mean(axis=2) > 0.06  # the camera's surround is black
    green = filters.gaussian(rgb[..., 1], sigma=25)
    disc_row, disc_col = np.unravel_index(np.argmax(green * fov), green.shape)  # the brightest large structure
    rows, cols = np.mgrid[: rgb.shape[0], : rgb.shape[1]]
    disc_radius = 0.07 * rgb.shape[1]
    disc = (rows - disc_row) ** 2 + (cols - disc_col) ** 2 < disc_radius ** 2
    stack = np.concatenate([rgb, fov[..., None], disc[..., None]], axis=2).transpose(2, 0, 1)
    base = F.interpolate(torch.from_numpy(np.ascontiguousarray(stack)).float()[None], size=(BASE_SIZE, BASE_SIZE),
                         mode="area")[0]
    info = {"disc_centre_px": (int(disc_col), int(disc_row)), "disc_radius_px": float(disc_radius)}
    return base, info


@lru_cache(maxsize=1)
def _ma_templates() -> torch.Tensor:
    """(2, 1, 13, 13): the darkening profiles of the two real microaneurysms of ``microaneurysms()``, peak 1.

    The crop is detrended with a wide Gaussian; the microaneurysms are the two strongest dark blobs; a radial
    window removes the vessel pixels around them.
    """
    from skimage import data, feature, filters

    crop = data.microaneurysms().astype(np.float32) / 255.0
    darkening = np.clip(filters.gaussian(crop, sigma=6) - crop, 0, None)
    blobs = feature.blob_log(darkening, min_sigma=1, max_sigma=5, threshold=0.02)
    strongest = sorted(blobs, key=lambda b: -darkening[int(b[0]), int(b[1])])[:2]
    half = 6
    yy, xx = np.mgrid[-half: half + 1, -half: half + 1]
    window = np.exp(-(xx ** 2 + yy ** 2) / (2 * 3.0 ** 2))
    templates = []
    for row, col, _ in strongest:
        r, c = int(row), int(col)
        padded = np.pad(darkening, half, mode="edge")
        patch = padded[r: r + 2 * half + 1, c: c + 2 * half + 1] * window
        templates.append(patch / patch.max())
    return torch.from_numpy(np.stack(templates)[:, None]).float()


# ----------------------------------------------------------------------------------------------------------------
# Per-image parameters
# ----------------------------------------------------------------------------------------------------------------

def _view_params(n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    zoom = rng.uniform(0.62, 1.0, n)  # fraction of the photograph's width shown
    return {
        "zoom": zoom,
        "angle": rng.uniform(-math.pi / 6, math.pi / 6, n),
        "shift_x": rng.uniform(-1, 1, n) * (1 - zoom) * 0.9,
        "shift_y": rng.uniform(-1, 1, n) * (1 - zoom) * 0.9,
        "flip": rng.random(n) < 0.5,
        "gain": rng.uniform([0.85, 0.8, 0.75], [1.1, 1.2, 1.25], (n, 3)),
        "brightness": rng.uniform(0.75, 1.2, n),
        "gradient": rng.uniform(0.0, 0.35, n),
        "gradient_dir": rng.uniform(0, 2 * math.pi, n),
        "vignetting": rng.uniform(0.0, 0.3, n),
        "gamma": rng.uniform(0.8, 1.25, n),
        "blur": rng.uniform(0.0, 0.8, n),
        "noise": rng.uniform(0.005, 0.02, n),
    }


def _lesion_slots(labels: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """(N, MAX_LESIONS) lesion type index (0 = empty slot, 1.. = LESION_TYPES) per image."""
    slots = np.zeros((len(labels), MAX_LESIONS), dtype=np.int64)
    probs = np.array([p for p, _ in PATTERNS])
    for i in np.flatnonzero(labels == 1):
        _, pattern = PATTERNS[rng.choice(len(PATTERNS), p=probs / probs.sum())]
        kinds = [LESION_TYPES.index(kind) + 1 for kind, (lo, hi) in pattern for _ in range(rng.integers(lo, hi + 1))]
        slots[i, : len(kinds)] = kinds[:MAX_LESIONS]
    return slots


# ----------------------------------------------------------------------------------------------------------------
# Rendering
# ----------------------------------------------------------------------------------------------------------------

def _warp(base: torch.Tensor, P: dict, idx: np.ndarray, size: int) -> torch.Tensor:
    """(B, 5, size, size): each image's view of the photograph and its masks."""
    zoom = torch.from_numpy(P["zoom"][idx]).float()
    angle = torch.from_numpy(P["angle"][idx]).float()
    flip = torch.from_numpy(np.where(P["flip"][idx], -1.0, 1.0)).float()
    cos, sin = torch.cos(angle) * zoom, torch.sin(angle) * zoom
    theta = torch.stack([torch.stack([cos * flip, -sin, torch.from_numpy(P["shift_x"][idx]).float()], 1),
                         torch.stack([sin * flip, cos, torch.from_numpy(P["shift_y"][idx]).float()], 1)], 1)
    grid = F.affine_grid(theta, [len(idx), 5, size, size], align_corners=False)
    return F.grid_sample(base.expand(len(idx), -1, -1, -1), grid, mode="bilinear", padding_mode="zeros",
                         align_corners=False)


def _sample_centres(allowed: torch.Tensor, count: int, gen: torch.Generator) -> torch.Tensor:
    """(B, count, 2) pixel centres (x, y) drawn uniformly from each image's ``allowed`` (B, H, W) mask."""
    b, h, w = allowed.shape
    weights = allowed.flatten(1).float() + 1e-12  # a view with no allowed pixel still draws (never happens here)
    flat = torch.multinomial(weights, count, replacement=True, generator=gen)
    return torch.stack([(flat % w).float() + 0.5, (flat // w).float() + 0.5], dim=-1)


def _blob(xx: torch.Tensor, yy: torch.Tensor, cx: torch.Tensor, cy: torch.Tensor, radius: torch.Tensor
          ) -> torch.Tensor:
    """A soft disc of opacity 1 inside ``radius`` falling to 0 over half a radius (broadcast over leading dims)."""
    d = torch.sqrt((xx - cx[..., None, None]) ** 2 + (yy - cy[..., None, None]) ** 2)
    r = radius[..., None, None]
    return torch.clamp(1.5 - d / r, 0, 1) ** 1.5 * torch.clamp(2 - d / r, 0, 1)


def _lesion_opacity(kind: int, centre: torch.Tensor, u: torch.Tensor, xx: torch.Tensor, yy: torch.Tensor,
                    size: int, templates: torch.Tensor) -> torch.Tensor:
    """(B, H, W) opacity of one lesion slot of type ``kind`` per image; ``u`` (B, 24) uniform draws shape it."""
    cx, cy = centre[:, 0], centre[:, 1]
    if kind == 1:  # microaneurysm: a real microaneurysm's profile, scaled and rotated
        radius = size * (MA_RADIUS[0] + (MA_RADIUS[1] - MA_RADIUS[0]) * u[:, 0])
        reach = radius * 2.4  # the template's half-width spans 2.4 microaneurysm radii
        angle = u[:, 1] * 2 * math.pi
        gx = ((xx - cx[:, None, None]) * torch.cos(angle)[:, None, None]
              + (yy - cy[:, None, None]) * torch.sin(angle)[:, None, None]) / reach[:, None, None]
        gy = (-(xx - cx[:, None, None]) * torch.sin(angle)[:, None, None]
              + (yy - cy[:, None, None]) * torch.cos(angle)[:, None, None]) / reach[:, None, None]
        which = (u[:, 2] < 0.5).long()
        stamp = F.grid_sample(templates[which], torch.stack([gx, gy], -1), mode="bilinear",
                              padding_mode="zeros", align_corners=True)[:, 0]
        return stamp * (MA_DEPTH[0] + (MA_DEPTH[1] - MA_DEPTH[0]) * u[:, 3])[:, None, None]
    if kind == 2:  # haemorrhage: an irregular blot, the union of three overlapping soft discs
        radius = size * (HAEMORRHAGE_RADIUS[0] + (HAEMORRHAGE_RADIUS[1] - HAEMORRHAGE_RADIUS[0]) * u[:, 0])
        depth = HAEMORRHAGE_DEPTH[0] + (HAEMORRHAGE_DEPTH[1] - HAEMORRHAGE_DEPTH[0]) * u[:, 1]
        out = _blob(xx, yy, cx, cy, radius)
        for j in range(2):
            a = u[:, 2 + j] * 2 * math.pi
            ox, oy = cx + 0.6 * radius * torch.cos(a), cy + 0.6 * radius * torch.sin(a)
            out = torch.maximum(out, _blob(xx, yy, ox, oy, radius * (0.5 + 0.3 * u[:, 4 + j])))
        return out * depth[:, None, None]
    # hard exudate: a cluster of small bright spots
    spread = size * (EXUDATE_CLUSTER_RADIUS[0] + (EXUDATE_CLUSTER_RADIUS[1] - EXUDATE_CLUSTER_RADIUS[0]) * u[:, 0])
    strength = EXUDATE_STRENGTH[0] + (EXUDATE_STRENGTH[1] - EXUDATE_STRENGTH[0]) * u[:, 1]
    n_spots = 4 + (u[:, 2] * 4).long()  # 4-7 spots
    out = torch.zeros_like(xx.expand(len(cx), -1, -1))
    for j in range(7):
        a, rho = u[:, 3 + j] * 2 * math.pi, spread * torch.sqrt(u[:, 10 + j]) * (j > 0)  # spot 0 at the centre
        spot = size * (EXUDATE_SPOT_RADIUS[0] + (EXUDATE_SPOT_RADIUS[1] - EXUDATE_SPOT_RADIUS[0]) * u[:, 17 + j])
        blob = _blob(xx, yy, cx + rho * torch.cos(a), cy + rho * torch.sin(a), spot)
        out = torch.maximum(out, blob * (j < n_spots)[:, None, None])
    return out * strength[:, None, None]


def _render_chunk(base: torch.Tensor, P: dict, slots: np.ndarray, look: np.ndarray, idx: np.ndarray, size: int,
                  gen: torch.Generator) -> dict[str, torch.Tensor]:
    b = len(idx)
    view = _warp(base, P, idx, size)
    rgb, fov, disc = view[:, :3], view[:, 3] > 0.5, view[:, 4] > 0.5
    margin = max(1, round(0.04 * size))
    eroded = -F.max_pool2d(-fov[:, None].float(), 2 * margin + 1, stride=1, padding=margin)[:, 0] > 0.5
    anatomy = eroded & ~disc  # where lesions may lie: the retina, away from its edge and from the optic disc
    yy, xx = torch.meshgrid(torch.arange(size, dtype=torch.float32) + 0.5,
                            torch.arange(size, dtype=torch.float32) + 0.5, indexing="ij")
    templates = _ma_templates()
    centres = _sample_centres(anatomy, MAX_LESIONS + MAX_LOOKALIKES, gen)
    shape_draws = torch.rand(b, MAX_LESIONS + MAX_LOOKALIKES, 24, generator=gen)

    absorb = torch.tensor(BLOOD_ABSORPTION).view(1, 3, 1, 1)
    yellow = torch.tensor(EXUDATE_COLOUR).view(1, 3, 1, 1)
    masks = torch.zeros(b, MAX_LESIONS, size, size, dtype=torch.bool)
    slot_t = torch.from_numpy(slots[idx])
    for k in range(MAX_LESIONS):
        for kind in (1, 2, 3):
            rows = torch.nonzero(slot_t[:, k] == kind).flatten()
            if rows.numel() == 0:
                continue
            alpha = _lesion_opacity(kind, centres[rows, k], shape_draws[rows, k], xx, yy, size, templates)
            alpha = alpha * fov[rows]
            if kind == 3:
                # exudates are lipid: bright yellow, brighter than the retina around them
                bright = (rgb[rows].amax(1, True) * 1.25).clamp(0.6, 1.0)
                rgb[rows] = rgb[rows] * (1 - alpha[:, None]) + alpha[:, None] * yellow * bright
            else:
                rgb[rows] = rgb[rows] * (1 - alpha[:, None] * absorb)
            strength = alpha.flatten(1).amax(1).clamp(min=1e-6)
            masks[rows, k] = alpha >= MASK_LEVEL * strength[:, None, None]

    # look-alikes: lens dust (a soft neutral shadow) and light reflexes (a small neutral brightening)
    look_t = torch.from_numpy(look[idx])
    for j in range(MAX_LOOKALIKES):
        u = shape_draws[:, MAX_LESIONS + j]
        centre = centres[:, MAX_LESIONS + j]
        dust = _blob(xx, yy, centre[:, 0], centre[:, 1], size * (0.02 + 0.03 * u[:, 0])) * (0.08 + 0.14 * u[:, 1])[:, None, None]
        reflex = _blob(xx, yy, centre[:, 0], centre[:, 1], size * (0.006 + 0.01 * u[:, 0])) * (0.15 + 0.2 * u[:, 1])[:, None, None]
        dust = dust * (look_t[:, j] == 1)[:, None, None] * fov
        reflex = reflex * (look_t[:, j] == 2)[:, None, None] * fov
        rgb = rgb * (1 - dust[:, None]) + reflex[:, None] * (1 - rgb)

    # camera: colour gains, brightness, illumination gradient, vignetting, gamma, blur, noise
    def col(key):
        return torch.from_numpy(np.asarray(P[key][idx], dtype=np.float32))

    nx, ny = (xx / size) * 2 - 1, (yy / size) * 2 - 1
    direction = col("gradient_dir")
    field = (1 + col("gradient")[:, None, None] * (nx * torch.cos(direction)[:, None, None]
                                                    + ny * torch.sin(direction)[:, None, None]) / 2
             - col("vignetting")[:, None, None] * (nx ** 2 + ny ** 2) / 2)
    rgb = rgb * col("gain")[:, :, None, None] * (col("brightness")[:, None, None] * field)[:, None]
    rgb = rgb.clamp(0, 1) ** col("gamma")[:, None, None, None]
    rgb = _blur(rgb, col("blur") * size / 128.0)
    rgb = rgb + torch.randn(rgb.shape, generator=gen) * col("noise")[:, None, None, None]
    rgb = (rgb * fov[:, None]).clamp(0, 1)
    return {"images": rgb, "masks": masks, "anatomy": anatomy, "fov": fov}


def _blur(images: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Per-image Gaussian blur with standard deviation ``sigma`` (pixels; 0 leaves the image as it is)."""
    radius = 3
    offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-offsets[None] ** 2 / (2 * sigma.clamp(min=1e-3)[:, None] ** 2))
    kernel = kernel / kernel.sum(1, keepdim=True)  # (B, 7); sigma -> 0 gives the identity kernel
    b, c, h, w = images.shape
    x = images.reshape(1, b * c, h, w)
    kx = kernel.repeat_interleave(c, 0)[:, None, None, :]
    x = F.conv2d(F.pad(x, (radius, radius, 0, 0), mode="replicate"), kx, groups=b * c)
    x = F.conv2d(F.pad(x, (0, 0, radius, radius), mode="replicate"), kx.transpose(2, 3), groups=b * c)
    return x.reshape(b, c, h, w)


def make_fundus_lesions(n: int, *, size: int = 128, seed: int = 0, split: str = "test", prevalence: float = 0.5,
                        progress: bool = False) -> SampleSet:
    """``n`` views of the scikit-image fundus photograph, about ``prevalence`` of them with DR lesions.

    Returns a ``SampleSet`` of (n, 3, size, size) RGB images in [0, 1]; ``boxes`` are the tight half-open boxes
    of each lesion's mask (one per microaneurysm or haemorrhage, one per exudate cluster), ``finding_masks`` the
    union of the lesion masks, ``anatomy_masks`` the retina inside the field of view minus the optic disc.
    """
    if n < 0 or size < 16:
        raise ValueError(f"make_fundus_lesions: need n >= 0 and size >= 16, got n={n}, size={size}")
    root = split_seed(seed, split)
    rng = np.random.default_rng(root)
    labels = (rng.random(n) < prevalence).astype(np.int64)
    P = _view_params(n, rng)
    slots = _lesion_slots(labels, rng)
    look = np.where(rng.random((n, MAX_LOOKALIKES)) < 0.35, rng.integers(1, 3, (n, MAX_LOOKALIKES)), 0)
    base, info = _base()

    images = torch.zeros(n, 3, size, size)
    lesion_masks = torch.zeros(n, MAX_LESIONS, size, size, dtype=torch.bool)
    anatomy = torch.zeros(n, size, size, dtype=torch.bool)
    starts = range(0, n, _IMAGES_PER_CHUNK)
    for c, start in enumerate(tqdm(starts, desc=f"{NAME} {split}", disable=not progress)):
        idx = np.arange(start, min(start + _IMAGES_PER_CHUNK, n))
        gen = seeding.chunk_generator(root, c, stride=1, offset=0)  # root + c, as released (fundus v1)
        out = _render_chunk(base, P, slots, look, idx, size, gen)
        images[idx], lesion_masks[idx], anatomy[idx] = out["images"], out["masks"], out["anatomy"]

    boxes = masks_to_boxes(lesion_masks)
    present = lesion_masks.flatten(2).any(-1)  # (n, K)
    if np.any((labels == 1) & ~present.any(1).numpy()):
        raise RuntimeError("make_fundus_lesions: a positive image rendered without a visible lesion")
    kinds = np.where(present.numpy(), slots, 0)
    findings = np.array(["+".join(LESION_TYPES[t - 1] for t in sorted(set(row) - {0})) or "none" for row in kinds])
    meta = {
        "sample_id": np.array([f"{NAME}-{split}-{i:05d}" for i in range(n)]),
        "finding": findings,
        "n_findings": present.sum(1).numpy().astype(np.int64),
        "n_microaneurysms": (kinds == 1).sum(1), "n_haemorrhages": (kinds == 2).sum(1),
        "n_exudate_clusters": (kinds == 3).sum(1),
        "finding_area": lesion_masks.any(1).sum(dim=(1, 2)).numpy().astype(np.int64),
        "lookalikes": np.array(["+".join(sorted({("dust", "reflex")[v - 1] for v in row if v})) or "none"
                                for row in look]),
        "zoom": P["zoom"], "angle_deg": np.rad2deg(P["angle"]), "flipped": P["flip"], "gamma": P["gamma"],
        "noise": P["noise"],
    }
    attrs = {
        "original_size": ORIGINAL_SIZE, "seed": seed, "generator": GENERATOR_VERSION, "class_names": CLASS_NAMES,
        "size": size, "prevalence": prevalence, "split_seed": root, "finding_types": list(LESION_TYPES),
        "source_images": "skimage.data.retina(), skimage.data.microaneurysms()", **info,
    }
    return SampleSet(name=NAME, split=split, images=images, labels=torch.from_numpy(labels), boxes=boxes,
                     finding_masks=lesion_masks.any(1), anatomy_masks=anatomy, meta=meta, attrs=attrs)
