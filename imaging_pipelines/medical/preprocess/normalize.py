"""Intensity normalisation: z-score and percentile clipping (MR, statistics inside a mask), HU windowing (CT).

All functions return ``(float32 Volume, NormalizeReport)``. For MR functions the statistics are taken
inside ``mask`` (``uint8`` 0/1 Volume on the image grid), :func:`otsu_foreground` of the image when
``None``; the transform is applied to every voxel. A time series is normalised with statistics pooled over
all its time points inside the (3D) mask, so signal changes over time are kept.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaging_pipelines.medical.preprocess.masks import check_mask, otsu_foreground
from imaging_pipelines.core.volume import Volume


@dataclass(frozen=True)
class NormalizeReport:
    """Statistics used by a normalisation, in input intensity units."""

    method: str
    low: float  # value mapped to the bottom of the output range (mean for zscore)
    high: float  # value mapped to the top of the output range (std for zscore)
    mask_voxels: int  # 0 when no mask was used
    output_min: float
    output_max: float


def _masked_values(volume: Volume, mask: Volume | None) -> tuple[np.ndarray, int]:
    m = check_mask(volume, mask if mask is not None else otsu_foreground(volume))
    values = volume.array[..., m] if volume.is_timeseries else volume.array[m]
    return values.astype(np.float64).ravel(), int(m.sum())


def _report(method: str, low: float, high: float, n: int, out: np.ndarray) -> NormalizeReport:
    return NormalizeReport(method, float(low), float(high), n, float(out.min()), float(out.max()))


def _rescale(array: np.ndarray, low: float, high: float, rescale_to: tuple[float, float] | None) -> np.ndarray:
    clipped = np.clip(array.astype(np.float32), low, high)
    if rescale_to is None:
        return clipped
    a, b = rescale_to
    scale = (b - a) / (high - low) if high > low else 0.0
    return (a + (clipped - low) * scale).astype(np.float32)


def zscore(volume: Volume, mask: Volume | None = None) -> tuple[Volume, NormalizeReport]:
    """``(x - mean) / std`` with mean and std of the voxels inside the mask (so the mask has mean 0, sd 1)."""
    values, n = _masked_values(volume, mask)
    mean, std = float(values.mean()), float(values.std())
    if std == 0:
        raise ValueError("zscore: intensities inside the mask are constant (std = 0)")
    out = ((volume.array.astype(np.float32) - np.float32(mean)) / np.float32(std)).astype(np.float32)
    return volume.with_array(out), _report("zscore", mean, std, n, out)


def percentile_clip(
    volume: Volume,
    mask: Volume | None = None,
    low: float = 0.5,
    high: float = 99.5,
    rescale_to: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[Volume, NormalizeReport]:
    """Clip to the ``low`` / ``high`` percentiles (0-100) of the in-mask voxels, then map them linearly to ``rescale_to``.

    ``rescale_to=None`` only clips (input units are kept).
    """
    if not 0 <= low < high <= 100:
        raise ValueError(f"percentiles must satisfy 0 <= low < high <= 100; got {low}, {high}")
    values, n = _masked_values(volume, mask)
    p_low, p_high = (float(p) for p in np.percentile(values, [low, high]))
    out = _rescale(volume.array, p_low, p_high, rescale_to)
    return volume.with_array(out), _report("percentile_clip", p_low, p_high, n, out)


def hu_window(
    volume: Volume,
    low: float = -1000.0,
    high: float = 1000.0,
    rescale_to: tuple[float, float] | None = (0.0, 1.0),
) -> tuple[Volume, NormalizeReport]:
    """Clip CT intensities to the window ``[low, high]`` (Hounsfield units) and map it linearly to ``rescale_to``.

    No mask is used. ``rescale_to=None`` only clips (HU are kept).
    """
    if not high > low:
        raise ValueError(f"hu_window needs high > low; got low={low}, high={high}")
    out = _rescale(volume.array, float(low), float(high), rescale_to)
    return volume.with_array(out), _report("hu_window", low, high, 0, out)
