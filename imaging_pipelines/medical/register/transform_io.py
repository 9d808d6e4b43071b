"""SimpleITK transforms to and from bytes (for storing transforms inside Zarr stores or any blob store).

The bytes are an ITK transform file: HDF5 (``.h5``) when the transform holds a displacement field (which
the text format cannot store), otherwise the ITK text format (``.tfm``), so rigid, affine and B-spline
transforms stay human-readable. :func:`transform_from_bytes` recognises either by its first bytes.
Transforms keep ITK's convention: they map fixed-space points to moving-space points, LPS mm.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import SimpleITK as sitk

from imaging_pipelines.core.storage import write_bytes_atomic

HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"


def _holds_displacement_field(transform: sitk.Transform) -> bool:
    transform = transform.Downcast()
    if isinstance(transform, sitk.DisplacementFieldTransform):
        return True
    if isinstance(transform, sitk.CompositeTransform):
        return any(_holds_displacement_field(transform.GetNthTransform(n))
                   for n in range(transform.GetNumberOfTransforms()))
    return False


def transform_to_bytes(transform: sitk.Transform) -> bytes:
    """The transform as the bytes of an ITK transform file (.h5 with a displacement field, else .tfm text)."""
    suffix = ".h5" if _holds_displacement_field(transform) else ".tfm"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"transform{suffix}"
        sitk.WriteTransform(transform, str(path))
        return path.read_bytes()


def transform_from_bytes(data: bytes) -> sitk.Transform:
    """The transform written by :func:`transform_to_bytes`, downcast to its concrete SimpleITK class."""
    suffix = ".h5" if data.startswith(HDF5_SIGNATURE) else ".tfm"
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"transform{suffix}"
        write_bytes_atomic(path, data)
        return sitk.ReadTransform(str(path)).Downcast()
