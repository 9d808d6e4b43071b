"""Non-identifying image names (light module: no catalog or storage import, used by ``convert``).

``s<series number>_<description>`` for DICOM series (plus the stack label, or dcm2niix's suffix, when a series
was split), and the file name without its subject part for NIfTI / NRRD / MHA files.
"""

from __future__ import annotations

from pathlib import Path

from imaging_pipelines.core.privacy import clean_descriptor, slug


def dicom_series_name(series, dcm2niix_suffix: bool = False) -> str:
    """``s003_mr_epi_ap``: series number, modality and the cleaned descriptor (never free text: a name or a
    date in SeriesDescription does not survive :func:`~imaging_pipelines.core.privacy.clean_descriptor`),
    + ``_<stack>`` when the series was split into stacks; with ``dcm2niix_suffix`` the stack is named by
    dcm2niix's suffixes ``_e2``, ``_ph``, ``_real``, ``_imaginary``, ``_fieldmaphz`` when it has one."""
    number = series.series_number if series.series_number is not None else 0
    descriptor = clean_descriptor(series.series_description or "")
    modality = slug(series.modality, 8) if series.modality else ""
    if not descriptor or descriptor.startswith("desc_"):  # no safe word: the modality says what it is
        descriptor = "_".join(p for p in (modality, descriptor) if p)
    name = f"s{number:03d}_{descriptor or 'series'}"
    suffix = series.volume.attributes.get("name_suffix")
    if dcm2niix_suffix and suffix is not None:
        return name + suffix
    stack = series.volume.attributes.get("stack")
    return f"{name}_{slug(str(stack), 20)}" if stack else name


def image_file_name(relpath: str) -> str:
    """Name of a single-file image without its subject part: ``sub-01_T1w.nii.gz`` -> ``t1w``.

    A file name with no ``_`` is the subject itself at the top of the inbox (named ``image``), and a
    plain description inside a subject folder (``sub-01/flair.nii.gz`` -> ``flair``).
    """
    path = Path(relpath)
    stem = path.name.split(".")[0]
    if "_" in stem:
        return slug(stem.split("_", 1)[1])
    return slug(stem) if len(path.parts) > 1 else "image"
