"""Scan an inbox folder and group its files by (pseudonymous) patient.

Patient identity: a DICOM file's PatientID (its folder when PatientID is empty); for NIfTI / NRRD /
MetaImage files, which carry no patient tag, the BIDS-style file-name prefix before the first ``_``
(``sub-01_T1w.nii.gz``), else the folder holding the file, else the file stem. Label files (a name ending
in one of the catalog's label suffixes, e.g. ``s01_t1_label.nii.gz``) belong to the patient whose DICOM
files lie in their folder or directly below it, else to the subject of their own name. Identities are pseudonymised at once; raw values never
leave this module. Files that are neither DICOM nor a known image format go to the patient whose DICOM
files share their folder (so that patient's ingestion reports them), or are returned as unassigned.
"""

from __future__ import annotations

import os
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from imaging_pipelines.config.catalog import configured_data_roots
from imaging_pipelines.core.inbox_safety import safe_listing
from imaging_pipelines.medical.io.image_files import image_file_format
from imaging_pipelines.core.privacy import pseudonymise
from imaging_pipelines.core.remote_inbox import fetch, is_remote, list_remote_files

IGNORED_NAMES = {".DS_Store", "Thumbs.db", "DICOMDIR"}


@dataclass(frozen=True)
class InboxFile:
    """One file of an inbox. ``format`` is 'dicom' (candidate), 'nifti', 'nrrd' or 'mha'."""

    path: str
    relpath: str
    format: str
    size: int
    mtime_ns: int
    is_label: bool = False  # a reference label map, not an image to ingest

    @property
    def signature(self) -> str:
        return f"{self.size}:{self.mtime_ns}"


    @property
    def inbox(self) -> str:
        """The inbox this file was listed from (folder or URI)."""
        return self.path[: len(self.path) - len(self.relpath)].rstrip("/")

    def local_path(self) -> str:
        """A local file to read: the file itself, or a cached copy for a remote inbox."""
        if not is_remote(self.path):
            return self.path
        return fetch(self.path, self.relpath, self.inbox, self.size, self.mtime_ns)


def _wanted(relpath: str, formats: list[str]) -> str | None:
    """The file's format if the inbox should consider it, else None (hidden, ignored, other format)."""
    parts = Path(relpath).parts
    name = parts[-1]
    if any(p.startswith(".") for p in parts) or name in IGNORED_NAMES or ".staging-" in name or name.endswith(".partial"):
        return None
    fmt = image_file_format(name) or "dicom"
    return fmt if fmt in formats else None


def is_label_name(relpath: str, label_suffixes: tuple[str, ...] | list[str]) -> bool:
    """True for ``<anything><suffix>.<image extension>``, e.g. ``sub-01_T1w_label.nii.gz`` with ``_label``."""
    name = Path(relpath).name
    if image_file_format(name) is None:
        return False
    stem = name.split(".")[0].lower()
    return any(stem.endswith(s.lower()) for s in label_suffixes if s)


@dataclass
class InboxListing:
    """``files``: the candidates; ``problems``: refused or unreadable entries (one message each); ``waiting``:
    folders whose files are still changing (see :mod:`imaging_pipelines.core.inbox_safety`)."""

    files: list[InboxFile]
    problems: list[str]
    waiting: list[str]


def list_inbox(inbox: str | os.PathLike, formats: list[str], label_suffixes: tuple[str, ...] | list[str] = (),
               quiescent_seconds: float = 0.0) -> InboxListing:
    """Every candidate file under ``inbox`` (a folder or fsspec URI; recursive; hidden files skipped), sorted,
    listed as a hostile folder would need (:func:`~imaging_pipelines.core.inbox_safety.safe_listing`: links
    outside the data roots refused, unreadable entries reported, files unchanged for less than
    ``quiescent_seconds`` left for a later scan). Files named like labels (:func:`is_label_name`) are flagged
    ``is_label``."""
    problems: list[str] = []
    waiting: list[str] = []
    if is_remote(inbox):  # object stores: no links, no ctime; the object's mtime must be old enough
        now, listing = time.time(), []
        for entry in list_remote_files(str(inbox)):
            (listing if now - entry[3] / 1e9 >= quiescent_seconds else waiting).append(entry)
        waiting = sorted({str(Path(entry[1]).parent) for entry in waiting})
        listing = [entry for entry in listing if str(Path(entry[1]).parent) not in waiting]  # folders wait whole
    else:
        root = Path(inbox)
        listing = []
        if root.is_dir():
            safe = safe_listing(root, configured_data_roots(), quiescent_seconds)
            listing = [(f.path, f.relpath, f.size, f.mtime_ns) for f in safe.files]
            problems, waiting = safe.problems, safe.waiting
    found = []
    for path, relpath, size, mtime_ns in listing:
        fmt = _wanted(relpath, formats)
        if fmt is not None:
            found.append(InboxFile(path, relpath, fmt, size, mtime_ns, is_label_name(relpath, label_suffixes)))
    return InboxListing(found, problems, waiting)


def list_inbox_files(inbox: str | os.PathLike, formats: list[str], label_suffixes: tuple[str, ...] | list[str] = (),
                     quiescent_seconds: float = 0.0) -> list[InboxFile]:
    """The files of :func:`list_inbox` (its problems and waiting folders dropped)."""
    return list_inbox(inbox, formats, label_suffixes, quiescent_seconds).files


_identity_cache: dict[tuple[str, str], tuple[str | None, str]] = {}


