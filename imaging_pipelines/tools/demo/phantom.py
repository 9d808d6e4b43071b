"""Synthetic phantoms (numpy only) with known ground-truth label maps.

Both phantoms are evaluated at the **world** (patient LPS, millimetres) position of every
voxel centre, with the anatomy centred on world (0, 0, 0).  Two grids with different
orientation / spacing but the same ``seed`` therefore image the *same* synthetic patient
(same lesions), which makes them usable as registration / reader ground truth.

Geometry arguments follow :class:`imaging_pipelines.core.volume.Volume`: ``shape`` is array order
``(z, y, x)``; ``spacing`` (mm), ``origin`` (mm, LPS) and the columns of ``direction`` are in
index order ``(i, j, k)``.  ``origin=None`` centres the grid on world (0, 0, 0).

Units
-----
* :func:`brain_like_phantom`: arbitrary MR signal units (a.u.), roughly 0-1000, float32.
* :func:`ct_like_phantom`: Hounsfield units (air -1000, fat -100, soft tissue ~40,
  liver ~60, bone ~700), float32.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

# Brain label values (uint8).
BRAIN_BACKGROUND, BRAIN_SHELL, BRAIN_CSF, BRAIN_GM, BRAIN_WM, BRAIN_LESION = 0, 1, 2, 3, 4, 5
BRAIN_LABELS = {0: "background", 1: "scalp_skull", 2: "csf", 3: "grey_matter", 4: "white_matter", 5: "lesion"}
# CT label values (uint8).
CT_AIR, CT_SOFT_TISSUE, CT_BONE, CT_LIVER, CT_LESION = 0, 1, 2, 3, 4
CT_LABELS = {0: "air", 1: "soft_tissue", 2: "bone", 3: "liver", 4: "lesion"}

# Mean intensity per brain label for each contrast (a.u.).
_MR_CONTRAST = {
    "T1": {BRAIN_SHELL: 280.0, BRAIN_CSF: 150.0, BRAIN_GM: 450.0, BRAIN_WM: 650.0, BRAIN_LESION: 260.0},
    "T2": {BRAIN_SHELL: 200.0, BRAIN_CSF: 900.0, BRAIN_GM: 550.0, BRAIN_WM: 400.0, BRAIN_LESION: 800.0},
}


def centered_origin(
    shape: Sequence[int], spacing: Sequence[float], direction: np.ndarray | None = None
) -> tuple[float, float, float]:
    """LPS origin (mm) that puts the centre of a ``(z, y, x)`` grid at world (0, 0, 0)."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    n_ijk = np.asarray(shape[::-1], dtype=float)
    return tuple(float(v) for v in -(d @ (np.asarray(spacing, dtype=float) * (n_ijk - 1) / 2.0)))


