"""DICOM folder reader: files -> series -> stacks -> :class:`~imaging_pipelines.core.volume.Volume` (LPS mm).

Files are grouped by StudyInstanceUID/SeriesInstanceUID, then split into stacks (orientation, matrix,
pixel spacing, echo, image type, enhanced StackID, and acquisitions of different geometry). Slices are
ordered only by ImagePositionPatient projected on the slice normal; repeated positions with equal counts
form a time series. Every header is parsed once; pixels are decoded once per file.
"""

from __future__ import annotations

import os
import statistics
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from os import PathLike

import numpy as np

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.core.privacy import redact_quoted

from . import dicom_header
from .dicom_geometry import layout_stack, split_by_acquisition
from .dicom_header import FileHeader, NotDicom, SkipFile, records_for, series_attributes
from .dicom_components import SUFFIX as COMPONENT_SUFFIX
from .dicom_diffusion import drop_derived_trace, fsl_gradients
from .dicom_sidecar import bids_sidecar, slice_times, vendor_fields
from .dicom_intensity import StackIntensity, refill, rgb_stack, stack_intensity
from .dicom_multiframe import has_functional_groups
from .dicom_planar import centred_origin
from .dicom_radiograph import invert_monochrome1, is_monochrome1, planar_attributes
from .dicom_pixels import PixelDecodeError, decode_all
from .dicom_slices import SliceRecord
from .dicom_slim import slim_source

__all__ = [
    "FileNote",
    "LoadedSeries",
    "DicomFolderResult",
    "read_dicom_files",
    "read_dicom_folder",
    "read_identity",
    "read_patient_id",
    "is_dicom_file",
]


@dataclass(frozen=True)
class FileNote:
    """A file that was skipped or failed, with why."""

    path: str
    message: str


@dataclass
class LoadedSeries:
    """One stack of one DICOM series as a Volume; ``patient_id`` is PHI and never copied into the volume."""

    volume: Volume
    patient_id: str
    study_uid: str
    series_uid: str
    series_number: int | None
    series_description: str
    modality: str
    files: list[str]
    intensity: StackIntensity | None = None  # stored voxels + NIfTI scale factors, as dcm2niix writes them


@dataclass
class DicomFolderResult:
    series: list[LoadedSeries] = field(default_factory=list)
    skipped: list[FileNote] = field(default_factory=list)
    errors: list[FileNote] = field(default_factory=list)


def is_dicom_file(path: str | PathLike) -> bool:
    """Cheap check: DICM magic at byte 128, or a parseable preamble-less dataset with a SOPClassUID."""
    return dicom_header.is_dicom_file(os.fspath(path))


def read_patient_id(path: str | PathLike) -> str | None:
    """Raw PatientID (PHI) from a header-only read; None if the file is not DICOM."""
    identity = dicom_header.read_identity(os.fspath(path))
    return identity[0] if identity else None


def read_identity(path: str | PathLike) -> tuple[str, str] | None:
    """Raw (PatientID, SeriesInstanceUID) (PHI) from one header-only read; None if the file is not DICOM."""
    return dicom_header.read_identity(os.fspath(path))


def read_dicom_folder(folder: str | PathLike) -> DicomFolderResult:
    """Read every DICOM file below ``folder`` (recursively).

    Raises ImagingInputError(folder, ...) when the folder does not exist or holds no usable DICOM image;
    individual bad files are reported in ``.errors`` / ``.skipped``.
    """
    root = os.fspath(folder)
    if not os.path.isdir(root):
        raise ImagingInputError(root, "not a folder")
    paths = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        paths.extend(os.path.join(dirpath, f) for f in sorted(filenames))
    result = read_dicom_files(paths)
    if not result.series:
        detail = ""
        if result.errors:
            detail = f" ({len(result.errors)} unreadable, e.g. {os.path.basename(result.errors[0].path)}: {result.errors[0].message})"
        elif result.skipped:
            detail = f" ({len(result.skipped)} file(s) skipped)"
        raise ImagingInputError(root, "no DICOM image files found" + detail)
    return result


