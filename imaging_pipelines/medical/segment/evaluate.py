"""Segmentation metrics per label: overlap (Dice, IoU), HD95 in mm and volume differences in mL.

Both label maps are :class:`~imaging_pipelines.core.volume.Volume` objects that must lie on the same voxel
grid (:meth:`Volume.same_geometry`); resample the prediction onto the reference first otherwise.
Distances use the voxel spacing (mm), so anisotropic grids are handled; the direction matrix is
orthonormal and does not change distances.

Empty structures (documented conventions):

* both empty: ``dice = iou = 1.0``, ``hd95_mm = nan`` (no surfaces to compare), volumes 0;
* exactly one empty: ``dice = iou = 0.0``, ``hd95_mm = inf``;
* ``volume_difference_pct`` is relative to the reference volume: ``nan`` when the reference is empty.
"""

from __future__ import annotations

import math

import numpy as np
from scipy import ndimage

from imaging_pipelines.core.volume import Volume, require_same_grid

METRIC_NAMES = (
    "dice",
    "iou",
    "hd95_mm",
    "volume_pred_ml",
    "volume_ref_ml",
    "volume_difference_ml",
    "volume_difference_pct",
)
_FACE = ndimage.generate_binary_structure(3, 1)


def _surface(mask: np.ndarray) -> np.ndarray:
    """Boundary voxels of a boolean mask (voxels with a face neighbour outside it or on the array border)."""
    eroded = ndimage.binary_erosion(mask, structure=_FACE, border_value=0)
    return mask & ~eroded


def hd95_mm(prediction: np.ndarray, reference: np.ndarray, spacing_zyx: tuple[float, float, float]) -> float:
    """95th-percentile symmetric Hausdorff distance (mm) between two boolean ``[z, y, x]`` masks.

    Distances go from each surface voxel of one mask to the nearest surface voxel of the other (Euclidean,
    with ``spacing_zyx`` in mm); the result is the larger of the two directed 95th percentiles (the MONAI
    ``compute_hausdorff_distance(percentile=95)`` convention). See the module docstring for empty masks.
    """
    p, r = prediction.astype(bool), reference.astype(bool)
    if not p.any() and not r.any():
        return math.nan
    if not p.any() or not r.any():
        return math.inf
    sp, sr = _surface(p), _surface(r)
    dist_to_r = ndimage.distance_transform_edt(~sr, sampling=spacing_zyx)
    dist_to_p = ndimage.distance_transform_edt(~sp, sampling=spacing_zyx)
    return float(max(np.percentile(dist_to_r[sp], 95), np.percentile(dist_to_p[sr], 95)))


def segmentation_metrics(
    prediction: Volume, reference: Volume, labels: list[int] | None = None
) -> dict[int, dict[str, float]]:
    """Per-label metrics of ``prediction`` against ``reference`` (label Volumes on the same grid).

    ``labels`` defaults to every non-zero value in either map. For each label: ``dice``, ``iou``,
    ``hd95_mm`` (see :func:`hd95_mm`), ``volume_pred_ml``, ``volume_ref_ml`` (voxel count x product of
    spacings / 1000), ``volume_difference_ml`` (pred - ref) and ``volume_difference_pct``
    (100 x (pred - ref) / ref). Raises ValueError when the grids differ or a map is a time series.
    """
    if reference.is_timeseries:
        raise ValueError(f"reference must be a 3D label volume; got shape {reference.array.shape}")
    require_same_grid(reference, prediction, "prediction", "resample the prediction onto the reference first")
    pred, ref = np.asarray(prediction.array), np.asarray(reference.array)
    if labels is None:
        labels = sorted(int(v) for v in np.union1d(np.unique(pred), np.unique(ref)) if v != 0)
    voxel_ml = float(np.prod(reference.spacing)) / 1000.0
    spacing_zyx = tuple(reference.spacing[::-1])
    out: dict[int, dict[str, float]] = {}
    for label in labels:
        p, r = pred == label, ref == label
        n_p, n_r = int(p.sum()), int(r.sum())
        n_both = int(np.count_nonzero(p & r))
        if n_p + n_r == 0:
            dice = iou = 1.0
        else:
            dice = 2.0 * n_both / (n_p + n_r)
            iou = n_both / (n_p + n_r - n_both)
        v_p, v_r = n_p * voxel_ml, n_r * voxel_ml
        out[int(label)] = {
            "dice": float(dice),
            "iou": float(iou),
            "hd95_mm": hd95_mm(p, r, spacing_zyx),
            "volume_pred_ml": v_p,
            "volume_ref_ml": v_r,
            "volume_difference_ml": v_p - v_r,
            "volume_difference_pct": 100.0 * (v_p - v_r) / v_r if n_r else math.nan,
        }
    return out


def cohort_summary(per_case: dict[str, dict[int, dict[str, float]]]) -> dict[int, dict[str, dict[str, float]]]:
    """Mean, median and standard deviation of every metric per label over cases.

    ``per_case`` maps a case id to the output of :func:`segmentation_metrics`. Returns
    ``{label: {metric: {"mean", "median", "std", "n"}}}``; NaN values (e.g. HD95 of a label absent from
    both maps) are left out and ``n`` counts the values used; an ``inf`` HD95 (a missed or spurious
    structure) is kept, so the mean and std become inf and the median shows whether it is typical.
    """
    values: dict[int, dict[str, list[float]]] = {}
    for case_metrics in per_case.values():
        for label, metrics in case_metrics.items():
            for name, value in metrics.items():
                values.setdefault(int(label), {}).setdefault(name, []).append(float(value))
    summary: dict[int, dict[str, dict[str, float]]] = {}
    for label, metrics in sorted(values.items()):
        summary[label] = {}
        for name, vals in metrics.items():
            arr = np.asarray([v for v in vals if not math.isnan(v)], dtype=float)
            if arr.size == 0:
                summary[label][name] = {"mean": math.nan, "median": math.nan, "std": math.nan, "n": 0}
                continue
            with np.errstate(invalid="ignore"):
                summary[label][name] = {
                    "mean": float(np.mean(arr)),
                    "median": float(np.median(arr)),
                    "std": float(np.std(arr)) if np.all(np.isfinite(arr)) else math.inf,
                    "n": int(arr.size),
                }
    return summary
