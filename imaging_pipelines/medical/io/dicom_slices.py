"""One record per 2D DICOM image (a single-frame file, one frame of a multi-frame file, or one mosaic tile).

Geometry is in patient LPS millimetres, as DICOM stores it:

* ``row_cos``: unit vector along a row, i.e. the direction of increasing column index (NIfTI/ITK ``i``);
* ``col_cos``: unit vector down a column, the direction of increasing row index (``j``);
* ``normal``: the direction in which slices are sorted (``row_cos x col_cos`` unless a Siemens CSA
  ``SliceNormalVector`` says otherwise);
* ``position``: centre of the first transmitted pixel (ImagePositionPatient);
* ``pixel_spacing``: DICOM order ``(between rows, between columns)`` in mm.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaging_pipelines.core.small_matrix import norm3


@dataclass(slots=True)
class PixelSource:
    """A file's decoded frames, decoded at most once until released (``frames()`` -> array (n_frames, rows, cols)).

    ``pixels_at`` (a :class:`~imaging_pipelines.medical.io.dicom_slim.PixelLocation`): the dataset holds no pixel
    bytes; they are read again from the file when the frames are decoded."""

    path: str
    dataset: Any
    _frames: np.ndarray | None = None
    pixels_at: Any = None

    def frames(self) -> np.ndarray:
        if self._frames is None:
            from .dicom_pixels import decode_frames

            ds = self.dataset if self.pixels_at is None else self.pixels_at.dataset(self.dataset)
            self._frames = decode_frames(ds)
        return self._frames

    def release(self) -> None:
        self._frames = None


@dataclass(slots=True)
class SliceRecord:
    """Geometry, scaling and ordering keys of one 2D image; pixels come from ``source``."""

    source: PixelSource
    frame: int
    tile: int | None  # mosaic tile index, or None
    n_tiles: int  # number of tiles in the mosaic (0 if not a mosaic)
    rows: int
    cols: int
    row_cos: np.ndarray
    col_cos: np.ndarray
    normal: np.ndarray
    position: np.ndarray
    pixel_spacing: tuple[float, float]
    slope: float
    intercept: float
    time_key: tuple
    acquisition: int | None
    split_key: tuple  # everything that must be equal within one stack
    split_labels: dict[str, str] = field(default_factory=dict)  # human label of each split_key component
    nominal_spacing: float | None = None  # SpacingBetweenSlices or SliceThickness (mm), for 1-slice stacks
    multiframe: bool = False
    private_scale: float | None = None  # Philips private scale slope SS (2005,100E), see dicom_intensity
    synthetic_geometry: bool = False  # no ImagePositionPatient/ImageOrientationPatient: see dicom_planar
    tile_cols: int = 0  # tiles per row of a grid image (0: ceil(sqrt(n_tiles)), the Siemens mosaic layout)
    gradient: tuple | None = None  # (b-value s/mm^2, LPS unit vector or None), see dicom_diffusion
    flip_rows: bool = False  # stored upside down (GE epi_pepolar reversed volumes): rows reversed on reading
    series_offset: int = 0  # added to SeriesNumber (dcm2niix: +1000 for GE reversed-polarity volumes)
    slice_time: float | None = None  # acquisition time within the volume (s), GE RTIA timer

    @property
    def path(self) -> str:
        return self.source.path

    @property
    def name(self) -> str:
        label = os.path.basename(self.source.path)
        return f"{label}[frame {self.frame + 1}]" if self.multiframe else label

    def pixels(self) -> np.ndarray:
        """The stored (unscaled) 2D pixel array (rows, cols)."""
        frame = self.source.frames()[self.frame]
        if self.flip_rows:
            frame = frame[::-1]
        if self.tile is None:
            return frame
        per_side = self.tile_cols or int(np.ceil(np.sqrt(self.n_tiles)))
        r, c = divmod(self.tile, per_side)
        return frame[r * self.rows:(r + 1) * self.rows, c * self.cols:(c + 1) * self.cols]


def orientation_key(row_cos: np.ndarray, col_cos: np.ndarray, normal: np.ndarray) -> tuple:
    """Hashable orientation, rounded so that floating-point noise (1e-4) does not split a stack."""
    return tuple(np.round(np.concatenate([row_cos, col_cos, normal]), 3).tolist())


def orientation_label(normal: np.ndarray) -> str:
    """'axial', 'coronal', 'sagittal' or 'oblique' from the slice normal (LPS)."""
    axis = int(np.argmax(np.abs(normal)))
    if abs(normal[axis]) < 0.8:
        return "oblique"
    return ("sagittal", "coronal", "axial")[axis]


def unit_cosines(iop: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Row cosine, column cosine and their cross product (normal) from a 6-value ImageOrientationPatient."""
    try:
        v = np.asarray([float(x) for x in iop], dtype=float)
    except (TypeError, ValueError, OverflowError):
        raise ValueError("ImageOrientationPatient holds non-numeric values") from None
    if v.shape != (6,):
        raise ValueError(f"ImageOrientationPatient must have 6 values, got {len(v)}")
    if not np.all(np.isfinite(v)) or np.any(np.abs(v) > 1e6):
        raise ValueError("ImageOrientationPatient holds non-finite or out-of-range values")
    row, col = v[:3], v[3:]
    nr, nc = norm3(row), norm3(col)
    if nr < 1e-6 or nc < 1e-6:
        raise ValueError("ImageOrientationPatient has a zero vector")
    row, col = row / nr, col / nc
    normal = np.cross(row, col)
    nn = norm3(normal)
    if nn < 1e-6:
        raise ValueError("ImageOrientationPatient row and column cosines are parallel")
    return row, col, normal / nn
