"""Foreground masks: Otsu threshold, largest connected component, holes filled.

The mask is a :class:`~imaging_pipelines.core.volume.Volume` of ``uint8`` 0/1 on the same voxel grid as the
image, so it can be passed to N4, to the intensity normalisations, and carried through resampling.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from imaging_pipelines.core.volume import Volume, require_same_grid

# In-plane (y, x) connectivity only: ``binary_fill_holes`` with this structure fills holes slice by slice.
_IN_PLANE = np.zeros((3, 3, 3), dtype=bool)
_IN_PLANE[1] = ndimage.generate_binary_structure(2, 1)


def otsu_foreground(volume: Volume, closing_radius_vox: int = 2) -> Volume:
    """Foreground mask (``uint8`` 0/1, same grid) of a 3D volume; a time series uses its temporal mean.

    Steps: Otsu threshold of the intensities (voxels above the threshold are foreground), the largest
    3D connected component (face connectivity), a binary closing with a ball of ``closing_radius_vox``
    voxels (0 disables it), then hole filling in 3D and in every axial (z) slice.
    """
    array = volume.array.astype(np.float32)
    if volume.is_timeseries:
        array = array.mean(axis=0)
    if float(array.max()) == float(array.min()):
        return _mask_volume(volume, np.zeros(volume.spatial_shape, dtype=bool))
    image = sitk.GetImageFromArray(array)
    foreground = sitk.OtsuThreshold(image, 0, 1)  # below threshold -> 0, above -> 1
    components = sitk.RelabelComponent(sitk.ConnectedComponent(foreground), sortByObjectSize=True)
    largest = components == 1
    if closing_radius_vox > 0:
        largest = sitk.BinaryMorphologicalClosing(largest, [closing_radius_vox] * 3, sitk.sitkBall)
    largest = sitk.BinaryFillhole(largest)
    mask = ndimage.binary_fill_holes(sitk.GetArrayFromImage(largest) > 0, structure=_IN_PLANE)
    return _mask_volume(volume, mask)


def _mask_volume(volume: Volume, mask: np.ndarray) -> Volume:
    return Volume(array=mask.astype(np.uint8), spacing=volume.spacing, origin=volume.origin, direction=volume.direction)


def check_mask(volume: Volume, mask: Volume, what: str = "mask") -> np.ndarray:
    """The mask as a boolean [z, y, x] array; raises ValueError unless it lies on the volume's grid."""
    require_same_grid(volume, mask, what, "resample it first with resample.resample_like(mask, image, interpolator='nearest')")
    m = mask.array > 0
    if not m.any():
        raise ValueError(f"{what} is empty")
    return m