def read_dicom_files(paths: Iterable[str | PathLike]) -> DicomFolderResult:
    """Read the given files; group into series and stacks; never raises for an individual bad file."""
    result = DicomFolderResult()
    by_series: dict[tuple[str, str], list[tuple[FileHeader, list[SliceRecord]]]] = {}
    series_problems: dict[tuple[str, str], list[str]] = {}
    shared: dict = {}  # values equal across files, stored once (dicom_slim.share_equal_values)
    for p in paths:
        path = os.fspath(p)
        try:
            ds = dicom_header.read_file(path)
            dicom_header.convert_elements(ds)  # malformed values fail here, attributed to this file
        except NotDicom:
            result.skipped.append(FileNote(path, "skipped: not a DICOM file"))
            continue
        except OSError as exc:
            result.errors.append(FileNote(path, f"cannot read file: {exc.strerror or exc}"))
            continue
        except MemoryError:  # not a property of the file: let the caller see it
            raise
        except Exception as exc:
            result.errors.append(FileNote(path, f"unreadable DICOM file: {redact_quoted(exc)}"))
            continue
        header = dicom_header.header_identity(path, ds)
        key = shared.setdefault(("series", header.study_uid, header.series_uid), (header.study_uid, header.series_uid))
        header.study_uid, header.series_uid = key  # one copy of the UIDs per series
        try:
            dicom_header.classify(ds)
            records = records_for(path, ds)
        except SkipFile as exc:
            result.skipped.append(FileNote(path, str(exc)))
            continue
        except PixelDecodeError as exc:
            result.errors.append(FileNote(path, str(exc)))
            series_problems.setdefault(key, []).append(f"{os.path.basename(path)}: {exc}")
            continue
        except MemoryError:
            raise
        except Exception as exc:
            result.errors.append(FileNote(path, f"invalid image header: {redact_quoted(exc)}"))
            series_problems.setdefault(key, []).append(
                f"{os.path.basename(path)}: invalid image header: {redact_quoted(exc)}")
            continue
        header.dataset = None  # from here on only the slice records (and their pixel sources) are needed
        slim_source(records, shared)
        by_series.setdefault(key, []).append((header, records))

    for key in list(by_series):
        members = by_series.pop(key)  # drop each series' datasets (pixel bytes) once it is built
        problems = list(series_problems.get(key, []))
        for (study, series), notes in series_problems.items():
            if (study, series) not in by_series and not series and study in ("", key[0]):
                problems.extend(f"{note} (series unknown, may belong to this series)" for note in notes)
        result.series.extend(_build_series(members, problems, result.errors))
    result.series.sort(key=lambda s: (s.series_number if s.series_number is not None else 1 << 30,
                                      s.study_uid, s.series_uid, str(s.volume.attributes.get("stack") or "")))
    return result


# --------------------------------------------------------------------------- series building
def _stacks_of(records: list[SliceRecord]) -> list[tuple[list[SliceRecord], dict[str, str]]]:
    """Split a series' records into stacks; each with its differing labels."""
    groups: dict[tuple, list[SliceRecord]] = {}
    for r in records:
        groups.setdefault(r.split_key, []).append(r)
    stacks: list[tuple[list[SliceRecord], dict[str, str]]] = []
    for recs in groups.values():
        parts = split_by_acquisition(recs)
        if parts is None:
            stacks.append((recs, dict(recs[0].split_labels)))
        else:
            for part in parts:
                a = part[0].acquisition
                stacks.append((part, {**part[0].split_labels, "acquisition": f"acquisition {a}"}))
    return stacks


def _stack_labels(stacks: list[tuple[list[SliceRecord], dict[str, str]]]) -> list[str | None]:
    if len(stacks) == 1:
        return [None]
    all_keys = list(dict.fromkeys(k for s in stacks for k in s[1]))
    keys = [k for k in all_keys if len({s[1].get(k) for s in stacks}) > 1]
    labels = [", ".join(s[1][k] for k in keys if k in s[1]) or "stack" for s in stacks]
    seen: dict[str, int] = {}
    out = []
    for n, lab in enumerate(labels):
        if labels.count(lab) > 1:
            seen[lab] = seen.get(lab, 0) + 1
            lab = f"{lab} #{seen[lab]}"
        out.append(lab)
    return out


