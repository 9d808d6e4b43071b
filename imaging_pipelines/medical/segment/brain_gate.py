"""The brain gate of a brain-gated lesion model: lesion voxels only inside the brain.

A brain-gated model predicts 0 outside the brain, 1 brain, 2.. lesion classes (SynthStrip-style brain
extraction learnt with the lesion, from the same generated cases). :func:`gate_to_brain` keeps the largest
connected component (6-connectivity, in 3D on the array's (z, y, x) grid) of the voxels of any class >= 1, with
its holes filled, and sets every voxel outside it to class 0, so bright extra-cerebral tissue (scalp fat,
orbits, muscle) cannot come out as lesion. An anatomical prior (the registered MNI152 brain,
:mod:`~imaging_pipelines.medical.segment.atlas_brain`) can narrow the brain first: slices through the neck
or face, which a slice-wise network may call brain, then fall outside it. With a prior, each lesion component
(6-connected, inside the network's own brain component) is judged whole: kept, also where it crosses the
prior's edge, when at least :data:`LESION_INSIDE_SHARE` of its voxels lie inside the prior-limited brain, else
dropped (a lesion at the brain's edge is not cut by an affine registration's mismatch; a component mostly
outside it, e.g. at the dura or in the face, goes). No dagster import here.
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


# chosen on the held-out generated cases only (bench/README.md, 2026-12-06 diagnosis): 0.5 / 0.75 / 0.9 / 1.0
LESION_INSIDE_SHARE = 0.75


def gate_to_brain(classes: np.ndarray, prior: np.ndarray | None = None,
                  lesion_share: float = LESION_INSIDE_SHARE) -> np.ndarray:
    """``classes`` (integer class map: 0 outside the brain, 1 brain, >= 2 lesion) with every voxel outside
    :func:`brain_component` of ``classes >= 1`` set to 0 (same dtype and shape). ``prior`` (bool, same shape;
    e.g. :func:`~imaging_pipelines.medical.segment.atlas_brain.trusted_atlas_brain`) limits the brain to
    where it is True before the component is taken; each lesion component of the network's own brain is then
    kept whole when a share ``lesion_share`` (0..1) of its voxels lies inside that brain, else set to brain
    (inside it) or 0 (outside)."""
    out = np.array(classes, copy=True)
    own = brain_component(out >= 1)
    if prior is None:
        out[~own] = 0
        return out
    brain = brain_component((out >= 1) & np.asarray(prior, dtype=bool))
    components, count = ndimage.label((out >= 2) & own)
    index = np.arange(1, count + 1)
    sizes = np.maximum(ndimage.sum_labels(components > 0, components, index), 1)
    inside = ndimage.sum_labels(brain, components, index) / sizes
    kept = np.concatenate([[False], inside >= lesion_share])[components]
    out[(out >= 2) & ~kept & brain] = 1
    out[~brain & ~kept] = 0
    return out
