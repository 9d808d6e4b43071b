"""The DICOM objects a user takes away for one segmented series: a SEG and its TID 1500 measurement report.

:func:`write_dicom_outputs` is the one entry point (the per-patient segmentation stage and the
``imaging-pipelines segment`` command call it). It writes ``<folder>/<name>.seg.dcm`` (BINARY or LABELMAP,
:mod:`.dicom_seg`) and ``<folder>/<name>.sr.dcm`` (Comprehensive 3D SR, :mod:`.dicom_sr`), atomically as a
pair (temporary files in ``folder``, both flushed, then renamed into place only after both pass), both
de-identified by DICOM PS3.15 Annex E with the patient pseudonym, and reads each back to check it with
:func:`imaging_pipelines.medical.deid.profile_violations`: an object with any attribute the profile does not
allow is not published and a :class:`~imaging_pipelines.medical.deid.ProfileViolationError` raised.
``name`` must already be free of patient data (an image name made from SeriesNumber/modality, never a
DICOM descriptor). Geometry: ``mask`` and ``image`` on the source series grid (LPS mm, ``[z, y, x]``).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pydicom

from imaging_pipelines.core.storage import atomic_files
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.deid import ProfileViolationError, profile_violations
from imaging_pipelines.medical.segment.dicom_seg import write_dicom_seg
from imaging_pipelines.medical.segment.dicom_sr import write_measurement_report

__all__ = ["write_dicom_outputs"]


def _check(path: Path, final_name: str, pseudonym: str) -> None:
    problems = profile_violations(pydicom.dcmread(str(path), stop_before_pixels=True), pseudonym=pseudonym)
    if problems:
        raise ProfileViolationError(f"{final_name}: {len(problems)} attribute(s) not allowed by the PS3.15 profile, not "
                         f"written: {'; '.join(problems[:5])}")


def write_dicom_outputs(mask: Volume, image: Volume, source_files: list[str], folder: Path, name: str,
                        segment_names: Mapping[int, str], *, patient_pseudonym: str, algorithm_version: str,
                        seg_type: str = "BINARY", write_sr: bool = True) -> list[Path]:
    """Write ``<name>.seg.dcm`` and (``write_sr``) ``<name>.sr.dcm`` in ``folder``; returns the paths written.

    ``mask``: integer labels on the grid of the single-frame DICOM series ``source_files``; ``image``: its
    intensities on the same grid (HU for CT), for the report; ``segment_names``: label value -> segment name;
    ``seg_type``: ``"BINARY"`` or ``"LABELMAP"``. Both objects are written to temporary files in ``folder``
    and checked; only when both pass are they renamed into place (a failure leaves earlier outputs as they
    were).
    """
    if not str(patient_pseudonym).strip():
        raise ValueError("write_dicom_outputs needs a patient pseudonym (the outputs are always de-identified)")
    folder = Path(folder)
    targets = [folder / f"{name}.seg.dcm"] + ([folder / f"{name}.sr.dcm"] if write_sr else [])
    with atomic_files(targets) as tmps:  # published together: a kill leaves the previous SEG and SR both
        write_dicom_seg(mask, source_files, tmps[0], segment_names, "imaging_pipelines",
                        algorithm_version=algorithm_version, patient_pseudonym=patient_pseudonym, seg_type=seg_type)
        _check(tmps[0], targets[0].name, patient_pseudonym)
        if write_sr:
            write_measurement_report(tmps[0], source_files, mask, image, tmps[1], segment_names,
                                     patient_pseudonym=patient_pseudonym, algorithm_version=algorithm_version)
            _check(tmps[1], targets[1].name, patient_pseudonym)
    return targets
