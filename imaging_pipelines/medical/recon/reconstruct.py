"""Reconstructing a sinogram stack into a :class:`Volume` on a declared grid (LPS millimetres).

Methods: ``fbp`` (filtered back-projection, :func:`imaging_pipelines.medical.recon.fbp.fbp_slice`, filter
``ramp`` | ``shepp-logan`` | ``cosine`` | ``hamming`` | ``hann``) and ``sart`` (scikit-image
``iradon_sart``, ``sart_iterations`` passes, each pass starting from the previous one).

Each slice ``[angle, detector]`` becomes one ``[y, x]`` plane of ``n_det x n_det`` pixels; the Volume's
array is ``[k, j, i] = [slice, y, x]``, spacing ``(pixel_size_mm, pixel_size_mm, slice_spacing_mm)``.
Default geometry: direction identity (i -> L, j -> P, k -> S) and the rotation axis (pixel ``n_det // 2``
of each plane) on world x = y = 0, the middle slice at z = 0; a declared ``origin_mm`` / ``direction``
replaces it. Values are line-integral units per detector pixel, as the sinogram gives them (no HU
calibration).
"""

from __future__ import annotations

from typing import Literal

import numpy as np

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.recon.fbp import fbp_slice
from imaging_pipelines.medical.recon.sinogram_io import SinogramStack

RECON_METHODS = ("fbp", "sart")


def sart_slice(sinogram: np.ndarray, angles_deg: np.ndarray, iterations: int = 3, relaxation: float = 0.15) -> np.ndarray:
    """SART (scikit-image ``iradon_sart``) of one ``[angle, detector]`` sinogram, ``iterations`` passes."""
    from skimage.transform import iradon_sart

    if iterations < 1:
        raise ValueError(f"sart iterations must be >= 1; got {iterations}")
    sino_t = np.ascontiguousarray(np.asarray(sinogram, dtype=np.float64).T)
    image = None
    for _ in range(iterations):
        image = iradon_sart(sino_t, theta=np.asarray(angles_deg, dtype=np.float64), image=image,
                            relaxation=relaxation)
    return image


def default_origin(shape_zyx: tuple[int, int, int], spacing: tuple[float, float, float],
                   direction: np.ndarray) -> tuple[float, float, float]:
    """LPS origin putting index (n_det // 2, n_det // 2, (n_slices - 1) / 2) at world (0, 0, 0)."""
    n_slices, n_y, n_x = shape_zyx
    centre_index = np.array([n_x // 2, n_y // 2, (n_slices - 1) / 2.0])
    return tuple(float(v) for v in -(direction @ (np.asarray(spacing) * centre_index)))


def reconstruct(
    stack: SinogramStack,
    method: Literal["fbp", "sart"] = "fbp",
    filter_name: str = "ramp",
    sart_iterations: int = 3,
    pixel_size_mm: float | None = None,
) -> Volume:
    """Reconstruct every slice of ``stack``; ``pixel_size_mm`` overrides the stack's declared pixel size."""
    if method not in RECON_METHODS:
        raise ValueError(f"unknown reconstruction method {method!r}; known: {list(RECON_METHODS)}")
    if method == "fbp":
        planes = [fbp_slice(s, stack.angles_deg, filter_name) for s in stack.array]
    else:
        planes = [sart_slice(s, stack.angles_deg, sart_iterations) for s in stack.array]
    array = np.stack(planes).astype(np.float32)
    pixel = float(pixel_size_mm if pixel_size_mm is not None else stack.pixel_size_mm)
    if not np.isfinite(pixel) or pixel <= 0:
        raise ValueError(f"pixel size must be a positive number of mm; got {pixel}")
    spacing = (pixel, pixel, float(stack.slice_spacing_mm))
    direction = np.eye(3) if stack.direction is None else np.asarray(stack.direction, dtype=np.float64)
    origin = stack.origin_mm if stack.origin_mm is not None else default_origin(array.shape, spacing, direction)
    attributes = {"reconstruction": {"method": method, "filter": filter_name if method == "fbp" else None,
                                     "sart_iterations": sart_iterations if method == "sart" else None,
                                     "n_angles": int(stack.angles_deg.size),
                                     "angle_range_deg": [float(stack.angles_deg.min()),
                                                         float(stack.angles_deg.max())]}}
    return Volume(array=array, spacing=spacing, origin=origin, direction=direction, attributes=attributes)
