"""Reorientation and resampling of Volumes (SimpleITK), in LPS world millimetres.

* :func:`reorient` permutes / flips axes only (exact, no interpolation).
* :func:`resample_to_spacing` changes the voxel size over the same field of view, with Gaussian
  anti-aliasing before downsampling.
* :func:`resample_like` puts a volume onto another volume's grid, optionally through a transform.

Time series (``[t, z, y, x]``) are processed one time point at a time with the same geometry.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Literal

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.core.orientation import validate_orientation
from imaging_pipelines.core.volume import Volume

Interpolator = Literal["linear", "nearest", "bspline"]

_INTERPOLATORS = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor, "bspline": sitk.sitkBSpline}
FWHM_PER_SIGMA = 2.0 * math.sqrt(2.0 * math.log(2.0))  # 2.355


def _per_timepoint(volume: Volume, fn) -> Volume:
    """Apply ``fn`` (3D Volume -> 3D Volume) to each time point and restack; 3D volumes pass straight through."""
    if not volume.is_timeseries:
        return fn(volume)
    outs = [fn(volume.timepoint(t)) for t in range(volume.n_timepoints)]
    first = outs[0]
    return Volume(
        array=np.stack([o.array for o in outs]),
        spacing=first.spacing,
        origin=first.origin,
        direction=first.direction,
        time_step=volume.time_step,
        warnings=volume.warnings,
        attributes=dict(volume.attributes),
    )


def _from_sitk_like(image: sitk.Image, volume: Volume) -> Volume:
    """A 3D Volume from a SimpleITK image, keeping ``volume``'s warnings and attributes."""
    return Volume.from_sitk(image, warnings=volume.warnings, attributes=dict(volume.attributes))


def reorient(volume: Volume, orientation: str = "LPS") -> Volume:
    """Permute and flip the voxel axes so that index axes (i, j, k) point toward ``orientation`` (exact).

    Convention: each letter names the world direction the corresponding index axis (i, j, k) points
    *toward* (increasing index moves toward it). This is the convention of SimpleITK's ``DICOMOrient`` and
    also of :meth:`Volume.orientation_code` (nibabel's ``aff2axcodes``): after ``reorient(v, "LPS")``,
    ``orientation_code()`` returns ``"LPS"`` and the direction matrix is the identity (world is LPS).
    A RAS-stored NIfTI (direction ``diag(-1, -1, 1)`` in LPS) has code ``"RAS"``.
    (ITK's legacy ``SpatialOrientation`` enum names such as ``RAI`` use the opposite "from" convention.)

    Voxel values are only moved, never interpolated; every voxel keeps its world position. For oblique
    acquisitions each axis goes to the closest anatomical direction (the direction matrix stays oblique).
    """
    code = validate_orientation(orientation)
    return _per_timepoint(volume, lambda v: _from_sitk_like(sitk.DICOMOrient(v.to_sitk(), code), v))


def antialias_sigmas_mm(old_spacing: Sequence[float], new_spacing: Sequence[float]) -> tuple[float, ...]:
    """Gaussian sigma (mm) per axis that brings the resolution from ``old`` to ``new`` spacing by FWHM matching.

    ``sigma = sqrt(max(new^2 - old^2, 0)) / 2.355``: zero on axes that are not downsampled.
    """
    return tuple(
        math.sqrt(max(n * n - o * o, 0.0)) / FWHM_PER_SIGMA for o, n in zip(old_spacing, new_spacing, strict=True)
    )


def resample_to_spacing(
    volume: Volume,
    spacing_mm: float | Sequence[float],
    interpolator: Interpolator = "linear",
    antialias: bool = True,
) -> Volume:
    """Resample onto voxels of ``spacing_mm`` (i, j, k order, mm; one number = isotropic) over the same field of view.

    The new grid has the same origin (centre of the first voxel) and direction; its size along each axis is
    ``round(old_size * old_spacing / new_spacing)`` (at least 1), so the physical extent (size x spacing) is
    kept to within half a new voxel. With ``antialias`` and a non-nearest interpolator, axes that are
    downsampled are first smoothed with a Gaussian of :func:`antialias_sigmas_mm`. ``"nearest"`` (labels)
    never smooths and keeps the dtype; ``"linear"`` and ``"bspline"`` return float32.
    """
    if isinstance(spacing_mm, (int, float)):
        spacing_mm = (float(spacing_mm),) * 3
    new_spacing = tuple(float(s) for s in spacing_mm)
    if len(new_spacing) != 3 or any(not s > 0 for s in new_spacing):
        raise ValueError(f"spacing_mm must be three positive numbers (i, j, k mm); got {spacing_mm}")
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}; got {interpolator!r}")
    old_size = volume.spatial_shape[::-1]  # (i, j, k)
    new_size = [max(1, int(round(n * o / s))) for n, o, s in zip(old_size, volume.spacing, new_spacing)]
    sigmas = antialias_sigmas_mm(volume.spacing, new_spacing)
    kernel_width = max(32, 2 * math.ceil(4 * max(s / o for s, o in zip(sigmas, volume.spacing))) + 1)

    def one(v: Volume) -> Volume:
        image = v.to_sitk()
        if interpolator != "nearest":
            image = sitk.Cast(image, sitk.sitkFloat32)
            if antialias and any(s > 0 for s in sigmas):
                image = sitk.DiscreteGaussian(image, [s * s for s in sigmas], kernel_width, 0.01, True)
        out = sitk.Resample(
            image,
            new_size,
            sitk.Transform(),
            _INTERPOLATORS[interpolator],
            v.origin,
            new_spacing,
            tuple(v.direction.ravel()),
            0.0,
            image.GetPixelID(),
        )
        return _from_sitk_like(out, v)

    return _per_timepoint(volume, one)


def resample_like(
    volume: Volume,
    reference: Volume,
    transform: sitk.Transform | None = None,
    interpolator: Interpolator = "linear",
    default_value: float = 0.0,
) -> Volume:
    """Resample ``volume`` onto ``reference``'s 3D grid (shape, spacing, origin, direction).

    ``transform`` follows the ITK convention: it maps points of the reference (fixed) space to the
    volume's (moving) space, in LPS mm, e.g. the result of a registration with ``reference`` as fixed
    image. ``None`` = identity (the two volumes share world coordinates). Voxels that map outside
    ``volume`` get ``default_value``. ``"nearest"`` keeps the dtype; other interpolators return float32.
    A time series is resampled time point by time point and keeps its ``time_step``.
    """
    if interpolator not in _INTERPOLATORS:
        raise ValueError(f"interpolator must be one of {sorted(_INTERPOLATORS)}; got {interpolator!r}")
    reference_image = reference.timepoint(0).to_sitk()

    def one(v: Volume) -> Volume:
        image = v.to_sitk()
        if interpolator != "nearest":
            image = sitk.Cast(image, sitk.sitkFloat32)
        out = sitk.Resample(
            image,
            reference_image,
            transform if transform is not None else sitk.Transform(),
            _INTERPOLATORS[interpolator],
            float(default_value),
            image.GetPixelID(),
        )
        return _from_sitk_like(out, v)

    return _per_timepoint(volume, one)
