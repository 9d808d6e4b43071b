"""``imaging-pipelines convert``: DICOM folders and NIfTI/NRRD/MHA files to NIfTI, through the pipeline's readers.

DICOM series are written as dcm2niix writes them: stored voxel values plus NIfTI scale factors
(``scl_slope``/``scl_inter``, see :mod:`imaging_pipelines.medical.io.dicom_intensity`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.privacy import slug
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.naming import dicom_series_name, image_file_name
from imaging_pipelines.medical.io.image_files import read_image_file, write_nifti


@dataclass
class NamedVolume:
    """One output of ``convert``: the volume and, for DICOM, its stored voxels and NIfTI scale factors."""

    volume: Volume
    stored: np.ndarray | None = None
    scl: tuple[float, float] | None = None


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def read_source(src: Path) -> tuple[dict[str, NamedVolume], list[str]]:
    """Named volumes of SRC (a DICOM folder or a single image file) and notes about skipped files."""
    if src.is_dir():
        from imaging_pipelines.medical.io.dicom import read_dicom_folder

        folder = read_dicom_folder(src)
        notes = [f"{n.path}: {n.message}" for n in folder.skipped + folder.errors]
        named: dict[str, NamedVolume] = {}
        taken = [dicom_series_name(s, dcm2niix_suffix=True) for s in folder.series]
        for series, name in zip(folder.series, taken):
            if taken.count(name) > 1:
                name = dicom_series_name(series)
            enc = series.intensity
            item = NamedVolume(series.volume, enc.stored if enc else None,
                               (enc.scl_slope, enc.scl_inter) if enc else None)
            named[name if name not in named else f"{name}_{len(named) + 1}"] = item
        return named, notes
    if not src.exists():
        raise ImagingInputError(src, "no such file or folder")
    name = image_file_name(src.name) if "_" in src.name else slug(src.name.split('.')[0])
    return {name: NamedVolume(read_image_file(src))}, []


def _write(item: NamedVolume, path: Path) -> list[Path]:
    """The NIfTI file and, for diffusion series, its ``.bval`` / ``.bvec`` beside it (same stem)."""
    written = [write_nifti(item.volume, path, stored=item.stored, scl=item.scl)]
    attrs = item.volume.attributes
    if not attrs.get("bids") and not attrs.get("diffusion"):
        return written
    from imaging_pipelines.core.storage import write_text_atomic

    stem = str(path)[: -len(".nii.gz")] if str(path).endswith(".nii.gz") else str(path.with_suffix(""))
    texts = []
    if attrs.get("bids"):
        texts.append((".json", json.dumps(attrs["bids"], indent=1) + "\n"))
    if attrs.get("diffusion"):
        from imaging_pipelines.medical.io.dicom_diffusion import bval_bvec_text

        bval, bvec = bval_bvec_text(attrs["diffusion"]["bvals"], np.asarray(attrs["diffusion"]["bvecs"]))
        texts += [(".bval", bval), (".bvec", bvec)]
    for suffix, text in texts:
        write_text_atomic(stem + suffix, text)
        written.append(Path(stem + suffix))
    return written


def convert(src: str | Path, out: str | Path) -> tuple[list[Path], list[str]]:
    """Convert SRC to NIfTI. OUT is a ``.nii(.gz)`` file when SRC holds one series, else a folder
    that receives one ``<series number>_<description>.nii.gz`` per series (with ``.bval``/``.bvec`` for diffusion
    series) and a BIDS sidecar ``.json`` (see :mod:`imaging_pipelines.medical.io.dicom_sidecar`).
    Returns (written files, notes)."""
    src, out = Path(src), Path(out)
    named, notes = read_source(src)
    if not named:
        raise ImagingInputError(src, "no image series found")
    if _is_nifti_name(out):
        if len(named) > 1:
            raise ImagingInputError(
                src, f"holds {len(named)} series ({', '.join(named)}); give a folder as OUT to write one file per series"
            )
        return _write(next(iter(named.values())), out), notes
    out.mkdir(parents=True, exist_ok=True)
    return [p for name, item in named.items() for p in _write(item, out / f"{name}.nii.gz")], notes


def convert_command(src: Path, out: Path) -> int:
    """``imaging-pipelines convert SRC OUT``: converts, prints ``wrote PATH`` per file written (stdout) and each
    note or the error (stderr); returns the exit status (0 done, 1 unreadable or unusable input)."""
    try:
        written, notes = convert(src, out)
    except ImagingInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for note in notes:
        print(f"note: {note}", file=sys.stderr)
    for path in written:
        print(f"wrote {path}")
    return 0
