"""Classic filters on a Volume (SimpleITK): gradient magnitude, sigmoid contrast, grey-level morphology.

* :func:`gradient_magnitude`: ``|grad I|`` in intensity units per **millimetre** (central differences with
  the voxel spacing; with ``sigma_mm`` a recursive-Gaussian derivative of that scale in mm).
* :func:`sigmoid_contrast`: ``min + (max - min) / (1 + exp(-(I - beta) / alpha))``; ``alpha`` (width) and
  ``beta`` (centre) in intensity units.
* :func:`morphology`: grey-level ``open`` / ``close`` / ``white_tophat`` (I - open(I): small bright
  details) / ``black_tophat`` (close(I) - I: small dark details) with a ball or box structuring element of
  radius ``radius_mm`` per axis, rounded to whole voxels along each axis (at least 1).

Geometry (LPS mm) is kept; the output is float32. Time series are filtered one 3D time point at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Literal

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.core.volume import Volume

MORPHOLOGY_OPERATIONS = ("open", "close", "white_tophat", "black_tophat")


def _per_timepoint(volume: Volume, fn: Callable[[sitk.Image], sitk.Image]) -> Volume:
    """Apply ``fn`` to each 3D time point as a float32 SimpleITK image with the volume's spacing."""

    def one(array: np.ndarray) -> np.ndarray:
        image = sitk.GetImageFromArray(np.ascontiguousarray(array, dtype=np.float32))
        image.SetSpacing(volume.spacing)
        return sitk.GetArrayFromImage(fn(image)).astype(np.float32)

    if volume.is_timeseries:
        return volume.with_array(np.stack([one(volume.array[t]) for t in range(volume.n_timepoints)]))
    return volume.with_array(one(volume.array))


def gradient_magnitude(volume: Volume, sigma_mm: float | None = None) -> Volume:
    """Gradient magnitude in intensity units per mm; ``sigma_mm`` > 0 smooths with a Gaussian of that scale."""
    if sigma_mm is None:
        return _per_timepoint(volume, lambda im: sitk.GradientMagnitude(im, True))
    if sigma_mm <= 0:
        raise ValueError(f"gradient_magnitude sigma_mm must be > 0; got {sigma_mm}")
    return _per_timepoint(volume, lambda im: sitk.GradientMagnitudeRecursiveGaussian(im, float(sigma_mm)))


def sigmoid_contrast(volume: Volume, alpha: float, beta: float, output_min: float = 0.0,
                     output_max: float = 1.0) -> Volume:
    """Sigmoid intensity mapping centred on ``beta`` with width ``alpha`` (intensity units; alpha < 0 inverts)."""
    if alpha == 0:
        raise ValueError("sigmoid alpha must not be 0")
    return _per_timepoint(volume, lambda im: sitk.Sigmoid(im, float(alpha), float(beta), float(output_max),
                                                          float(output_min)))


def radius_in_voxels(volume: Volume, radius_mm: float) -> list[int]:
    """``radius_mm`` as whole voxels along (i, j, k), at least 1 each."""
    if radius_mm <= 0:
        raise ValueError(f"morphology radius_mm must be > 0; got {radius_mm}")
    return [max(1, int(round(radius_mm / s))) for s in volume.spacing]


def morphology(volume: Volume, operation: Literal["open", "close", "white_tophat", "black_tophat"],
               radius_mm: float, kernel: Literal["ball", "box"] = "ball") -> Volume:
    """Grey-level morphology with a structuring element of ``radius_mm`` (mm, per axis, see the module notes)."""
    if operation not in MORPHOLOGY_OPERATIONS:
        raise ValueError(f"unknown morphology operation {operation!r}; known: {list(MORPHOLOGY_OPERATIONS)}")
    kernels = {"ball": sitk.sitkBall, "box": sitk.sitkBox}
    if kernel not in kernels:
        raise ValueError(f"unknown morphology kernel {kernel!r}; known: {sorted(kernels)}")
    radius = radius_in_voxels(volume, radius_mm)
    filters = {
        "open": sitk.GrayscaleMorphologicalOpening,
        "close": sitk.GrayscaleMorphologicalClosing,
        "white_tophat": sitk.WhiteTopHat,
        "black_tophat": sitk.BlackTopHat,
    }
    fn = filters[operation]
    return _per_timepoint(volume, lambda im: fn(im, radius, kernels[kernel]))
