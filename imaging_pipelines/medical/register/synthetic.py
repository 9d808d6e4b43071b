"""Known deformations for registration ground truth (tests and benchmarks).

Displacements follow :mod:`imaging_pipelines.medical.register.result`: arrays (z, y, x, 3) of LPS millimetres,
components (x, y, z).
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from imaging_pipelines.core.volume import Volume


def downsample_isotropic(volume: Volume, spacing_mm: float) -> Volume:
    """Gaussian anti-aliasing (sigma = sqrt(new^2 - old^2) / 2.355 mm) then linear resampling to isotropic
    ``spacing_mm`` (float32), keeping origin and direction."""
    image = sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)
    sigmas = [np.sqrt(max(spacing_mm**2 - s**2, 0.0)) / 2.355 for s in image.GetSpacing()]
    if max(sigmas) > 0:
        image = sitk.SmoothingRecursiveGaussian(image, sigmas)
    size = [int(round(n * s / spacing_mm)) for n, s in zip(image.GetSize(), image.GetSpacing())]
    out = sitk.Resample(image, size, sitk.Transform(), sitk.sitkLinear, image.GetOrigin(), (spacing_mm,) * 3,
                        image.GetDirection(), 0.0, sitk.sitkFloat32)
    return Volume.from_sitk(out)


def smooth_random_field(volume: Volume, *, max_mm: float, control_mm: float, seed: int) -> np.ndarray:
    """A smooth random displacement on ``volume``'s grid: uniform random vectors on a ~``control_mm`` grid,
    cubic-spline upsampled, scaled so the largest displacement is ``max_mm``."""
    rng = np.random.default_rng(seed)
    shape = volume.spatial_shape
    coarse = [max(2, round(n * s / control_mm) + 1) for n, s in zip(shape, volume.spacing[::-1])]
    field = np.empty(shape + (3,))
    for c in range(3):
        zoomed = ndimage.zoom(rng.uniform(-1, 1, coarse), [n / k for n, k in zip(shape, coarse)], order=3,
                              mode="nearest", grid_mode=True)
        field[..., c] = zoomed[: shape[0], : shape[1], : shape[2]]
    return field * (max_mm / np.linalg.norm(field, axis=-1).max())
