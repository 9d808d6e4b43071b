"""Apply registration transforms: resample images (linear) and label maps (nearest) onto a fixed grid.

Conventions (see :mod:`imaging_pipelines.medical.register.result`): a transform maps points of the FIXED image's
physical space (LPS mm) to the MOVING image's physical space, so resampling the moving image on the fixed
grid through it gives the moving image "warped" into fixed space. Displacement fields are arrays
(z, y, x, 3) of LPS mm offsets, components in (x, y, z) order, with
``point_in_moving = point_in_fixed + displacement``.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume


def _grid_of(volume: Volume) -> dict:
    """Size (i, j, k), spacing, origin and direction of a Volume, as keyword arguments for SimpleITK."""
    z, y, x = volume.spatial_shape
    return {
        "size": (x, y, z),
        "outputSpacing": volume.spacing,
        "outputOrigin": volume.origin,
        "outputDirection": tuple(volume.direction.ravel()),
    }


def resample(moving: Volume, fixed: Volume, transform: sitk.Transform | None = None, *,
             interpolator: int = sitk.sitkLinear, default_value: float = 0.0) -> Volume:
    """``moving`` sampled on ``fixed``'s grid at ``transform(p)`` for every fixed-grid point ``p``.

    ``transform=None`` is the identity (the images are only put on the same grid). Linear interpolation
    returns float32; any other interpolator keeps the moving array's dtype (bool becomes uint8 and back).
    """
    transform = sitk.Transform(3, sitk.sitkIdentity) if transform is None else transform
    array = moving.array
    is_bool = array.dtype == bool
    if is_bool:
        array = array.astype(np.uint8)
    elif interpolator == sitk.sitkLinear:
        array = array.astype(np.float32, copy=False)
    image = moving.with_array(array).to_sitk()
    grid = _grid_of(fixed)
    warped = sitk.Resample(
        image, grid["size"], transform, interpolator, grid["outputOrigin"], grid["outputSpacing"],
        grid["outputDirection"], default_value, image.GetPixelID(),
    )
    out = sitk.GetArrayFromImage(warped)
    return fixed.with_array(out.astype(bool) if is_bool else out)


def transform_of(result: RegistrationResult, fixed: Volume) -> sitk.Transform:
    """The result's SimpleITK transform, or one built from its displacement field on ``fixed``'s grid."""
    if result.transform is not None:
        return result.transform
    if result.displacement is None:
        raise ValueError(f"registration result '{result.method}' has neither a transform nor a displacement field")
    return displacement_field_transform(result.displacement, fixed)


def warp_image(moving: Volume, fixed: Volume, result: RegistrationResult) -> Volume:
    """An intensity image in moving space resampled onto the fixed grid through ``result`` (linear, float32)."""
    return resample(moving, fixed, transform_of(result, fixed), interpolator=sitk.sitkLinear)


def warp_labels(labels: Volume, fixed: Volume, result: RegistrationResult) -> Volume:
    """A label map in moving space resampled onto the fixed grid (nearest neighbour; label values and dtype kept)."""
    return resample(labels, fixed, transform_of(result, fixed), interpolator=sitk.sitkNearestNeighbor)


def displacement_field(transform: sitk.Transform, fixed: Volume) -> np.ndarray:
    """``transform(p) - p`` sampled on the fixed grid: float32 array (z, y, x, 3), LPS mm, (x, y, z) components."""
    grid = _grid_of(fixed)
    field = sitk.TransformToDisplacementField(
        transform, sitk.sitkVectorFloat64, grid["size"], grid["outputOrigin"], grid["outputSpacing"],
        grid["outputDirection"],
    )
    return sitk.GetArrayFromImage(field).astype(np.float32)


def displacement_field_transform(displacement: np.ndarray, fixed: Volume) -> sitk.DisplacementFieldTransform:
    """A SimpleITK DisplacementFieldTransform from a (z, y, x, 3) LPS mm field sampled on ``fixed``'s grid."""
    field = sitk.GetImageFromArray(np.asarray(displacement, dtype=np.float64), isVector=True)
    field.SetSpacing(fixed.spacing)
    field.SetOrigin(fixed.origin)
    field.SetDirection(tuple(fixed.direction.ravel()))
    return sitk.DisplacementFieldTransform(field)  # takes ownership of the image's buffer
