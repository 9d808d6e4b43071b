"""Lesion mimics for the generator: thin, bright, branching curves (enhancing vessels) in the brain and CSF.

On a post-contrast T1 scan the cortical and deep veins, the venous sinuses and the choroid plexus enhance as
a tumour's rim does. A network that has only seen tumours brighter than the brain learns "bright = tumour"
and calls those structures tumour. The generator can paint, with probability
:attr:`MimicParams.probability`, a network of curves drawn as the voxels where two independent smooth random
fields are both near zero (the intersection of two random surfaces is a set of curves), inside the allowed
region (CSF, grey and white matter, never the lesion). Their mean intensity is drawn as a hyper-intense
tumour rim's is (:func:`mimic_mean`), so brightness alone no longer separates tumour from vessel: shape must.
They stay background in the lesion label and brain in the brain mask.

Lengths in mm; the grid is the generator's isotropic working grid (``spacing_mm``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage


@dataclass(frozen=True)
class MimicParams:
    """Lesion-mimic parameters (lengths in mm; 0 probability: never drawn, the generator's draws unchanged)."""

    probability: float = 0.0  # chance that a case has mimics
    bend_mm: tuple[float, float] = (6.0, 16.0)  # smoothing sd of the two fields: how far a curve runs straight
    share: tuple[float, float] = (0.004, 0.02)  # fraction of the allowed region the curves cover


def curve_mask(rng: np.random.Generator, region: np.ndarray, spacing_mm: float, params: MimicParams) -> np.ndarray:
    """Boolean mask of random curves inside ``region`` (bool, the working grid): the ``share`` of the region's
    voxels where ``max(|f1|, |f2|)`` is smallest, ``f1``, ``f2`` Gaussian noise smoothed with sd ``bend_mm``
    (both drawn from ``rng``). Empty when the region is."""
    sigma = float(rng.uniform(*params.bend_mm)) / spacing_mm
    share = float(rng.uniform(*params.share))
    fields = [ndimage.gaussian_filter(rng.standard_normal(region.shape).astype(np.float32), sigma) for _ in range(2)]
    if not region.any():
        return np.zeros(region.shape, bool)
    closeness = np.maximum(np.abs(fields[0] / fields[0].std()), np.abs(fields[1] / fields[1].std()))
    threshold = np.quantile(closeness[region], share)
    return region & (closeness <= threshold)


def mimic_mean(rng: np.random.Generator, gm: float, wm: float, contrast: tuple[float, float]) -> float:
    """Mean intensity of the mimics (0..1 scale): ``max(gm, wm) + c``, ``c`` uniform in ``contrast``: the range
    of a hyper-intense tumour rim (:func:`~.intensity.lesion_mean`)."""
    return max(gm, wm) + float(rng.uniform(*contrast))
