"""2.5D input of a slice-wise (2D) network: each slice with its neighbours across the slice axis as channels.

A 2D model with ``slice_context`` c sees, for slice k, the slices ``k - c*step .. k + c*step`` (``step``
slices apart, indices clamped to the volume: the edge slice repeats) stacked as ``2c + 1`` input channels,
slice k in the middle. The same function makes the training samples and the inference input, so both agree:
at inference the neighbours are the adjacent slices of the grid the model segments (2 mm apart on an isotropic
2 mm grid; a thick-slice scan keeps its own slice spacing, e.g. 6.5 mm); in training a slice cut across a
case's thick-slice axis takes its neighbours one slab thickness apart (:func:`neighbour_step`).
Arrays: numpy or torch, slices along the first dimension.
"""

from __future__ import annotations

from typing import TypeVar

import numpy as np

ArrayT = TypeVar("ArrayT")


def neighbour_indices(n_slices: int, centres: np.ndarray, context: int, step: int = 1) -> np.ndarray:
    """int64 ``[len(centres), 2 context + 1]``: the slice indices stacked for each centre (clamped to
    ``0 .. n_slices - 1``)."""
    if context < 0 or step < 1:
        raise ValueError(f"slice context must be >= 0 and step >= 1; got {context}, {step}")
    offsets = step * np.arange(-context, context + 1)
    return np.clip(np.asarray(centres, dtype=np.int64)[:, None] + offsets[None, :], 0, n_slices - 1)


def stack_context(slices: ArrayT, context: int, step: int = 1) -> ArrayT:
    """``slices`` (``[n, h, w]`` numpy array or torch tensor) as ``[n, 2 context + 1, h, w]``: channel j of
    slice k is slice ``clamp(k + (j - context) * step)``."""
    n = int(slices.shape[0])  # type: ignore[attr-defined]
    idx = neighbour_indices(n, np.arange(n), context, step)
    if not isinstance(slices, np.ndarray):
        import torch

        idx = torch.as_tensor(idx, device=slices.device)  # type: ignore[attr-defined]
    return slices[idx]  # type: ignore[index]


def neighbour_step(thickness_mm: float, spacing_mm: float) -> int:
    """Slices between neighbours on a grid of ``spacing_mm`` for a slab ``thickness_mm`` thick (mm): the
    nearest whole number of grid slices, at least 1."""
    if not spacing_mm > 0:
        raise ValueError(f"spacing must be positive (mm); got {spacing_mm}")
    return max(1, int(round(float(thickness_mm) / float(spacing_mm))))
