"""Random anisotropic acquisition: what a scanner with thick slices along one axis would record, resampled
back onto the working grid (SynthSeg's resolution randomisation).

The image is resampled (through world LPS coordinates, SimpleITK, with FWHM-matched Gaussian anti-aliasing:
:func:`imaging_pipelines.medical.preprocess.resample.resample_to_spacing`) to a grid whose spacing along
index axis ``axis`` (0 = i / x, 1 = j / y, 2 = k / z) is ``thickness_mm``, over the same field of view and
origin, then linearly back onto the original grid. Thicknesses are in mm.

:func:`slab_footprint` gives the label a reader draws on such a scan: on a thick slice a lesion that fills
only part of the slab still shows (dimmer, partial volume) and is outlined, so a label on the thick-slice grid
covers every voxel whose slab holds a visible share of lesion, not only the lesion at the slab's centre.
"""

from __future__ import annotations

import numpy as np

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.preprocess.resample import resample_like, resample_to_spacing


def thick_slice_volume(volume: Volume, axis: int, thickness_mm: float) -> Volume:
    """``volume`` as acquired with slices ``thickness_mm`` thick along index ``axis`` (other axes unchanged)."""
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (i, j, k); got {axis}")
    if not thickness_mm > 0:
        raise ValueError(f"slice thickness must be positive (mm); got {thickness_mm}")
    spacing = list(volume.spacing)
    spacing[axis] = max(float(thickness_mm), spacing[axis])
    return resample_to_spacing(volume, spacing, interpolator="linear", antialias=True)


def simulate_acquisition(volume: Volume, axis: int, thickness_mm: float) -> tuple[Volume, Volume]:
    """(the thick-slice acquisition, it resampled linearly back onto ``volume``'s grid as float32)."""
    low = thick_slice_volume(volume, axis, thickness_mm)
    back = resample_like(low, volume, interpolator="linear", default_value=float(np.min(low.array)))
    return low, back


def slab_footprint(mask: Volume, axis: int, thickness_mm: float, share: float) -> np.ndarray:
    """bool ``(z, y, x)``: ``mask`` (0/1 Volume) or where the mask, acquired like the image
    (:func:`simulate_acquisition`: slices ``thickness_mm`` thick along index ``axis``, back on ``mask``'s grid),
    fills at least ``share`` (0..1) of the slab: the lesion as outlined on the thick-slice scan."""
    if not 0.0 < share <= 1.0:
        raise ValueError(f"slab share must lie in (0, 1]; got {share}")
    inside = np.asarray(mask.array) > 0
    fraction = simulate_acquisition(mask.with_array(inside.astype(np.float32)), axis, thickness_mm)[1]
    return inside | (np.asarray(fraction.array) >= share)
