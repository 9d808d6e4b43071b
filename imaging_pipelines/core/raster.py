"""The `Raster` value type: a (bands, y, x) pixel array with its georeferencing.

Conventions (GDAL / rasterio, used everywhere in :mod:`imaging_pipelines.remote_sensing`):

* ``array`` is indexed ``[band, row, col]``; band order is the file's band order (band 1 first).
* ``transform`` maps pixel *corner* coordinates ``(col, row)`` to CRS coordinates ``(x, y)``:
  ``x = c + a*col + b*row``, ``y = f + d*col + e*row``; pixel ``(0, 0)`` covers ``[0, 1) x [0, 1)``,
  so its centre is at ``transform @ (0.5, 0.5)``. North-up grids have ``b == d == 0`` and ``e < 0``.
* ``crs`` is a :class:`rasterio.crs.CRS` (or WKT / ``"EPSG:n"`` string); coordinates are in the CRS
  units (metres for UTM / Web Mercator, degrees for EPSG:4326). ``None`` means "no CRS in the file".
* ``nodata`` is the fill value of invalid pixels (may be NaN); float NaN pixels are always invalid.
* ``band_names`` default to ``b1 .. bn``; readers take them from the GeoTIFF band descriptions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import NamedTuple

import numpy as np
from affine import Affine
from rasterio.crs import CRS
from rasterio.windows import Window


class PixelWindow(NamedTuple):
    """A pixel rectangle ``rows [row_off, row_off+height) x cols [col_off, col_off+width)``."""

    row_off: int
    col_off: int
    height: int
    width: int

    @property
    def slices(self) -> tuple[slice, slice]:
        """``(row_slice, col_slice)`` for indexing the last two axes of an array."""
        return slice(self.row_off, self.row_off + self.height), slice(self.col_off, self.col_off + self.width)

    def to_rasterio(self) -> Window:
        """The same rectangle as a :class:`rasterio.windows.Window` (``col_off, row_off, width, height``)."""
        return Window(self.col_off, self.row_off, self.width, self.height)


def window_transform(transform: Affine, row_off: int, col_off: int) -> Affine:
    """Transform of a sub-grid starting at pixel ``(row_off, col_off)``, computed as GDAL does.

    ``c' = c + col_off*a + row_off*b`` and ``f' = f + col_off*d + row_off*e``; an offset of ``(0, 0)``
    gives back ``transform`` bit for bit (rasterio's ``windows.transform`` adds and subtracts ``c``).
    """
    t = transform
    return Affine(t.a, t.b, t.c + col_off * t.a + row_off * t.b, t.d, t.e, t.f + col_off * t.d + row_off * t.e)


@lru_cache(maxsize=256)
def nodata_in_dtype(nodata: float | None, dtype: np.dtype):
    """``nodata`` as a scalar of ``dtype``, or ``None`` when it is unset, NaN or not representable."""
    if nodata is None or math.isnan(nodata):
        return None
    dtype = np.dtype(dtype)
    if dtype.kind in "iub":
        info = np.iinfo(dtype) if dtype.kind != "b" else None
        if nodata != int(nodata) or (info is not None and not info.min <= nodata <= info.max):
            return None
        return dtype.type(int(nodata))
    return dtype.type(nodata)


def is_rotated(transform: Affine) -> bool:
    """True when the transform has rotation or shear (``b`` or ``d`` non-zero)."""
    return transform.b != 0.0 or transform.d != 0.0


@dataclass(frozen=True, eq=False)
class Raster:
    """A multi-band image on a georeferenced pixel grid (see the module docstring for conventions)."""

    array: np.ndarray
    crs: CRS | str | None
    transform: Affine
    nodata: float | None = None
    band_names: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        array = np.asarray(self.array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.ndim != 3:
            raise ValueError(f"Raster array must be (bands, y, x), got shape {array.shape}")
        object.__setattr__(self, "array", array)
        if not isinstance(self.transform, Affine):
            object.__setattr__(self, "transform", Affine(*tuple(self.transform)[:6]))
        names = list(self.band_names) or [f"b{i + 1}" for i in range(array.shape[0])]
        if len(names) != array.shape[0]:
            raise ValueError(f"{len(names)} band names for {array.shape[0]} bands")
        object.__setattr__(self, "band_names", names)
        if self.nodata is not None:
            object.__setattr__(self, "nodata", float(self.nodata))

    # -- shape and geometry -------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(bands, height, width)`` in pixels."""
        return self.array.shape  # type: ignore[return-value]

    @property
    def count(self) -> int:
        return self.array.shape[0]

    @property
    def height(self) -> int:
        return self.array.shape[1]

    @property
    def width(self) -> int:
        return self.array.shape[2]

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    @property
    def crs_obj(self) -> CRS | None:
        """``crs`` as a :class:`rasterio.crs.CRS` (``None`` when unknown)."""
        if self.crs is None or isinstance(self.crs, CRS):
            return self.crs
        return CRS.from_user_input(self.crs)

    @property
    def rotated(self) -> bool:
        return is_rotated(self.transform)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` of the outer pixel corners, in CRS units (any transform)."""
        t = self.transform
        corners = [(0, 0), (self.width, 0), (0, self.height), (self.width, self.height)]
        xs = [t.c + t.a * c + t.b * r for c, r in corners]
        ys = [t.f + t.d * c + t.e * r for c, r in corners]
        return min(xs), min(ys), max(xs), max(ys)

    @property
    def resolution(self) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in CRS units (absolute values)."""
        t = self.transform
        return math.hypot(t.a, t.d), math.hypot(t.b, t.e)

    def window(self, row_off: int, col_off: int, height: int, width: int) -> Raster:
        """The sub-raster ``rows [row_off, row_off+height) x cols [col_off, col_off+width)`` (a view).

        Its transform is :func:`window_transform` of this one, so geo-coordinates of shared pixels agree.
        """
        inside = 0 <= row_off and 0 <= col_off and 0 <= height and 0 <= width
        if not inside or row_off + height > self.height or col_off + width > self.width:
            raise ValueError(
                f"window rows {row_off}+{height}, cols {col_off}+{width} outside a {self.height}x{self.width} raster"
            )
        rows, cols = PixelWindow(row_off, col_off, height, width).slices
        transform = window_transform(self.transform, row_off, col_off)
        return replace(self, array=self.array[:, rows, cols], transform=transform)

    # -- values -------------------------------------------------------------------------
    def band_index(self, name: str) -> int:
        """0-based index of a band by name (case-insensitive); ``KeyError`` lists the known names."""
        lowered = [n.lower() for n in self.band_names]
        try:
            return lowered.index(name.lower())
        except ValueError:
            raise KeyError(f"no band {name!r}; bands are {self.band_names}") from None

    def band(self, name: str) -> np.ndarray:
        """The (y, x) array of a band by name."""
        return self.array[self.band_index(name)]

    def invalid_mask(self, per_band: bool = False) -> np.ndarray:
        """True where a pixel is nodata (or NaN): (y, x) if any band is invalid, or (bands, y, x)."""
        invalid = np.zeros(self.array.shape, dtype=bool)
        if self.array.dtype.kind in "fc":
            invalid |= np.isnan(self.array)
        value = nodata_in_dtype(self.nodata, self.array.dtype)
        if value is not None:
            invalid |= self.array == value
        return invalid if per_band else invalid.any(axis=0)

    def valid_mask(self) -> np.ndarray:
        """(y, x) True where every band holds a valid value."""
        return ~self.invalid_mask()

    def with_array(self, array: np.ndarray, **changes) -> Raster:
        """A raster on the same grid with another array (and optionally other nodata / band_names)."""
        array = np.asarray(array)
        if array.ndim == 2:
            array = array[np.newaxis]
        if array.shape[1:] != self.array.shape[1:]:
            raise ValueError(f"array {array.shape} does not fit the {self.height}x{self.width} grid")
        if "band_names" not in changes and array.shape[0] != self.count:
            changes["band_names"] = []
        return replace(self, array=array, **changes)