def _name_suffixes(stacks: list[tuple[list[SliceRecord], dict[str, str]]]) -> list[str]:
    """dcm2niix-style file name suffix of each stack: ``_e<n>`` (several echoes of one image component, or echo
    number > 1) + component suffix (``_ph``, ``_real``, ...)."""
    out = []
    for _, labels in stacks:
        echo, component = labels.get("echo", ""), labels.get("component", "")
        same_kind = sorted({s[1].get("echo", "") for s in stacks if s[1].get("component", "") == component},
                           key=_echo_sort_key)
        n = same_kind.index(echo) + 1
        if echo.startswith("echo ") and echo[5:].isdigit():
            n = int(echo[5:])
        known = echo and echo not in ("echo ?", "TE ?")
        part = f"_e{n}" if known and (len(same_kind) > 1 or n > 1) else ""
        out.append(part + COMPONENT_SUFFIX.get(component, ""))
    return out


def _echo_sort_key(label: str) -> tuple:
    digits = "".join(c for c in label if c.isdigit() or c == ".")
    try:
        return (0, float(digits))
    except ValueError:
        return (1, label)


def _build_series(members: list[tuple[FileHeader, list[SliceRecord]]], problems: list[str],
                  errors: list[FileNote]) -> list[LoadedSeries]:
    header0 = members[0][0]
    all_records = [r for _, recs in members for r in recs]
    stacks = _stacks_of(all_records)
    labels = _stack_labels(stacks)
    suffixes = _name_suffixes(stacks)
    n_orient = len({s[0][0].split_key[0] for s in stacks})
    out: list[LoadedSeries] = []
    for (records, _), label, suffix in zip(stacks, labels, suffixes):
        try:
            loaded = _build_stack(records, label, len(stacks), n_orient, problems, errors, header0)
            if loaded is not None:
                loaded.volume.attributes["name_suffix"] = suffix
        except MemoryError:
            raise
        except Exception as exc:  # a header that passed the per-file checks but cannot form an image
            files = list(dict.fromkeys(r.path for r in records))
            problem = f"cannot assemble an image from {len(files)} file(s): {type(exc).__name__}: {redact_quoted(exc)}"
            errors.extend(FileNote(f, problem) for f in files)
            continue
        if loaded is not None:
            out.append(loaded)
    for r in all_records:
        r.source.release()
    return out


