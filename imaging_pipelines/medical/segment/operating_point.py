"""A lesion model's tumour operating point: the class map read from softmax probabilities at a lesion
probability threshold (:func:`lesion_classes`, applied by :func:`~imaging_pipelines.medical.segment.unet.predict`
for a model with ``lesion_threshold``), and that threshold parsed from a command line. Probabilities are
per voxel, ``[C, ...]`` in the array order of the grid they were computed on; nothing here depends on spacing.
"""

from __future__ import annotations

import numpy as np
import torch


def parse_lesion_threshold(text: str) -> float | None:
    """A tumour operating point as written on a command line: ``"argmax"`` -> None, else a probability in
    (0, 1); anything else raises ``ValueError`` saying why."""
    if text.strip() == "argmax":
        return None
    try:
        value = float(text)
    except ValueError:
        raise ValueError(f"{text!r} is neither a probability nor 'argmax'") from None
    if not 0.0 < value < 1.0:
        raise ValueError(f"{value} is not a probability in (0, 1)")
    return value


def lesion_classes(probabilities: np.ndarray | torch.Tensor, brain_gate: bool,
                   lesion_threshold: float | None) -> np.ndarray:
    """Class map (uint8) from softmax ``probabilities`` ``[C, ...]``: the argmax when ``lesion_threshold`` is
    None. Otherwise a voxel is lesion where the summed probability of the lesion classes (1.. ; 2.. for a
    ``brain_gate`` model) is at least ``lesion_threshold``, and gets the most probable lesion class; with
    ``brain_gate`` only voxels the argmax puts inside the brain (class >= 1) can be lesion and the others there
    are brain (1), so the brain (and the atlas gate that compares with it) is the argmax's at every threshold;
    without it, non-lesion voxels are background (0)."""
    p = torch.as_tensor(probabilities)
    classes = torch.argmax(p, dim=0)
    if lesion_threshold is not None:
        first = 2 if brain_gate else 1
        lesion = p[first:].sum(dim=0) >= lesion_threshold
        which = first + torch.argmax(p[first:], dim=0)
        if brain_gate:
            classes = torch.where(classes >= 1, torch.where(lesion, which, torch.ones_like(which)), classes)
        else:
            classes = torch.where(lesion, which, torch.zeros_like(which))
    return classes.to(torch.uint8).cpu().numpy()