def world_coordinates(
    shape: Sequence[int],
    spacing: Sequence[float],
    origin: Sequence[float] | None = None,
    direction: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """LPS world coordinates (mm) of every voxel centre, each array of shape ``(z, y, x)``."""
    d = np.eye(3) if direction is None else np.asarray(direction, dtype=float).reshape(3, 3)
    o = np.asarray(centered_origin(shape, spacing, d) if origin is None else origin, dtype=float)
    s = np.asarray(spacing, dtype=float)
    k, j, i = (np.arange(n, dtype=np.float64) for n in shape)
    m = d * s  # column c = world step of index axis c
    ii, jj, kk = i[None, None, :], j[None, :, None], k[:, None, None]
    return tuple(o[r] + m[r, 0] * ii + m[r, 1] * jj + m[r, 2] * kk for r in range(3))  # type: ignore[return-value]


def _smooth_bias(rng: np.random.Generator, x: np.ndarray, y: np.ndarray, z: np.ndarray, scale: float) -> np.ndarray:
    """Smooth multiplicative field ~ 1 +/- 15 % (low-order polynomial in normalised coordinates)."""
    u, v, w = x / scale, y / scale, z / scale
    c = rng.uniform(-0.12, 0.12, size=6)
    return np.exp(c[0] * u + c[1] * v + c[2] * w + c[3] * u * v + c[4] * v * w + c[5] * (u * u - w * w))


def _rotation_matrix(angles_deg: Sequence[float]) -> np.ndarray:
    """Rotation about x, then y, then z (degrees) as a 3x3 matrix acting on LPS column vectors."""
    ax, ay, az = np.deg2rad(np.asarray(angles_deg, dtype=float))
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _lesion_centres(rng: np.random.Generator, n: int, radii_mm: np.ndarray, inner: float) -> list[tuple[np.ndarray, float]]:
    """``n`` random spheres (centre mm, radius mm) inside ``inner`` x the ellipsoid ``radii_mm``."""
    out = []
    for _ in range(n):
        direction = rng.normal(size=3)
        direction /= np.linalg.norm(direction)
        centre = direction * rng.uniform(0.15, inner) * radii_mm
        out.append((centre, float(rng.uniform(5.0, 11.0))))
    return out


def brain_like_phantom(
    shape: Sequence[int] = (48, 64, 64),
    spacing: Sequence[float] = (3.0, 3.0, 3.5),
    seed: int = 0,
    *,
    origin: Sequence[float] | None = None,
    direction: np.ndarray | None = None,
    contrast: str = "T1",
    noise_sigma: float = 15.0,
    head_scale: Sequence[float] = (1.0, 1.0, 1.0),
    with_bias: bool = True,
    with_lesions: bool = True,
    head_pose: tuple[Sequence[float], Sequence[float]] | None = None,
    min_lesions: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Head-like MR phantom: ``(image float32 a.u., labels uint8)``, both shaped ``shape`` (z, y, x).

    Ellipsoidal head (semi-axes 68 x 85 x 70 mm, L-R x A-P x S-I, times ``head_scale``) with a
    scalp/skull shell, a CSF layer and two ventricles, a wavy grey-matter ribbon, white matter, 0-2
    spherical lesions (radius 5-11 mm), a smooth multiplicative bias field and Rician noise
    (``noise_sigma`` a.u.). Labels: see :data:`BRAIN_LABELS`.  ``contrast`` is ``"T1"`` or ``"T2"``.
    ``with_bias=False, with_lesions=False, noise_sigma=0`` gives a clean template (the demo atlas).
    ``min_lesions`` raises the drawn lesion count (0-2) to at least that many.
    ``head_pose = (rotation_deg, translation_mm)`` places the head rotated about the world x, y, z axes
    (degrees, applied in that order) and shifted (LPS mm), as a patient lying differently in the scanner.
    """
    if contrast not in _MR_CONTRAST:
        raise ValueError(f"contrast must be one of {sorted(_MR_CONTRAST)}; got {contrast!r}")
    rng = np.random.default_rng(seed)
    radii = np.array([68.0, 85.0, 70.0]) * np.asarray(head_scale, dtype=float)
    lesions = _lesion_centres(rng, max(int(rng.integers(0, 3)), min_lesions), radii, inner=0.55)
    if not with_lesions:
        lesions = []
    bias_rng = np.random.default_rng([seed, 1])
    x, y, z = world_coordinates(shape, spacing, origin, direction)
    if head_pose is not None:  # head coordinates = R^T (world - t)
        rotation = _rotation_matrix(head_pose[0])
        shifted = np.stack([x - head_pose[1][0], y - head_pose[1][1], z - head_pose[1][2]])
        x, y, z = np.einsum("ji,j...->i...", rotation, shifted)

    r = np.sqrt((x / radii[0]) ** 2 + (y / radii[1]) ** 2 + (z / radii[2]) ** 2)
    theta = np.arctan2(y, x)
    phi = np.arctan2(z, np.hypot(x, y))
    r_gyri = r * (1.0 + 0.035 * np.sin(7 * theta) * np.cos(5 * phi))  # folded GM/WM boundary

    labels = np.zeros(r.shape, dtype=np.uint8)
    labels[r <= 1.0] = BRAIN_SHELL
    labels[r <= 0.88] = BRAIN_CSF
    labels[r <= 0.84] = BRAIN_GM
    labels[r_gyri <= 0.70] = BRAIN_WM
    for side in (-1.0, 1.0):  # lateral ventricles
        rv = np.sqrt(((x - side * 9.0) / 6.0) ** 2 + ((y + 5.0) / 22.0) ** 2 + ((z - 8.0) / 9.0) ** 2)
        labels[rv <= 1.0] = BRAIN_CSF
    for centre, radius in lesions:
        inside = (x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2 <= radius**2
        labels[inside & (r <= 0.84)] = BRAIN_LESION

    means = np.zeros(len(BRAIN_LABELS), dtype=np.float64)
    for lab, value in _MR_CONTRAST[contrast].items():
        means[lab] = value
    image = means[labels] * (_smooth_bias(bias_rng, x, y, z, scale=80.0) if with_bias else 1.0)
    noise_rng = np.random.default_rng([seed, 2])
    n1 = noise_rng.normal(0.0, noise_sigma, size=image.shape)
    n2 = noise_rng.normal(0.0, noise_sigma, size=image.shape)
    image = np.sqrt((image + n1) ** 2 + n2**2)  # Rician magnitude
    return image.astype(np.float32), labels


def ct_like_phantom(
    shape: Sequence[int] = (40, 64, 64),
    spacing: Sequence[float] = (5.5, 5.5, 5.0),
    seed: int = 0,
    *,
    origin: Sequence[float] | None = None,
    direction: np.ndarray | None = None,
    noise_sigma: float = 8.0,
) -> tuple[np.ndarray, np.ndarray]:
    """Abdomen-like CT phantom in Hounsfield units: ``(image float32 HU, labels uint8)``.

    Elliptic cylinder body along S-I (semi-axes 150 x 110 mm, L-R x A-P) of soft tissue (40 HU)
    under a 12 mm fat layer (-100 HU), a posterior spine and a broken rib ring (bone 700 HU), a
    liver (60 HU) on the patient's right holding one hypodense lesion (10 HU), in air (-1000 HU),
    plus Gaussian noise (``noise_sigma`` HU).  Values are clipped to [-1024, 3071].
    Labels: see :data:`CT_LABELS`.
    """
    rng = np.random.default_rng(seed)
    x, y, z = world_coordinates(shape, spacing, origin, direction)
    a, b = 150.0, 110.0
    r = np.sqrt((x / a) ** 2 + (y / b) ** 2)
    body = r <= 1.0
    labels = np.zeros(r.shape, dtype=np.uint8)
    labels[body] = CT_SOFT_TISSUE
    hu = np.full(r.shape, -1000.0)
    hu[body] = 40.0
    fat = body & (np.sqrt((x / (a - 12.0)) ** 2 + (y / (b - 12.0)) ** 2) > 1.0)
    hu[fat] = -100.0

    # Liver: ellipsoid on the patient's right (LPS: right = -x), anterior-ish.
    liver_c = np.array([-65.0, -5.0, 20.0])
    rl = np.sqrt(((x - liver_c[0]) / 60.0) ** 2 + ((y - liver_c[1]) / 55.0) ** 2 + ((z - liver_c[2]) / 70.0) ** 2)
    liver = (rl <= 1.0) & body & ~fat
    labels[liver] = CT_LIVER
    hu[liver] = 60.0
    offset = rng.normal(size=3) * np.array([10.0, 8.0, 12.0])
    lesion_c, lesion_r = liver_c + offset, float(rng.uniform(12.0, 20.0))
    lesion = liver & ((x - lesion_c[0]) ** 2 + (y - lesion_c[1]) ** 2 + (z - lesion_c[2]) ** 2 <= lesion_r**2)
    labels[lesion] = CT_LESION
    hu[lesion] = 10.0

    # Spine (posterior: LPS +y) and a broken rib ring.
    spine = (x**2 + (y - 70.0) ** 2) <= 18.0**2
    ring = (r > 0.80) & (r <= 0.86) & (np.cos(8 * np.arctan2(y, x)) > 0.2)
    bone = (spine | ring) & body
    labels[bone] = CT_BONE
    hu[bone] = 700.0

    hu += rng.normal(0.0, noise_sigma, size=hu.shape)
    return np.clip(hu, -1024.0, 3071.0).astype(np.float32), labels
