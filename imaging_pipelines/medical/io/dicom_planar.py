"""Images without patient geometry (no ImagePositionPatient / ImageOrientationPatient): radiographs (CR, DX, MG),
secondary captures and other planar images.

They get the geometry dcm2niix gives them: rows along +x and columns along +y of LPS (ImageOrientationPatient
1\\0\\0\\0\\1\\0), slices along +z in InstanceNumber order, 1 mm between slices unless SpacingBetweenSlices or
SliceThickness says otherwise, and the origin chosen so that the centre of the volume is at (0, 0, 0) mm. The
pixel spacing is PixelSpacing, else ImagerPixelSpacing, else 1 mm; which one, and what it means, is recorded in
the volume attributes (``planar``), with the radiograph's presentation attributes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

PLANAR_ORIENTATION = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0)


def _number(value: Any, default: float) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        return default
    return x if np.isfinite(x) and x > 0 else default


def slice_step(ds: Any) -> float:
    """Distance between successive planar images (mm): SpacingBetweenSlices, SliceThickness, else 1."""
    return _number(ds.get("SpacingBetweenSlices"), _number(ds.get("SliceThickness"), 1.0))


def planar_position(ds: Any) -> np.ndarray:
    """Provisional position (LPS mm) of a planar image: on the z axis at InstanceNumber x slice step; the stack is
    centred later by :func:`centred_origin`."""
    try:
        instance = int(ds.get("InstanceNumber") or 0)
    except (TypeError, ValueError):
        instance = 0
    return np.array([0.0, 0.0, instance * slice_step(ds)])


def centred_origin(shape_zyx: tuple[int, int, int], spacing_xyz: tuple[float, float, float]) -> tuple[float, ...]:
    """Origin (LPS mm, centre of the first voxel) that puts the centre of the volume at (0, 0, 0)."""
    nz, ny, nx = shape_zyx
    return tuple(-(n - 1) * s / 2.0 for n, s in zip((nx, ny, nz), spacing_xyz))
