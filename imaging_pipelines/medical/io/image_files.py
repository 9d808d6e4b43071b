"""Single-file volume formats: NIfTI (nibabel), NRRD and MetaImage (SimpleITK), to and from `Volume`.

NIfTI affines are RAS; `Volume` is LPS: the conversion lives in `Volume.from_nifti` / `to_nifti_affine`.
"""

from __future__ import annotations

import math
import os
import re
from os import PathLike
from pathlib import Path

import numpy as np

from imaging_pipelines.core.storage import atomic_file, write_chunks_atomic
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.itk_headers import check_itk_header
from imaging_pipelines.medical.io.nifti_checks import (
    check_nifti_extensions, nifti_claim, read_gzip_nifti_voxels, stored_nbytes,
)
from imaging_pipelines.core.limits import MAX_VOXELS, check_claimed_size, check_compression_ratio
from imaging_pipelines.config.registry import FORMAT_SUFFIXES
from imaging_pipelines.core.volume import Volume

__all__ = ["MAX_VOXELS", "image_file_format", "read_image_file", "read_nifti", "read_sitk_file", "write_nifti"]


def image_file_format(path: str | PathLike) -> str | None:
    """'nifti', 'nrrd' or 'mha' from the file name, or None."""
    name = str(path).lower()
    for fmt, suffixes in FORMAT_SUFFIXES.items():
        if name.endswith(suffixes):
            return fmt
    return None


def _check_size(path: str | PathLike, shape: tuple[int, ...], itemsize: int = 1,
                available_bytes: int | None = None, stored_bytes: int | None = None) -> None:
    """Refuse (ImagingInputError) an image whose header claims an empty, oversized or truncated array."""
    if len(shape) == 0:
        raise ImagingInputError(path, "header claims an image without dimensions")
    check_claimed_size(path, shape, itemsize, available_bytes=available_bytes, stored_bytes=stored_bytes)


def _finite_warnings(path: str | PathLike, array: np.ndarray) -> tuple[str, ...]:
    if not np.issubdtype(array.dtype, np.floating):
        return ()
    n_nan = int(np.isnan(array).sum())
    n_inf = int(np.isinf(array).sum())
    warnings = []
    if n_nan:
        warnings.append(f"{Path(path).name}: {n_nan} NaN voxel(s) of {array.size}; kept as NaN")
    if n_inf:
        warnings.append(f"{Path(path).name}: {n_inf} infinite voxel(s) of {array.size}; kept")
    if n_nan + n_inf == array.size:
        raise ImagingInputError(path, "every voxel is NaN or infinite")
    return tuple(warnings)


def read_nifti(path: str | PathLike) -> Volume:
    """Read a NIfTI-1/2 file (.nii, .nii.gz) keeping its affine (sform, else qform). A ``.nii.gz`` is
    decompressed in chunks into the voxel array itself (peak memory about the decompressed size, plus the
    array's transposition when nibabel's order needs one), never past the bytes the header claims."""
    import nibabel as nib

    try:
        check_nifti_extensions(path)
        img = nib.load(str(path))
        itemsize, available = nifti_claim(path, img)
        _check_size(path, img.shape, itemsize, available, stored_nbytes(img))
        if str(path).lower().endswith(".gz"):
            check_compression_ratio(path, stored_nbytes(img), os.path.getsize(path))
            data = read_gzip_nifti_voxels(path, img)  # streamed: the voxels are held once, not twice
        else:
            data = np.asanyarray(img.dataobj)
    except (ImagingInputError, MemoryError):
        raise
    except Exception as exc:  # nibabel raises many types for broken files
        raise ImagingInputError(path, f"cannot read NIfTI file: {type(exc).__name__}: {exc}") from None
    time_step = _nifti_time_step(img) if data.ndim == 4 else None
    try:
        volume = Volume.from_nifti(data, img.affine, time_step=time_step)
    except ValueError as exc:
        raise ImagingInputError(path, str(exc)) from None
    return _with_warnings(volume, _finite_warnings(path, volume.array))


def _nifti_time_step(img) -> float | None:
    """Interval between volumes (s) from pixdim[4] and the time unit; None when absent or unusable."""
    zooms = img.header.get_zooms()
    try:
        t_unit = img.header.get_xyzt_units()[1]
    except (KeyError, ValueError):  # an unknown unit code: the interval cannot be interpreted
        return None
    scale = {"msec": 1e-3, "usec": 1e-6}.get(t_unit, 1.0)
    step = float(zooms[3]) * scale if len(zooms) > 3 else 0.0
    return step if math.isfinite(step) and step > 0 else None


