"""Irregular random lesions with sub-regions, drawn on an output grid.

A lesion is the set ``f < 1`` of a field ``f = r / R + a * n`` where ``r / R`` is the normalised distance to
the centre of a random ellipsoid (semi-axes ``R`` in mm, uniform in ``radius_mm`` times a per-axis
elongation) and ``n`` is Gaussian noise smoothed at a third of the radius (unit sd), weighted by the
irregularity ``a``. Sub-regions from the same field: necrotic core ``f < core_fraction``, enhancing rim
the rest of the tumour, oedema ``1 <= f < oedema_extent`` inside the brain. Solid lesions (no core) and
lesions without oedema are drawn too. Everything stays inside the brain mask.

Label values (:data:`LESION_LABELS`): 1 enhancing rim (or solid tumour), 2 necrotic core, 3 oedema.
Arrays are indexed (z, y, x); spacings in mm in (x, y, z) order as in :class:`Volume`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

LESION_LABELS: dict[int, str] = {1: "enhancing", 2: "necrotic_core", 3: "oedema"}
TUMOUR_LABELS = (1, 2)  # the gross tumour (what a contrast-enhanced scan's tumour label covers)


@dataclass(frozen=True)
class LesionParams:
    """Lesion shape parameters (lengths in mm)."""

    count: tuple[int, int] = (1, 3)  # lesions per case, inclusive range
    radius_mm: tuple[float, float] = (6.0, 24.0)  # mean semi-axis
    elongation: tuple[float, float] = (0.7, 1.4)  # per-axis factor on the radius
    irregularity: tuple[float, float] = (0.15, 0.6)  # weight of the smoothed noise in the shape field
    core_probability: float = 0.6  # chance that a lesion has a necrotic core
    core_fraction: tuple[float, float] = (0.3, 0.75)  # core boundary as a fraction of the lesion field
    oedema_probability: float = 0.7  # chance that a lesion has surrounding oedema
    oedema_extent: tuple[float, float] = (1.2, 2.0)  # oedema boundary in units of the lesion field
    mass_effect_probability: float = 0.5  # chance of pushing surrounding tissue away (see deform)
    mass_effect_strength: tuple[float, float] = (0.1, 0.4)


@dataclass(frozen=True)
class LesionSeed:
    """A lesion before drawing: centre (LPS mm, (x, y, z)), semi-axes (mm, (x, y, z)) and its random draws."""

    centre_mm: tuple[float, float, float]
    semi_axes_mm: tuple[float, float, float]
    irregularity: float
    core_fraction: float  # 0: solid
    oedema_extent: float  # 1: none
    mass_effect: float  # 0: none
    noise_seed: int


def draw_seeds(rng: np.random.Generator, candidates_mm: np.ndarray, params: LesionParams) -> list[LesionSeed]:
    """Random lesions centred on points chosen among ``candidates_mm`` (``(n, 3)`` LPS mm, e.g. brain voxels)."""
    if len(candidates_mm) == 0:
        raise ValueError("no candidate lesion centre (empty brain mask on the output grid)")
    seeds = []
    for _ in range(int(rng.integers(params.count[0], params.count[1] + 1))):
        radius = rng.uniform(*params.radius_mm)
        seeds.append(LesionSeed(
            centre_mm=tuple(float(v) for v in candidates_mm[int(rng.integers(len(candidates_mm)))]),  # type: ignore[arg-type]
            semi_axes_mm=tuple(float(radius * e) for e in rng.uniform(*params.elongation, 3)),  # type: ignore[arg-type]
            irregularity=float(rng.uniform(*params.irregularity)),
            core_fraction=float(rng.uniform(*params.core_fraction)) if rng.random() < params.core_probability else 0.0,
            oedema_extent=float(rng.uniform(*params.oedema_extent)) if rng.random() < params.oedema_probability else 1.0,
            mass_effect=float(rng.uniform(*params.mass_effect_strength)) if rng.random() < params.mass_effect_probability else 0.0,
            noise_seed=int(rng.integers(2**31)),
        ))
    return seeds


def draw_lesions(seeds: list[LesionSeed], points_mm: np.ndarray, spacing_mm: tuple[float, float, float],
                 brain: np.ndarray) -> np.ndarray:
    """uint8 lesion labels (:data:`LESION_LABELS`) on the grid whose voxel centres are ``points_mm``
    (``(3, z, y, x)`` LPS mm, components (x, y, z)); ``brain`` (bool, (z, y, x)) bounds every lesion. Where
    lesions overlap, tumour wins over oedema and core over rim."""
    out = np.zeros(brain.shape, dtype=np.uint8)
    voxel_sigma = np.asarray(spacing_mm[::-1], dtype=float)
    for seed in seeds:
        rel = points_mm - np.asarray(seed.centre_mm, dtype=np.float32)[:, None, None, None]
        ellipsoid = np.sqrt(sum((rel[a] / seed.semi_axes_mm[a]) ** 2 for a in range(3)))
        noise = np.random.default_rng(seed.noise_seed).standard_normal(brain.shape).astype(np.float32)
        noise = ndimage.gaussian_filter(noise, np.mean(seed.semi_axes_mm) / 3.0 / voxel_sigma)
        noise /= max(float(noise.std()), 1e-6)
        field = ellipsoid + seed.irregularity * noise
        tumour = (field < 1.0) & brain
        if not tumour.any():  # a centre on the brain edge with an unlucky noise draw: keep a small core
            tumour = (ellipsoid < 0.5) & brain
        oedema = (field >= 1.0) & (field < seed.oedema_extent) & brain & (out == 0)
        out[oedema] = 3
        out[tumour & (out != 2)] = 1
        if seed.core_fraction > 0:
            out[tumour & (field < seed.core_fraction)] = 2
    return out
