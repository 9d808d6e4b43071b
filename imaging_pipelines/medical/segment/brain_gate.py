"""The brain gate of a brain-gated lesion model: lesion voxels only inside the brain.

A brain-gated model predicts 0 outside the brain, 1 brain, 2.. lesion classes (SynthStrip-style brain
extraction learnt with the lesion, from the same generated cases). :func:`gate_to_brain` keeps the largest
connected component (6-connectivity, in 3D on the array's (z, y, x) grid) of the voxels of any class >= 1, with
its holes filled, and sets every voxel outside it to class 0, so bright extra-cerebral tissue (scalp fat,
orbits, muscle) cannot come out as lesion. An anatomical prior (the registered MNI152 brain,
:mod:`~imaging_pipelines.medical.segment.atlas_brain`) can narrow the brain first: slices through the neck
or face, which a slice-wise network may call brain, then fall outside it. No dagster import here.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage


def brain_component(inside: np.ndarray) -> np.ndarray:
    """bool: the largest 6-connected component of ``inside`` (bool, any dimension), holes filled; all False
    when ``inside`` is empty."""
    labels, count = ndimage.label(np.asarray(inside, dtype=bool))
    if count == 0:
        return np.zeros(labels.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return ndimage.binary_fill_holes(labels == int(np.argmax(sizes)))


def gate_to_brain(classes: np.ndarray, prior: np.ndarray | None = None) -> np.ndarray:
    """``classes`` (integer class map: 0 outside the brain, 1 brain, >= 2 lesion) with every voxel outside
    :func:`brain_component` of ``classes >= 1`` set to 0 (same dtype and shape). ``prior`` (bool, same shape;
    e.g. :func:`~imaging_pipelines.medical.segment.atlas_brain.trusted_atlas_brain`) limits the brain to
    where it is True before the component is taken."""
    out = np.array(classes, copy=True)
    inside = out >= 1
    if prior is not None:
        inside &= np.asarray(prior, dtype=bool)
    out[~brain_component(inside)] = 0
    return out


# below this the network has not found a whole adult brain (about 1100-1700 mL with its CSF)
MIN_PLAUSIBLE_BRAIN_ML = 500.0


def brain_volume_warning(brain_ml: float) -> str | None:
    """A warning when the network's brain (``brain_ml``, mL, after the gate) is smaller than
    :data:`MIN_PLAUSIBLE_BRAIN_ML`, else ``None``. Seen on skull-stripped scans (BraTS-style, zero outside
    the brain), which the shipped synthetic lesion models read as "outside the brain" and so find no lesion in
    (bench/README.md, run 22), and on scans covering only part of the head."""
    if brain_ml >= MIN_PLAUSIBLE_BRAIN_ML:
        return None
    return (f"the network found only {brain_ml:.0f} mL of brain (an adult brain is about 1100-1700 mL): lesions are "
            f"likely missed. A skull-stripped scan? The synthetic lesion models are trained on whole heads and "
            f"read a stripped brain as outside the head; give the scan with its skull, or expect misses. "
            f"A scan of part of the head also gives this")
