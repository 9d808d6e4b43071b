"""Turn one patient's inbox files into named volumes (imaging core; no dagster import).

Image names are non-identifying: ``s<series number>_<description>`` for DICOM series (plus the stack
label when a series was split), and the file name without its subject part for NIfTI / NRRD / MHA files.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from imaging_pipelines.config.catalog import SeriesSelection, configured_data_roots
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.privacy import clean_descriptor
from imaging_pipelines.core.inbox_safety import within
from imaging_pipelines.core.remote_inbox import is_remote
from imaging_pipelines.medical.inbox import InboxFile
from imaging_pipelines.medical.io.image_files import read_image_file
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.naming import dicom_series_name, image_file_name  # noqa: F401  (re-exported)


LABEL_GRID_ATOL_MM = 0.01  # a label file belongs to the image whose voxel grid it matches within this


@dataclass
class IngestedPatient:
    images: dict[str, Volume] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # skipped files and dropped series, naming files
    labels: dict[str, dict[str, Volume]] = field(default_factory=dict)  # image -> {"reference": label map}


def _unique(name: str, taken: dict) -> str:
    candidate, n = name, 2
    while candidate in taken:
        candidate, n = f"{name}_{n}", n + 1
    return candidate


def ingest_patient_files(files: list[InboxFile], selection: SeriesSelection, file_modality: str = "MR",
                         allow_incomplete_series: bool = False, allow_burned_in: bool = False) -> IngestedPatient:
    """Read a patient's files and keep the series the catalog's selection rules accept.

    Raises :class:`ImagingInputError` naming the files (by their path inside the inbox) when any file
    is unreadable, so a partial patient never replaces a complete one, when a DICOM series is incomplete or
    holds one image twice with different pixels (:mod:`imaging_pipelines.medical.io.series_integrity`; an
    incomplete one is a note with ``allow_incomplete_series``), when a linked file now points outside the
    data roots, or when no image is left. A series whose pixels may show identifying text is quarantined
    (a note) unless ``allow_burned_in``. Image names and the stored series description carry only the cleaned
    descriptor (:func:`~imaging_pipelines.core.privacy.clean_descriptor`).
    """
    from imaging_pipelines.medical.io.dicom import read_dicom_files
    from imaging_pipelines.medical.io.series_integrity import check_series_integrity

    result = IngestedPatient()
    _refuse_links_outside_data_roots(files)
    label_files = [f for f in files if f.is_label]
    files = [f for f in files if not f.is_label]
    inbox_name = {f.local_path(): f.relpath for f in files}
    shown = lambda path: inbox_name.get(path, Path(path).name)  # noqa: E731
    dicom_paths = [local for local, f in zip(inbox_name, files) if f.format == "dicom"]
    if dicom_paths:
        integrity = check_series_integrity(dicom_paths, shown, allow_incomplete_series, allow_burned_in)
        result.notes += integrity.notes
        folder = read_dicom_files(integrity.keep)
        if folder.errors:
            listing = "; ".join(f"{shown(e.path)}: {e.message}" for e in folder.errors)
            raise ImagingInputError(shown(folder.errors[0].path), f"unreadable DICOM file(s): {listing}")
        result.notes += [f"{shown(s.path)}: {s.message}" for s in folder.skipped]
        for series in folder.series:
            name = dicom_series_name(series)
            n_slices = series.volume.spatial_shape[0]
            if not selection.keeps(series.modality, series.series_description, n_slices):
                result.notes.append(f"series {name} ({series.modality}, {n_slices} slices) not selected by the catalog rules")
                continue
            volume = replace(series.volume, attributes={  # the store keeps the cleaned descriptor only
                **series.volume.attributes, "series_description": clean_descriptor(series.series_description or "")})
            result.images[_unique(name, result.images)] = volume
    for local, f in zip(inbox_name, files):
        if f.format == "dicom":
            continue
        try:
            volume = read_image_file(local)
        except ImagingInputError as exc:
            raise ImagingInputError(f.relpath, exc.problem) from None
        volume = replace(volume, attributes={**volume.attributes, "source_format": f.format, "modality": file_modality})
        result.images[_unique(image_file_name(f.relpath), result.images)] = volume
    if not result.images:
        where = files[0].relpath if files else "inbox"
        raise ImagingInputError(where, "no image series left for this patient (" + ("; ".join(result.notes) or "no files") + ")")
    for f in label_files:
        attach_label_file(result, f)
    return result


def _refuse_links_outside_data_roots(files: list[InboxFile]) -> None:
    """The inbox listing refused links leading outside the data roots; a link changed since then is refused
    here, before anything is read through it."""
    roots = configured_data_roots()
    for f in files:
        if not is_remote(f.path) and os.path.islink(f.path) and not within(f.path, roots):
            raise ImagingInputError(f.relpath, "symbolic link to a file outside the data roots; refused")


def attach_label_file(patient: IngestedPatient, file: InboxFile) -> None:
    """Read a reference label file and attach it to the image whose grid it matches (a note when none does).

    Raises :class:`ImagingInputError` naming the file when it is unreadable or not an integer label map.
    """
    import numpy as np

    try:
        label = read_image_file(file.local_path())
    except ImagingInputError as exc:
        raise ImagingInputError(file.relpath, exc.problem) from None
    values = np.asarray(label.array)
    if label.is_timeseries or not np.all(np.isfinite(values)) or np.any(values != np.round(values)) \
            or values.min() < 0 or values.max() > 255:
        raise ImagingInputError(file.relpath, "a label map must be 3D with integer values 0..255")
    label = replace(label.with_array(values.astype(np.uint8)), attributes={"source_format": file.format})
    match = [n for n, v in patient.images.items() if not v.is_timeseries and v.same_geometry(label, LABEL_GRID_ATOL_MM)]
    if not match:
        patient.notes.append(f"{file.relpath}: label map on no image's grid (shape {label.spatial_shape}); ignored")
        return
    for name in match:
        if "reference" in patient.labels.get(name, {}):
            patient.notes.append(f"{file.relpath}: {name} already has a reference label; ignored")
            continue
        patient.labels.setdefault(name, {})["reference"] = label


@dataclass
class PartitionIngestion:
    """Outcome of ingesting one patient partition into its OME-Zarr store."""

    store_path: str
    images: dict[str, Volume]
    notes: list[str]
    labels: dict[str, dict[str, Volume]] = field(default_factory=dict)
    runtime_s: float = 0.0  # reading the partition's files and writing its store (not finding the files)

    def series_rows(self) -> list[dict]:
        return [
            {
                "image": name,
                "modality": v.attributes.get("modality", v.attributes.get("source_format", "")),
                "shape": "x".join(str(s) for s in v.array.shape),
                "spacing_mm": "x".join(f"{s:.4g}" for s in v.spacing),
                "orientation": v.orientation_code(),
                "warnings": len(v.warnings),
            }
            for name, v in self.images.items()
        ]

    @property
    def warnings(self) -> list[str]:
        return [f"{name}: {w}" for name, v in self.images.items() for w in v.warnings]


def ingest_partition(dataset, partition: str, root, asset: str = "ingested_scans") -> PartitionIngestion:
    """Find the partition's files in the dataset inbox (from the inbox index when it is fresh for this
    partition, else by a scan: :func:`imaging_pipelines.medical.inbox_index.partition_files`), read them and
    (atomically) write its OME-Zarr store.

    ``dataset`` is a catalog ``DatasetConfig``; ``root`` the storage root (UPath or str).
    """
    from imaging_pipelines.medical.inbox_index import partition_files
    from imaging_pipelines.medical.io.ome_zarr import write_volume_store
    from imaging_pipelines.core.storage import partition_store_path

    files, _ = partition_files(dataset, root, partition)
    if not files:
        raise ImagingInputError(dataset.inbox, f"no file in the inbox belongs to partition {partition}")
    start = time.perf_counter()
    patient = ingest_patient_files(files, dataset.series_selection, dataset.file_modality,
                                   dataset.inbox_checks.allow_incomplete_series,
                                   dataset.inbox_checks.allow_burned_in_annotation)
    path = partition_store_path(root, dataset.id, asset, partition)
    write_volume_store(path, patient.images, {"dataset": dataset.id, "partition": partition, "stage": asset},
                       labels=patient.labels)
    return PartitionIngestion(str(path), patient.images, patient.notes, patient.labels,
                              time.perf_counter() - start)
