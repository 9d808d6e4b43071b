"""Random skull stripping: a generated head as a BraTS-style pre-processed scan shows it, brain only, zero outside.

Public tumour data (BraTS, the Medical Segmentation Decathlon's brain tumours) and many hospital pipelines
hand the segmenter a skull-stripped scan: every voxel outside a brain mask set to 0. A brain extraction tool's
mask is never exactly the anatomical brain: it cuts a little into the cortex or keeps a rim of CSF and
meninges. :func:`strip_mask` models that as the generated brain mask (CSF, grey and white matter, lesions)
eroded or dilated by a random margin in mm; the generator sets the image to exactly 0 outside it after the
acquisition, as the tools do on the scan as acquired. Arrays are indexed (z, y, x); lengths are in mm.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def strip_mask(brain: np.ndarray, spacing_mm: tuple[float, float, float], margin_mm: float) -> np.ndarray:
    """Boolean mask kept by a brain extraction whose boundary lies ``margin_mm`` outside ``brain`` (negative:
    inside it, an erosion). ``spacing_mm`` is the voxel size (z, y, x) in mm; distances are Euclidean."""
    brain = np.asarray(brain, dtype=bool)
    if margin_mm >= 0:
        outside = ndimage.distance_transform_edt(~brain, sampling=spacing_mm)
        return outside <= margin_mm
    inside = ndimage.distance_transform_edt(brain, sampling=spacing_mm)
    return inside > -margin_mm