def read_sitk_file(path: str | PathLike) -> Volume:
    """Read NRRD or MetaImage (.nrrd, .nhdr, .mha, .mhd) with SimpleITK."""
    import SimpleITK as sitk

    try:
        check_itk_header(path)
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        reader.ReadImageInformation()
        _check_size(path, reader.GetSize(), _sitk_itemsize(reader))
        image = reader.Execute()
        volume = Volume.from_sitk(image)
    except (ImagingInputError, MemoryError):
        raise
    except Exception as exc:
        msg = str(exc).strip().splitlines()
        raise ImagingInputError(path, f"cannot read image: {msg[-1] if msg else type(exc).__name__}") from None
    return _with_warnings(volume, _finite_warnings(path, volume.array))


def _sitk_itemsize(reader) -> int:
    """Bytes per pixel (all components) of the image a SimpleITK reader would allocate."""
    import SimpleITK as sitk

    kind = sitk.GetPixelIDValueAsString(reader.GetPixelID())
    bits = re.search(r"(\d+)-bit", kind)
    per_component = int(bits.group(1)) // 8 if bits else 8
    if kind.startswith("complex"):
        per_component *= 2
    return per_component * max(1, int(reader.GetNumberOfComponents()))


def _with_warnings(volume: Volume, warnings: tuple[str, ...]) -> Volume:
    if not warnings:
        return volume
    from dataclasses import replace

    return replace(volume, warnings=volume.warnings + warnings)


def read_image_file(path: str | PathLike) -> Volume:
    """Read any supported single-file volume, chosen by file name."""
    fmt = image_file_format(path)
    if fmt == "nifti":
        return read_nifti(path)
    if fmt in ("nrrd", "mha"):
        return read_sitk_file(path)
    raise ImagingInputError(path, "not a NIfTI, NRRD or MetaImage file name (.nii, .nii.gz, .nrrd, .nhdr, .mha, .mhd)")


def write_nifti(volume: Volume, path: str | PathLike, stored: np.ndarray | None = None,
                scl: tuple[float, float] | None = None, durable: bool = True) -> Path:
    """Write a Volume as NIfTI-1 (sform and qform = the volume's RAS affine), atomically (temporary sibling, then
    rename; ``durable=False``: without fsync, for scratch files, see :func:`imaging_pipelines.core.storage.atomic_file`).

    ``stored`` (same shape and order as ``volume.array``) and ``scl`` = (scl_slope, scl_inter) write the voxels
    as stored values plus NIfTI scale factors, as dcm2niix does, instead of the physical values.
    """
    from imaging_pipelines.medical.io.nifti_write import DATATYPES, RGB24, nifti_chunks

    if stored is None:
        data_c = volume.array
    elif stored.dtype == np.uint8 and stored.ndim == 4 and stored.shape[-1] == 3:  # RGB (z, y, x, 3) -> RGB24
        data_c = np.ascontiguousarray(stored).view(RGB24)[..., 0]
    else:
        data_c = stored
    time_step = volume.time_step if volume.is_timeseries and volume.time_step and data_c.ndim == 4 else None
    scl = (float(scl[0]), float(scl[1])) if stored is not None and scl is not None and tuple(scl) != (1.0, 0.0) else None
    path = Path(path)
    affine = volume.to_nifti_affine()
    if (data_c.dtype in DATATYPES or data_c.dtype == RGB24) and data_c.dtype.byteorder != ">" and data_c.ndim <= 7:
        # the bytes nibabel would write (tests/test_nifti_write.py), without importing it
        write_chunks_atomic(path, nifti_chunks(data_c, affine, time_step, scl, compress=path.name.endswith(".gz")),
                            durable)
        return path
    import nibabel as nib  # other dtypes (bool, 64-bit integers, big endian): nibabel converts or refuses them

    img = nib.Nifti1Image(np.transpose(data_c, tuple(range(data_c.ndim))[::-1]), affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if scl is not None:
        img.header.set_slope_inter(*scl)
    if time_step:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = time_step
    else:
        img.header.set_xyzt_units("mm")
    with atomic_file(path, durable) as tmp:  # the temporary name ends like ``path``: nibabel picks the same format
        nib.save(img, str(tmp))
    return path
