"""Reading a sinogram stack (``.npy`` or TIFF) and its JSON sidecar of angles and grid.

Layout: ``[angle, detector]`` for one slice or ``[slice, angle, detector]`` for a stack (the slices are
parallel planes along the rotation axis). The sidecar is ``<file stem>.json`` beside the file, or given
explicitly::

    {"angles_deg": [0.0, 1.0, ...] | {"start": 0, "stop": 180, "count": 180},
     "pixel_size_mm": 0.5, "slice_spacing_mm": 1.0,
     "origin_mm": [x, y, z], "direction": [[...], [...], [...]]}

``stop`` is exclusive (``count`` angles evenly spaced in ``[start, stop)``). ``origin_mm`` (LPS, the centre
of voxel (0, 0, 0)) and ``direction`` (columns = index axes i, j, k in LPS) are optional; by default the
rotation axis passes through the centre of the grid at world (0, 0, 0) and the axes are i -> L, j -> P,
k -> S. Every problem raises :class:`ImagingInputError` naming the file.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np

from imaging_pipelines.core.errors import ImagingInputError


@dataclass(frozen=True)
class SinogramStack:
    """Sinograms ``[slice, angle, detector]`` with angles (degrees) and the declared grid (mm, LPS)."""

    array: np.ndarray
    angles_deg: np.ndarray
    pixel_size_mm: float = 1.0
    slice_spacing_mm: float = 1.0
    origin_mm: tuple[float, float, float] | None = None
    direction: np.ndarray | None = None


def parse_angles(spec: Any, source: str) -> np.ndarray:
    """Angles in degrees from a list, a ``{"start", "stop", "count"}`` mapping or a ``"start:stop:count"`` text."""
    if isinstance(spec, str):
        parts = spec.split(":")
        if len(parts) != 3:
            raise ImagingInputError(source, f"angles {spec!r}: use START:STOP:COUNT (degrees, stop exclusive)")
        try:
            spec = {"start": float(parts[0]), "stop": float(parts[1]), "count": int(parts[2])}
        except ValueError:
            raise ImagingInputError(source, f"angles {spec!r}: START:STOP:COUNT must be numbers") from None
    if isinstance(spec, dict):
        missing = {"start", "stop", "count"} - set(spec)
        if missing or set(spec) - {"start", "stop", "count"}:
            raise ImagingInputError(source, f"angles_deg mapping needs exactly start, stop, count; got {sorted(spec)}")
        count = spec["count"]
        if not isinstance(count, int) or isinstance(count, bool) or count < 1:
            raise ImagingInputError(source, f"angles_deg count must be a positive integer; got {count!r}")
        try:
            return np.linspace(float(spec["start"]), float(spec["stop"]), count, endpoint=False)
        except (TypeError, ValueError):
            raise ImagingInputError(source, "angles_deg start and stop must be numbers") from None
    if isinstance(spec, list) and spec:
        try:
            angles = np.asarray(spec, dtype=np.float64)
        except (TypeError, ValueError):
            raise ImagingInputError(source, "angles_deg must be a list of numbers") from None
        if angles.ndim != 1 or not np.all(np.isfinite(angles)):
            raise ImagingInputError(source, "angles_deg must be a flat list of finite numbers")
        return angles
    raise ImagingInputError(source, "angles_deg is missing or empty: give a list or {start, stop, count}")


def _positive(raw: dict, key: str, source: str) -> float:
    value = raw.get(key, 1.0)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not np.isfinite(value) or value <= 0:
        raise ImagingInputError(source, f"{key} must be a positive number of millimetres; got {value!r}")
    return float(value)


def read_sidecar(path: str | PathLike) -> dict[str, Any]:
    """The sidecar's fields, validated: ``angles_deg`` (array), ``pixel_size_mm``, ``slice_spacing_mm``,
    ``origin_mm`` and ``direction`` (or None)."""
    source = str(path)
    try:
        raw = json.loads(Path(path).read_text())
    except OSError as exc:
        raise ImagingInputError(source, f"cannot read the sinogram sidecar: {exc.strerror or exc}") from None
    except json.JSONDecodeError as exc:
        raise ImagingInputError(source, f"sidecar is not valid JSON: {exc}") from None
    if not isinstance(raw, dict):
        raise ImagingInputError(source, "sidecar must be a JSON object")
    known = {"angles_deg", "pixel_size_mm", "slice_spacing_mm", "origin_mm", "direction"}
    if set(raw) - known:
        raise ImagingInputError(source, f"unknown sidecar field(s) {sorted(set(raw) - known)}; known: {sorted(known)}")
    out: dict[str, Any] = {
        "angles_deg": parse_angles(raw.get("angles_deg"), source),
        "pixel_size_mm": _positive(raw, "pixel_size_mm", source),
        "slice_spacing_mm": _positive(raw, "slice_spacing_mm", source),
        "origin_mm": None,
        "direction": None,
    }
    if raw.get("origin_mm") is not None:
        origin = np.asarray(raw["origin_mm"], dtype=object)
        if origin.shape != (3,) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in origin):
            raise ImagingInputError(source, f"origin_mm must be three numbers (LPS mm); got {raw['origin_mm']!r}")
        out["origin_mm"] = tuple(float(v) for v in origin)
    if raw.get("direction") is not None:
        try:
            direction = np.asarray(raw["direction"], dtype=np.float64)
        except (TypeError, ValueError):
            direction = np.zeros(0)
        if direction.shape != (3, 3) or not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ImagingInputError(source, "direction must be an orthonormal 3x3 matrix (columns = i, j, k in LPS)")
        out["direction"] = direction
    return out


def read_sinogram_array(path: str | PathLike) -> np.ndarray:
    """The sinogram voxels as float64 ``[slice, angle, detector]`` from ``.npy`` or ``.tif`` / ``.tiff``."""
    path = Path(path)
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix in (".tif", ".tiff"):
            import tifffile

            array = tifffile.imread(path)
        else:
            raise ImagingInputError(path, f"unsupported sinogram format {suffix!r}: use .npy or .tif/.tiff")
    except ImagingInputError:
        raise
    except (OSError, ValueError) as exc:
        raise ImagingInputError(path, f"cannot read the sinogram: {exc}") from None
    if array.ndim == 2:
        array = array[None]
    if array.ndim != 3 or 0 in array.shape:
        raise ImagingInputError(path, f"sinogram must be [angle, detector] or [slice, angle, detector]; "
                                      f"got shape {array.shape}")
    if not np.issubdtype(array.dtype, np.number) or np.iscomplexobj(array):
        raise ImagingInputError(path, f"sinogram must hold real numbers; got dtype {array.dtype}")
    array = array.astype(np.float64)
    if not np.all(np.isfinite(array)):
        raise ImagingInputError(path, "sinogram holds NaN or infinite values")
    return array


def load_sinogram(
    path: str | PathLike, sidecar: str | PathLike | None = None, angles: Any = None
) -> SinogramStack:
    """A sinogram file with its sidecar (default ``<stem>.json`` beside it). ``angles`` (list, mapping or
    ``"start:stop:count"``) overrides the sidecar's; without a sidecar, ``angles`` is required."""
    path = Path(path)
    array = read_sinogram_array(path)
    sidecar_path = Path(sidecar) if sidecar is not None else path.with_suffix(".json")
    if sidecar is not None or sidecar_path.exists():
        meta = read_sidecar(sidecar_path)
    elif angles is None:
        raise ImagingInputError(path, f"no angles: give --angles or a sidecar {sidecar_path.name}")
    else:
        meta = {"pixel_size_mm": 1.0, "slice_spacing_mm": 1.0, "origin_mm": None, "direction": None}
    if angles is not None:
        meta["angles_deg"] = parse_angles(angles, str(path))
    if meta["angles_deg"].size != array.shape[1]:
        raise ImagingInputError(path, f"{meta['angles_deg'].size} angles declared but the sinogram has "
                                      f"{array.shape[1]} projections (axis 1 of [slice, angle, detector])")
    return SinogramStack(array=array, **meta)
