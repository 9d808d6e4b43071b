"""``imaging-pipelines convert``: DICOM folders and NIfTI/NRRD/MHA files to NIfTI, through the pipeline's readers."""

from __future__ import annotations

from pathlib import Path

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.ingest import dicom_series_name, image_file_name
from imaging_pipelines.medical.io.image_files import read_image_file, write_nifti
from imaging_pipelines.core.privacy import slug
from imaging_pipelines.core.volume import Volume


def _is_nifti_name(path: Path) -> bool:
    return path.name.lower().endswith((".nii", ".nii.gz"))


def read_source(src: Path) -> tuple[dict[str, Volume], list[str]]:
    """Named volumes of SRC (a DICOM folder or a single image file) and notes about skipped files."""
    if src.is_dir():
        from imaging_pipelines.medical.io.dicom import read_dicom_folder

        folder = read_dicom_folder(src)
        notes = [f"{n.path}: {n.message}" for n in folder.skipped + folder.errors]
        named: dict[str, Volume] = {}
        for series in folder.series:
            name = dicom_series_name(series)
            named[name if name not in named else f"{name}_{len(named) + 1}"] = series.volume
        return named, notes
    if not src.exists():
        raise ImagingInputError(src, "no such file or folder")
    return {image_file_name(src.name) if "_" in src.name else slug(src.name.split('.')[0]): read_image_file(src)}, []


def convert(src: str | Path, out: str | Path) -> tuple[list[Path], list[str]]:
    """Convert SRC to NIfTI. OUT is a ``.nii(.gz)`` file when SRC holds one series, else a folder
    that receives one ``<series number>_<description>.nii.gz`` per series. Returns (written files, notes)."""
    src, out = Path(src), Path(out)
    named, notes = read_source(src)
    if not named:
        raise ImagingInputError(src, "no image series found")
    if _is_nifti_name(out):
        if len(named) > 1:
            raise ImagingInputError(
                src, f"holds {len(named)} series ({', '.join(named)}); give a folder as OUT to write one file per series"
            )
        return [write_nifti(next(iter(named.values())), out)], notes
    out.mkdir(parents=True, exist_ok=True)
    return [write_nifti(vol, out / f"{name}.nii.gz") for name, vol in named.items()], notes
