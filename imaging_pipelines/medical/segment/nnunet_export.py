"""Export labelled volumes as an nnU-Net v2 *raw* dataset (``imagesTr`` / ``labelsTr`` / ``dataset.json``).

Layout written under ``out_root`` (nnU-Net's ``nnUNet_raw`` folder)::

    Dataset{dataset_id:03d}_{name}/
        dataset.json              channel_names, labels, numTraining, file_ending
        imagesTr/{case}_0000.nii.gz   one file per channel ({case}_0001... for more channels)
        labelsTr/{case}.nii.gz        integer labels (uint8, uint16 above 255) on exactly the image grid

Files are NIfTI-1 written by :func:`imaging_pipelines.medical.io.image_files.write_nifti` (RAS affine derived from
the Volume's LPS geometry, sform = qform). Each label file is written with its image's geometry, after
checking that the label Volume lies on the image grid (within 1e-3 mm), so nnU-Net's own geometry check
(``nnUNetv2_plan_and_preprocess --verify_dataset_integrity``) passes.

Case identifiers become file names: they must be pseudonyms (never a patient name, ID or accession
number) and may only contain letters, digits, ``-`` and ``_``. No DICOM header value is written: NIfTI
carries geometry and voxels only. Nothing here imports nnU-Net; it is only needed to train.
"""

from __future__ import annotations

import json
import re
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np

from imaging_pipelines.core.storage import write_text_atomic
from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.core.volume import Volume, require_same_grid

__all__ = ["export_nnunet_dataset", "nnunet_dataset_folder_name"]

_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_DATASET_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_-]*$")
_FILE_ENDINGS = (".nii.gz", ".nii")

ImageChannels = Volume | Sequence[Volume]


def nnunet_dataset_folder_name(dataset_id: int, name: str) -> str:
    """``Dataset{dataset_id:03d}_{name}``, after checking the id (1-999) and the name (letters, digits, ``-``, ``_``)."""
    if not isinstance(dataset_id, (int, np.integer)) or not 1 <= int(dataset_id) <= 999:
        raise ValueError(f"nnU-Net dataset_id must be an integer from 1 to 999; got {dataset_id!r}")
    if not _DATASET_NAME.match(name):
        raise ValueError(f"dataset name must contain only letters, digits, '-' and '_'; got {name!r}")
    return f"Dataset{int(dataset_id):03d}_{name}"


def _check_labels_mapping(labels: Mapping[str, int]) -> list[int]:
    values = sorted(int(v) for v in labels.values())
    if labels.get("background") != 0:
        raise ValueError(f"labels must map 'background' to 0 (nnU-Net convention); got {dict(labels)}")
    if values != list(range(len(values))):
        raise ValueError(f"label values must be consecutive integers 0, 1, 2, ... (nnU-Net); got {values}")
    return values


def _integer_labels(label: Volume, allowed: list[int], case_id: str) -> np.ndarray:
    """The label array as uint8/uint16, refusing non-integral values and values not declared in ``labels``."""
    array = np.asarray(label.array)
    if np.issubdtype(array.dtype, np.floating):
        if not np.all(np.isfinite(array)) or not np.array_equal(array, np.round(array)):
            raise ValueError(f"case {case_id!r}: label volume has non-integer values")
    elif not (np.issubdtype(array.dtype, np.integer) or array.dtype == bool):
        raise ValueError(f"case {case_id!r}: label volume has unsupported dtype {array.dtype}")
    present = np.unique(array).astype(np.int64)
    unknown = sorted(set(present.tolist()) - set(allowed))
    if unknown:
        raise ValueError(
            f"case {case_id!r}: label values {unknown} are not declared in labels (declared {allowed})"
        )
    dtype = np.uint8 if max(allowed) <= 255 else np.uint16
    return array.astype(dtype)


def _channels(image: ImageChannels, n_channels: int, case_id: str) -> list[Volume]:
    channels = [image] if isinstance(image, Volume) else list(image)
    if len(channels) != n_channels:
        raise ValueError(f"case {case_id!r}: {len(channels)} image channel(s) given, channel_names declares {n_channels}")
    for c, volume in enumerate(channels):
        if volume.is_timeseries:
            raise ValueError(f"case {case_id!r}: channel {c} is a time series; pass one 3D Volume per channel")
        if c > 0:
            require_same_grid(channels[0], volume, f"case {case_id!r} channel {c}", "resample it onto channel 0 first")
    return channels


