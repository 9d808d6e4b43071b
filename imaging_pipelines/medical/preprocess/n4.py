"""N4 bias-field correction (Tustison et al. 2010) with SimpleITK, fitted on a shrunk image.

The B-spline bias field is fitted on the image shrunk by ``shrink_factor`` (fast), then evaluated at full
resolution with ``GetLogBiasFieldAsImage(full_resolution_image)``, and the full-resolution image is divided
by ``exp(log_bias)``. This is the recipe of the SimpleITK N4 example; the corrected image keeps every detail
of the input, only the smooth multiplicative field is removed.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.medical.preprocess.masks import check_mask, otsu_foreground
from imaging_pipelines.core.volume import Volume


@dataclass(frozen=True)
class N4Report:
    """What N4 did. ``cv_*`` is the coefficient of variation (std / mean) of the intensities inside the mask."""

    cv_before: float
    cv_after: float
    runtime_s: float
    shrink_factor: int
    iterations: tuple[int, ...]
    elapsed_iterations_last_level: int
    convergence_last_level: float
    mask_voxels: int


def coefficient_of_variation(array: np.ndarray, mask: np.ndarray) -> float:
    """std / mean of ``array[mask]`` (float64 arithmetic)."""
    values = array[mask]  # accumulated in float64 without a float64 copy of the values
    return float(values.std(dtype=np.float64) / values.mean(dtype=np.float64))


def n4_bias_correction(
    volume: Volume,
    mask: Volume | None = None,
    shrink_factor: int = 4,
    iterations: Sequence[int] = (50, 50, 50, 50),
    convergence: float = 1e-3,
    spline_order: int = 3,
    fitting_levels: int | None = None,
) -> tuple[Volume, N4Report]:
    """Remove a smooth multiplicative bias field from a 3D MR volume; returns (float32 volume, report).

    Parameters
    ----------
    mask:
        Voxels used to fit the field (``uint8`` 0/1 Volume on the image grid). Default: :func:`otsu_foreground`.
        Voxels with intensity <= 0 are always left out of the fit (N4 works on log intensities).
    shrink_factor:
        Integer shrink of every axis (voxels) before fitting; the field is still evaluated at full resolution.
    iterations:
        Maximum iterations per fitting level; its length is the number of fitting levels (the B-spline
        control-point mesh doubles from one level to the next).
    fitting_levels:
        Optional check / broadcast: ``None`` = ``len(iterations)``; a one-element ``iterations`` is repeated
        ``fitting_levels`` times; any other mismatch raises ValueError.
    convergence, spline_order:
        N4 convergence threshold and B-spline order.

    4D volumes raise ValueError: N4 is not supported on time series (correct a reference volume instead).
    """
    if volume.is_timeseries:
        raise ValueError(
            f"N4 bias correction does not support 4D (time-series) volumes; got shape {volume.array.shape}"
        )
    iterations = tuple(int(i) for i in iterations)
    if fitting_levels is not None:
        if len(iterations) == 1:
            iterations = iterations * fitting_levels
        elif len(iterations) != fitting_levels:
            raise ValueError(f"fitting_levels={fitting_levels} but {len(iterations)} iteration counts {iterations}")
    if not iterations or min(iterations) < 1:
        raise ValueError(f"iterations must be one or more positive counts; got {iterations}")
    if shrink_factor < 1:
        raise ValueError(f"shrink_factor must be >= 1; got {shrink_factor}")

    start = time.perf_counter()
    array = np.asarray(volume.array, dtype=np.float32)  # read only: no copy when it is float32 already
    fit_mask = check_mask(volume, mask if mask is not None else otsu_foreground(volume), "N4 mask")
    fit_mask &= array > 0

    image = volume.with_array(array).to_sitk()  # one copy of the voxels, with the volume's geometry
    mask_image = sitk.GetImageFromArray(fit_mask.astype(np.uint8))
    mask_image.CopyInformation(image)

    factors = [min(int(shrink_factor), n) for n in image.GetSize()]
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations(list(iterations))
    n4.SetConvergenceThreshold(float(convergence))
    n4.SetSplineOrder(int(spline_order))
    n4.Execute(sitk.Shrink(image, factors), sitk.Shrink(mask_image, factors))

    log_bias = sitk.GetArrayFromImage(n4.GetLogBiasFieldAsImage(image))
    corrected = np.divide(array, np.exp(log_bias, out=log_bias), dtype=np.float32)
    report = N4Report(
        cv_before=coefficient_of_variation(array, fit_mask),
        cv_after=coefficient_of_variation(corrected, fit_mask),
        runtime_s=time.perf_counter() - start,
        shrink_factor=int(shrink_factor),
        iterations=iterations,
        elapsed_iterations_last_level=int(n4.GetElapsedIterations()),
        convergence_last_level=float(n4.GetCurrentConvergenceMeasurement()),
        mask_voxels=int(fit_mask.sum()),
    )
    return volume.with_array(corrected), report
