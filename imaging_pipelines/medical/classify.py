"""Radiograph classification inputs (no dagster, no torch): a 2D image (a planar ``Volume`` of one slice, as
ingestion stores DX / CR radiographs, or a ``(y, x)`` array) to the square ``(1, size, size)`` float32
network input, and a patient-label table read into partition keys.

Orientation: array order (y, x) as stored (row 0 = top of the displayed image); the image is resized to
``size`` x ``size`` pixels ignoring pixel spacing (the aspect ratio of the detector is not kept), as chest
radiograph classifiers do. Intensities are clipped to the 0.5-99.5 percentiles and scaled to [0, 1].
"""

from __future__ import annotations

import csv
import io
from pathlib import Path

import numpy as np
from scipy import ndimage

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.privacy import pseudonymise
from imaging_pipelines.core.volume import Volume


def planar_image(image: Volume | np.ndarray, what: str = "image") -> np.ndarray:
    """The ``(y, x)`` float32 plane of a one-slice volume (first time point) or of a 2D array;
    ValueError for a volume of several slices (a 3D scan is not a radiograph)."""
    array = image.array if isinstance(image, Volume) else np.asarray(image)
    if array.ndim == 4:
        array = array[0]
    if array.ndim == 3:
        if array.shape[0] != 1:
            raise ValueError(f"{what}: {array.shape[0]} slices; radiograph classification needs a 2D image")
        array = array[0]
    if array.ndim != 2:
        raise ValueError(f"{what}: shape {array.shape} is not a 2D image")
    return array.astype(np.float32)


def radiograph_input(image: Volume | np.ndarray, size: int, what: str = "image") -> np.ndarray:
    """``(1, size, size)`` float32 in [0, 1]: the plane resized (linear interpolation, anti-aliased by a
    Gaussian of sigma = half the zoom-out factor), clipped to its 0.5-99.5 percentiles and rescaled."""
    plane = planar_image(image, what)
    factors = (size / plane.shape[0], size / plane.shape[1])
    sigma = [max(0.0, (1 / f - 1) / 2) for f in factors]
    if any(s > 0 for s in sigma):
        plane = ndimage.gaussian_filter(plane, sigma)
    resized = ndimage.zoom(plane, factors, order=1, grid_mode=True, mode="nearest")[:size, :size]
    lo, hi = np.percentile(resized, [0.5, 99.5])
    return (np.clip((resized - lo) / (hi - lo if hi > lo else 1.0), 0, 1)[None]).astype(np.float32)


# how the inbox scan names partitions (medical.inbox): DICOM PatientID, the subject of a non-DICOM file
# (sub-01_T1w.nii.gz -> sub-01), or the folder of DICOM files without a PatientID
PARTITION_NAMESPACES = ("dicom-patient-id", "inbox-subject", "inbox-folder")


def read_label_table(file: str, id_column: str, label_column: str, classes: dict[str, int]) -> dict[str, int]:
    """Partition key -> class value, from a CSV file. An identifier is a DICOM PatientID, a subject name
    of non-DICOM files or the inbox folder of DICOM files without PatientID: its pseudonym in each of these
    namespaces (:data:`PARTITION_NAMESPACES`) is a key, so it matches the partition whichever way the inbox
    scan named it. A label may
    be a class name or its value; an unknown label, a missing column or a duplicate identifier with another
    label raises ``ImagingInputError`` naming the file and the row (never the identifier)."""
    path = Path(file)
    if not path.is_file():
        raise ImagingInputError(str(path), "classification label table not found")
    reader = csv.DictReader(io.StringIO(path.read_text(encoding="utf-8-sig")))
    missing = [c for c in (id_column, label_column) if c not in (reader.fieldnames or [])]
    if missing:
        raise ImagingInputError(str(path), f"column(s) {missing} missing (columns: {reader.fieldnames})")
    by_value = {str(v): v for v in classes.values()}
    out: dict[str, int] = {}
    for row_number, row in enumerate(reader, start=2):
        ident, label = (row.get(id_column) or "").strip(), (row.get(label_column) or "").strip()
        if not ident:
            continue
        value = classes.get(label, by_value.get(label))
        if value is None:
            raise ImagingInputError(str(path), f"row {row_number}: label {label!r} is not a class of {sorted(classes)}")
        for namespace in PARTITION_NAMESPACES:
            key = pseudonymise(ident, namespace)
            if out.get(key, value) != value:
                raise ImagingInputError(str(path), f"row {row_number}: a patient listed twice with different labels")
            out[key] = value
    return out