def file_pseudonym(file: InboxFile) -> str | None:
    """Pseudonymous patient key of one file, or None for a file that is not DICOM (cached by size and mtime)."""
    return file_identity(file)[0]


def file_identity(file: InboxFile) -> tuple[str | None, str]:
    """(pseudonymous patient key or None for a file that is not DICOM, pseudonym of its DICOM series or "")
    from one header read, cached by path, size and mtime."""
    key = (file.path, file.signature)
    if key not in _identity_cache:
        _identity_cache[key] = _identity_uncached(file)
    return _identity_cache[key]


def _identity_uncached(file: InboxFile) -> tuple[str | None, str]:
    if file.format == "dicom":
        from imaging_pipelines.medical.io.dicom import read_identity

        identity = read_identity(file.local_path())
        if identity is None:
            return None, ""
        patient_id, series_uid = identity
        series = pseudonymise(series_uid, "dicom-series-uid") if series_uid.strip() else ""
        if patient_id.strip():
            return pseudonymise(patient_id, "dicom-patient-id"), series
        return pseudonymise(str(Path(file.relpath).parent), "inbox-folder"), series  # no PatientID: folder identity
    return pseudonymise(file_subject(file.relpath), "inbox-subject"), ""


def file_subject(relpath: str) -> str:
    """Subject of a NIfTI / NRRD / MHA file: the BIDS-style name prefix before the first ``_``
    (``sub-01_T1w.nii.gz`` -> ``sub-01``), else the folder it lies in, else the file stem."""
    path = Path(relpath)
    stem = path.name.split(".")[0]
    if "_" in stem:
        return stem.split("_")[0]
    return path.parent.name if len(path.parts) > 1 else stem


@dataclass
class InboxGroups:
    by_patient: dict[str, list[InboxFile]]
    unassigned: list[InboxFile]


def _owned_folders(f: InboxFile) -> list[str]:
    """Folder keys a file's patient owns: its folder, and for DICOM also ``<parent>/*`` (label files one level up)."""
    folder = Path(f.relpath).parent
    return [str(folder), f"{folder.parent}/*"] if f.format == "dicom" else [str(folder)]


def group_by_patient(files: list[InboxFile], known_owner: dict[str, str] | None = None) -> InboxGroups:
    """Group inbox files by pseudonymous patient key. ``known_owner`` (folder key -> patient, from
    :func:`_owned_folders` of files seen earlier) places files that carry no identity themselves."""
    by_patient: dict[str, list[InboxFile]] = defaultdict(list)
    folder_owner: dict[str, str] = dict(known_owner or {})
    orphans: list[InboxFile] = []
    labels: list[InboxFile] = []
    for f in files:
        if f.is_label:
            labels.append(f)
            continue
        key = file_pseudonym(f)
        if key is None:
            orphans.append(f)
            continue
        by_patient[key].append(f)
        for folder in _owned_folders(f):
            folder_owner.setdefault(folder, key)
    unassigned = []
    for f in orphans:
        owner = folder_owner.get(str(Path(f.relpath).parent))
        (by_patient[owner] if owner else unassigned).append(f)
    for f in labels:
        folder = str(Path(f.relpath).parent)
        owner = folder_owner.get(folder) or folder_owner.get(f"{folder}/*") or file_pseudonym(f)
        by_patient[owner].append(f)
    return InboxGroups(dict(by_patient), unassigned)


def scan_inbox(inbox: str | os.PathLike, formats: list[str], label_suffixes: tuple[str, ...] | list[str] = (),
               quiescent_seconds: float = 0.0) -> InboxGroups:
    return group_by_patient(list_inbox_files(inbox, formats, label_suffixes, quiescent_seconds))


def path_token(relpath: str) -> str:
    """Short hash of an inbox-relative path (sensor cursors store these, never the paths themselves)."""
    import hashlib

    return hashlib.sha256(relpath.encode()).hexdigest()[:20]


@dataclass
class InboxChanges:
    """What changed in an inbox since the previous scan. ``state`` is the new cursor content."""

    state: dict[str, list[str]]  # path token -> [size:mtime signature, patient key or ""]
    changed_patients: list[str]  # patients with new, changed or removed files that still have files
    current_patients: list[str]
    unassigned: list[InboxFile]


def diff_inbox(previous: dict[str, list[str]], files: list[InboxFile]) -> InboxChanges:
    """Compare the inbox with the previous state; only new or changed files have their headers read."""
    state: dict[str, list[str]] = {}
    changed: set[str] = set()
    fresh: list[InboxFile] = []
    known_owner: dict[str, str] = {}
    for f in files:
        token = path_token(f.relpath)
        prev = previous.get(token)
        if prev and prev[0] == f.signature:
            state[token] = prev
            if prev[1] and not f.is_label:
                for folder in _owned_folders(f):
                    known_owner.setdefault(folder, prev[1])
        else:
            fresh.append(f)
    groups = group_by_patient(fresh, known_owner)
    for key, members in groups.by_patient.items():
        changed.add(key)
        for f in members:
            state[path_token(f.relpath)] = [f.signature, key]
    unassigned = []
    for f in groups.unassigned:
        owner = known_owner.get(str(Path(f.relpath).parent), "")
        state[path_token(f.relpath)] = [f.signature, owner]
        if owner:
            changed.add(owner)
        else:
            unassigned.append(f)
    for token, (_, owner) in previous.items():
        if token not in state and owner:
            changed.add(owner)  # a file of this patient was removed
    current = sorted({owner for _, owner in state.values() if owner})
    return InboxChanges(state, sorted(changed & set(current)), current, unassigned)