def _build_stack(records: list[SliceRecord], label: str | None, n_stacks: int, n_orient: int,
                 problems: list[str], errors: list[FileNote], header0: FileHeader) -> LoadedSeries | None:
    warnings: list[str] = [f"file left out of this series: {p}" for p in problems]
    sources = list({id(r.source): r.source for r in records}.values())
    failed = decode_all(sources)
    if failed:
        bad = {id(sources[i]) for i in failed}
        for i, exc in failed.items():
            errors.append(FileNote(sources[i].path, str(exc)))
            warnings.append(f"file left out of this series: {os.path.basename(sources[i].path)}: {exc}")
        records = [r for r in records if id(r.source) not in bad]
        if not records:
            return None
    if n_stacks > 1:
        reason = "mixed orientations; " if n_orient > 1 else ""
        warnings.append(f"{reason}series split into {n_stacks} stacks; this one is '{label}'")
    layout = layout_stack(records)
    warnings.extend(layout.warnings)
    layout.grid, dropped = drop_derived_trace(layout.grid)
    if dropped:
        warnings.append(f"{dropped} derived isotropic (trace/ADC) volume(s) left out: b > 0 without a gradient "
                        f"direction (Philips), as dcm2niix does")
    ordered = [r for row in layout.grid for r in row]
    nt, nz = len(layout.grid), len(layout.grid[0])
    first = ordered[0]
    shape = (nt, nz, first.rows, first.cols) if nt > 1 else (nz, first.rows, first.cols)
    ds = first.source.dataset
    attrs = series_attributes(ds)
    if first.series_offset and attrs.get("series_number") is not None:
        attrs["series_number"] += first.series_offset
    first_plane = ordered[0].pixels()
    planes = _planes_releasing(ordered)
    if is_monochrome1(ds):
        bits = int(ds.get("BitsStored") or ds.get("BitsAllocated") or 16)
        signed = int(ds.get("PixelRepresentation") or 0) == 1
        planes = (invert_monochrome1(p, bits, signed) for p in planes)
        first_plane = invert_monochrome1(first_plane, bits, signed)
        warnings.append("MONOCHROME1 image: stored values inverted to MONOCHROME2 (low values dark)")
    if first_plane.ndim == 3:  # 8-bit RGB: colour along the first (time) axis of the volume, R, G, B
        intensity = rgb_stack(list(planes), shape)
        warnings.append("colour (RGB) image: the volume holds R, G and B as 3 time points")
    else:
        intensity = stack_intensity(planes, first_plane.dtype, [r.slope for r in ordered],
                                    [r.intercept for r in ordered], [r.private_scale for r in ordered], shape,
                                    attrs.get("manufacturer") or "", has_functional_groups(ds))
    del first_plane
    if layout.gaps is not None and intensity.method != "RGB":
        intensity = refill(intensity, layout.gaps)
        attrs["interpolated_slices"] = list(layout.gaps.filled)
    array = intensity.physical
    attrs["intensity_scaling"] = intensity.metadata()
    files = list(dict.fromkeys(r.path for r in ordered))
    attrs["stack"] = label
    tr_s = attrs["repetition_time_ms"] / 1000.0 if attrs.get("repetition_time_ms") else None
    details = dicom_header.read_details(first.path) or ds  # once per stack: sidecar and presentation elements
    extra = vendor_fields(details)
    attrs["bids"] = bids_sidecar(details, extra, attrs, (first.rows, first.cols),
                                 slice_times(layout.grid, extra, tr_s)
                                 if nt > 1 and layout.gaps is None else None,
                                 first.split_labels.get("component", ""))
    if array.ndim == 4 and intensity.method != "RGB":
        fsl = fsl_gradients([row[0].gradient for row in layout.grid], layout.direction)
        if fsl is not None:
            attrs["diffusion"] = {"bvals": fsl[0], "bvecs": fsl[1].tolist(),
                                  "convention": "FSL: image axes i, j, k; i negated when det(direction) > 0"}
    attrs["n_files"] = len(files)
    time_step = None
    if nt > 1 and array.ndim == 4 and intensity.method != "RGB":
        tr = attrs.get("repetition_time_ms")
        time_step = float(tr) / 1000.0 if tr else _time_step_from_keys(layout.grid)
    origin = layout.origin
    if first.synthetic_geometry:
        origin = centred_origin(array.shape[-3:], layout.spacing)
        attrs["planar"] = planar_attributes(details)
        warnings.append("no patient geometry in the DICOM header (ImagePositionPatient/ImageOrientationPatient): "
                        "identity orientation, volume centred at 0 mm, slices in InstanceNumber order")
    volume = Volume(array=array, spacing=layout.spacing, origin=origin, direction=layout.direction,
                    time_step=time_step, warnings=tuple(warnings), attributes=attrs)
    return LoadedSeries(
        volume=volume,
        patient_id=header0.patient_id,
        study_uid=header0.study_uid,
        series_uid=header0.series_uid,
        series_number=attrs.get("series_number"),
        series_description=attrs.get("series_description") or "",
        modality=attrs.get("modality") or "",
        files=files,
        intensity=intensity,
    )


def _planes_releasing(ordered: list[SliceRecord]) -> Iterator[np.ndarray]:
    """The stored 2D planes in output order; a file's decoded frames are dropped once its last plane is out, so
    the decoded files and the stacked volume are not all held at once."""
    last = {id(r.source): n for n, r in enumerate(ordered)}
    for n, r in enumerate(ordered):
        yield r.pixels()
        if last[id(r.source)] == n:
            r.source.release()


def _time_step_from_keys(grid: list[list[SliceRecord]]) -> float | None:
    """Median interval (s) between the acquisition times of the first slice of successive time points."""
    times = [row[0].time_key[2] for row in grid]
    steps = np.diff(times)
    steps = steps[steps > 0]
    return statistics.median(steps.tolist()) if steps.size else None  # np.median would import numpy.ma
