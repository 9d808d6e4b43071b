"""Demo MR patients on real anatomy: a deformed MNI152 head with generated lesions, rendered with a fixed MR
contrast per tissue and resampled onto any series grid.

A patient (:func:`make_patient`) is built once per seed on a 2 mm axis-aligned *patient grid* with the
domain-randomised generator's parts (:mod:`imaging_pipelines.medical.synth`): the MNI152 tissue labels pulled
back through a random affine (rotation +-8 degrees; pull-back scale 1.0-1.16 per axis, a head 0.86-1.0 x the
template, whose brain is larger than most; shear 0.03; translation +-8 mm) and an elastic displacement (up to
3 mm), the head layers (meninges, skull, scalp fat, skin) at random
thicknesses, solid tissue in the head below the brain (skull base, face and neck stand-in), and 1-3
irregular lesions centred in white matter, with mass effect. A series (:func:`render_series`) samples that
one patient at the world position of each voxel of its grid, so an axial, a sagittal and an oblique series of
one patient show the same anatomy and the same lesions.

Coordinates: world points are patient LPS millimetres; world (0, 0, 0) is the centre of the MNI152 brain's
bounding box in the undeformed template (the patient's head is then moved by the random affine, as a head
lies differently in the scanner). Series grids follow :class:`~imaging_pipelines.core.volume.Volume`: shape
in array order (z, y, x), spacing (mm) and origin (mm, LPS) in (x, y, z) order, direction columns for the
(i, j, k) index axes; ``origin=None`` centres the grid on world (0, 0, 0).

Labels (uint8) keep the phantom's convention (:data:`~.phantom.BRAIN_LABELS`): 0 background, 1
scalp_skull (every extra-cerebral tissue: meninges, skull, scalp fat, skin, skull base / face / neck),
2 CSF, 3 grey matter, 4 white matter, 5 lesion = the gross tumour: enhancing rim (or a solid tumour) plus
necrotic core. **Oedema** around a lesion is visible in the image (T2 bright, T1 slightly dark) but is
labelled as the tissue it lies in (3 or 4): like a contrast-enhanced tumour segmentation, the lesion label
is the tumour, not the swelling.

Intensities: arbitrary MR units (a.u., roughly 0-1000, float32) from :data:`MR_CONTRAST`, a fixed mean per
tissue for ``"T1"`` (post-contrast T1: enhancing rim brighter than white matter, dark necrotic core) and
``"T2"`` (CSF, oedema and lesion bright), a partial-volume blur of 0.4 x the series spacing, a smooth
multiplicative bias (about +-10 %) and Rician noise (``noise_sigma`` a.u.).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.synth import anatomy, deform, intensity, lesions
from imaging_pipelines.tools.demo.phantom import (BRAIN_CSF, BRAIN_GM, BRAIN_LESION, BRAIN_SHELL, BRAIN_WM,
                                                  centered_origin, world_coordinates)

SPACING_MM = 2.0  # patient grid (isotropic)
COARSE_MM = 8.0  # grid of the smooth fields (elastic displacement, bias), interpolated linearly onto the patient grid
SCALE_RANGE = (1.0, 1.16)  # pull-back scale per axis: the head is 0.86-1.0 x the template (brain + CSF about 1.9 L)
FIELD_OF_VIEW_MM = (200.0, 244.0, 232.0)  # patient grid (x, y, z): holds axial, sagittal and 15-degree oblique grids
DEMO_LESIONS = lesions.LesionParams(count=(1, 3), radius_mm=(7.0, 15.0), elongation=(0.75, 1.3),
                                    irregularity=(0.15, 0.45), core_probability=0.6, core_fraction=(0.3, 0.6),
                                    oedema_probability=0.7, oedema_extent=(1.2, 1.7), mass_effect_probability=0.3,
                                    mass_effect_strength=(0.1, 0.25))
NECK_LEVEL_MM = 25.0  # the neck zone starts this far below the brain centre (S, mm)
NECK_RADII_MM = (55.0, 70.0)  # its elliptic cylinder (L, P semi-axes, mm)

# Render codes: the generator's tissue labels 0-10 (anatomy.TISSUES), then the lesion sub-regions.
RIM, CORE, OEDEMA = 11, 12, 13
_N_CODES = 14
# Mean intensity (a.u.) per render code; 8-10 (neck zone) are muscle, fat and mucosa / fluid.
MR_CONTRAST: dict[str, dict[int, float]] = {
    "T1": {0: 0.0, 1: 150.0, 2: 450.0, 3: 650.0, 4: 220.0, 5: 110.0, 6: 820.0, 7: 400.0,
           8: 360.0, 9: 760.0, 10: 220.0, RIM: 880.0, CORE: 190.0, OEDEMA: 520.0},
    "T2": {0: 0.0, 1: 900.0, 2: 560.0, 3: 400.0, 4: 480.0, 5: 90.0, 6: 620.0, 7: 350.0,
           8: 260.0, 9: 580.0, 10: 760.0, RIM: 700.0, CORE: 950.0, OEDEMA: 800.0},
}
# Render code -> demo label (phantom convention); oedema keeps the tissue below it (see the module docstring).
_TO_LABEL = np.array([0, BRAIN_CSF, BRAIN_GM, BRAIN_WM, BRAIN_SHELL, BRAIN_SHELL, BRAIN_SHELL, BRAIN_SHELL,
                      BRAIN_SHELL, BRAIN_SHELL, BRAIN_SHELL, BRAIN_LESION, BRAIN_LESION, 0], dtype=np.uint8)


@dataclass(frozen=True)
class MniPatient:
    """One demo patient on the patient grid (a :class:`~imaging_pipelines.medical.synth.deform.Grid` centred
    on the template brain centre ``centre_mm``): ``codes`` (uint8 render codes, (z, y, x)), ``labels`` (uint8
    demo labels), ``bias`` (float32 multiplicative field) and the ``seed`` it was made from."""

    grid: deform.Grid
    centre_mm: tuple[float, float, float]
    codes: np.ndarray
    labels: np.ndarray
    bias: np.ndarray
    seed: int



@functools.lru_cache(maxsize=1)
def brain_centre_mm() -> tuple[float, float, float]:
    """Centre (LPS mm) of the bounding box of the MNI152 brain (tissue labels 1-3): world (0, 0, 0) of a patient."""
    labels = anatomy.load_anatomy().labels
    brain = np.argwhere(labels.array > 0)
    centre_ijk = (brain.min(axis=0) + brain.max(axis=0))[::-1] / 2.0  # (i, j, k)
    return tuple(float(v) for v in (labels.index_to_world_lps() @ np.array([*centre_ijk, 1.0]))[:3])  # type: ignore[return-value]


def template_points(shape: Sequence[int], spacing: Sequence[float], origin: Sequence[float] | None = None,
                    direction: np.ndarray | None = None) -> np.ndarray:
    """Template points (LPS mm, ``(3, z, y, x)``, components (x, y, z)) of every voxel of a world grid:
    world + :func:`brain_centre_mm`."""
    x, y, z = world_coordinates(shape, spacing, origin, direction)
    centre = brain_centre_mm()
    return np.stack([x + centre[0], y + centre[1], z + centre[2]]).astype(np.float32)


def _tissues(points: np.ndarray, layers_mm: tuple[float, ...]) -> np.ndarray:
    mni = anatomy.load_anatomy()
    labels = deform.sample_on_grid(mni.labels, points, order=0)
    distance = deform.sample_on_grid(mni.distance_mm, points, order=1, cval=1e3)
    return anatomy.head_layers(labels, distance, layers_mm)


def _smooth_on(grid: deform.Grid, coarse: deform.Grid, values: np.ndarray, outside: float) -> np.ndarray:
    """``values`` (on ``coarse``, (z, y, x)) interpolated linearly at the voxels of ``grid``; ``outside``
    beyond it."""
    return deform.resample_linear(values, coarse, grid, outside)


def make_patient(seed: int) -> MniPatient:
    """The demo patient of ``seed``: deformed MNI152 head, head layers, neck zone and 1-3 lesions (deterministic)."""
    centre = brain_centre_mm()
    grid = deform.centred_grid(centre, FIELD_OF_VIEW_MM, SPACING_MM)
    coarse = deform.centred_grid(centre, FIELD_OF_VIEW_MM, COARSE_MM)
    rng = np.random.default_rng([int(seed), 15])
    affine = deform.random_affine(rng, centre, 8.0, SCALE_RANGE, 0.03, 8.0)
    elastic = deform.elastic_displacement(rng, coarse, 3.0, 40.0)
    displacement = np.stack([_smooth_on(grid, coarse, component, 0.0) for component in elastic])
    layers_mm = tuple(float(rng.uniform(lo, hi)) for lo, hi in ((0.5, 1.5), (4.0, 7.0), (2.0, 5.0), (1.0, 2.5)))
    points = grid.world_points()
    tissues = _tissues(deform.deformed_points(grid, affine, displacement), layers_mm)
    white = points.reshape(3, -1).T[(tissues == 3).ravel()]  # lesions centred in white matter
    seeds = lesions.draw_seeds(rng, white, DEMO_LESIONS)
    for s in seeds:
        if s.mass_effect > 0:
            displacement = displacement + deform.mass_effect_displacement(
                points, s.centre_mm, float(np.mean(s.semi_axes_mm)), s.mass_effect)
    moved = deform.deformed_points(grid, affine, displacement)
    if any(s.mass_effect > 0 for s in seeds):
        tissues = _tissues(moved, layers_mm)
    neck = (tissues == 0) & anatomy.neck_zone(moved, centre, NECK_LEVEL_MM, NECK_RADII_MM)
    blobs = ndimage.gaussian_filter(rng.standard_normal(tissues.shape).astype(np.float32), 8.0 / SPACING_MM)
    tissues = anatomy.fill_clutter(tissues, neck, blobs)
    lesion = lesions.draw_lesions(seeds, points, grid.spacing_mm, np.isin(tissues, anatomy.BRAIN_LABELS))
    codes = np.where(lesion > 0, RIM - 1 + lesion, tissues).astype(np.uint8)  # lesion 1 rim, 2 core, 3 oedema
    labels = np.where(codes == OEDEMA, _TO_LABEL[tissues], _TO_LABEL[codes]).astype(np.uint8)
    bias = np.exp(_smooth_on(grid, coarse, intensity.smooth_field(rng, coarse.shape, 3, 0.08), 0.0))
    return MniPatient(grid=grid, centre_mm=centre, codes=codes, labels=labels, bias=bias, seed=int(seed))


def render_series(patient: MniPatient, shape: Sequence[int], spacing: Sequence[float], contrast: str = "T1", *,
                  origin: Sequence[float] | None = None, direction: np.ndarray | None = None,
                  noise_sigma: float = 15.0) -> tuple[np.ndarray, np.ndarray]:
    """``(image float32 a.u., labels uint8)`` of ``patient`` on the series grid (``shape`` (z, y, x),
    ``spacing`` mm, ``origin`` mm LPS or ``None`` for centred on world 0, ``direction`` columns (i, j, k));
    ``contrast`` ``"T1"`` or ``"T2"``. Labels are the nearest patient-grid label; the image is the patient's
    rendered contrast, blurred by 0.4 x the mean series spacing, linearly interpolated, plus Rician noise."""
    if contrast not in MR_CONTRAST:
        raise ValueError(f"contrast must be one of {sorted(MR_CONTRAST)}; got {contrast!r}")
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    points = template_points(shape, spacing, origin, d)
    means = np.zeros(_N_CODES, dtype=np.float32)
    for code, value in MR_CONTRAST[contrast].items():
        means[code] = value
    sigma_vox = 0.4 * float(np.mean(spacing)) / SPACING_MM
    clean = ndimage.gaussian_filter(means[patient.codes] * patient.bias, sigma_vox)
    image = deform.sample_on_grid(patient.grid.volume(clean), points, order=1)
    labels = deform.sample_on_grid(patient.grid.volume(patient.labels), points, order=0).astype(np.uint8)
    noise = np.random.default_rng([patient.seed, 2, 0 if contrast == "T1" else 1, *np.asarray(shape, dtype=int)])
    n1 = noise.normal(0.0, noise_sigma, size=image.shape)
    n2 = noise.normal(0.0, noise_sigma, size=image.shape)
    return np.sqrt((image + n1) ** 2 + n2**2).astype(np.float32), labels


def mni_template_on_grid(shape: Sequence[int], spacing: Sequence[float]) -> tuple[Volume, Volume]:
    """The undeformed MNI152 T1 template (its own units, linear) and its brain mask (uint8 0/1: tissue labels
    1-3, nearest) on the identity-direction grid ``shape`` (z, y, x) / ``spacing`` (mm) centred on world 0."""
    mni = anatomy.load_anatomy()
    origin = centered_origin(shape, spacing)
    points = template_points(shape, spacing, origin)
    t1 = deform.sample_on_grid(mni.t1, points, order=1).astype(np.float32)
    brain = (deform.sample_on_grid(mni.labels, points, order=0) > 0).astype(np.uint8)
    geometry = dict(spacing=tuple(spacing), origin=origin, direction=np.eye(3))
    return Volume(array=t1, **geometry), Volume(array=brain, **geometry)