def export_nnunet_dataset(
    cases: Sequence[tuple[str, ImageChannels, Volume]],
    out_root: str | Path,
    dataset_id: int,
    name: str,
    channel_names: Mapping[str, str] | None = None,
    labels: Mapping[str, int] | None = None,
    file_ending: str = ".nii.gz",
    *,
    overwrite: bool = False,
) -> Path:
    """Write ``cases`` as the nnU-Net v2 raw dataset ``out_root/Dataset{id:03d}_{name}``; returns that folder.

    ``cases`` are ``(case_id, image, label)``: ``case_id`` a pseudonym (letters, digits, ``-``, ``_``),
    ``image`` a 3D Volume (or one Volume per channel, all on one grid, in ``channel_names`` order),
    ``label`` an integer label Volume on the image grid (checked, 1e-3 mm) whose values are all declared
    in ``labels``. ``channel_names`` maps ``"0"``, ``"1"``... to modality names (default ``{"0": "MR"}``;
    use ``"CT"`` for CT so nnU-Net picks CT normalisation); ``labels`` maps names to consecutive integers
    starting with ``background: 0`` (default ``{"background": 0, "lesion": 1}``). ``file_ending`` is
    ``".nii.gz"`` or ``".nii"``.

    The dataset is written into a temporary sibling folder and moved into place at the end, so a failed
    export leaves no half-written dataset. An existing dataset folder is an error unless ``overwrite``.
    Raises ``ValueError`` for bad ids/names, duplicate case ids, off-grid labels or undeclared label values.
    """
    channel_names = dict(channel_names or {"0": "MR"})
    labels = dict(labels or {"background": 0, "lesion": 1})
    if sorted(channel_names) != [str(c) for c in range(len(channel_names))] or not channel_names:
        raise ValueError(f"channel_names keys must be '0', '1', ...; got {sorted(channel_names)}")
    if file_ending not in _FILE_ENDINGS:
        raise ValueError(f"file_ending must be one of {_FILE_ENDINGS}; got {file_ending!r}")
    allowed = _check_labels_mapping(labels)
    if not cases:
        raise ValueError("no cases to export")
    case_ids = [case[0] for case in cases]
    for case_id in case_ids:
        if not isinstance(case_id, str) or not _CASE_ID.match(case_id):
            raise ValueError(f"case id must contain only letters, digits, '-' and '_'; got {case_id!r}")
    duplicates = sorted({c for c in case_ids if case_ids.count(c) > 1})
    if duplicates:
        raise ValueError(f"duplicate case ids: {duplicates}")

    out_root = Path(out_root)
    folder = out_root / nnunet_dataset_folder_name(dataset_id, name)
    if folder.exists() and not overwrite:
        raise FileExistsError(f"{folder} already exists (pass overwrite=True to replace it)")
    out_root.mkdir(parents=True, exist_ok=True)

    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=out_root))
    try:
        (staging / "imagesTr").mkdir()
        (staging / "labelsTr").mkdir()
        for case_id, image, label in cases:
            channels = _channels(image, len(channel_names), case_id)
            require_same_grid(channels[0], label, f"case {case_id!r} label", "resample the labels (nearest) onto the image")
            label_array = _integer_labels(label, allowed, case_id)
            for c, volume in enumerate(channels):
                data = volume.array if np.issubdtype(volume.array.dtype, np.integer) else volume.array.astype(np.float32)
                write_nifti(channels[0].with_array(data), staging / "imagesTr" / f"{case_id}_{c:04d}{file_ending}")
            # the label is written with the image's own geometry: identical affines, no rounding differences
            write_nifti(channels[0].with_array(label_array), staging / "labelsTr" / f"{case_id}{file_ending}")
        dataset_json = {
            "channel_names": channel_names,
            "labels": {k: int(v) for k, v in sorted(labels.items(), key=lambda kv: kv[1])},
            "numTraining": len(cases),
            "file_ending": file_ending,
            "name": name,
            "description": "exported by the imaging_pipelines nnU-Net export",
        }
        write_text_atomic(staging / "dataset.json", json.dumps(dataset_json, indent=2) + "\n")
        if folder.exists():
            shutil.rmtree(folder)
        staging.rename(folder)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return folder
