"""Persistent, non-identifying index of a medical inbox: which files each partition (patient) owns.

Every inbox scan that knows the storage root (the inbox sensor and schedule, ``imaging-pipelines run``)
writes it; a partition's run (ingestion, the DICOM SEG writer) reads its own files from it instead of
listing the inbox and reading every header to find them, so the cost of a run is O(its own files).

**Layout.** One JSON file per partition, ``<storage root>/<dataset>/_inbox_index/<partition>.json``, and
``_unassigned.json`` for the files that belong to no patient. JSON shards rather than one SQLite file
because the storage root may be an object store (``s3://``), where SQLite cannot live and only whole-object
writes are atomic: each shard is written whole with :func:`write_text_atomic`; a run reads only its own
shard; a scan rewrites only the shards of partitions whose files changed (or that have none yet); scans
are the only writers, so nothing needs a lock.

**Record per file** (in the order the partition's ingestion reads them)::

    {"token": <hash of the inbox-relative path>, "relpath": "case_a/IM0001.dcm", "format": "dicom",
     "size": 1234, "mtime_ns": ..., "series": <pseudonym of the SeriesInstanceUID or "">,
     "role": "image" | "label" | "unassigned"}

**Privacy.** The partition key and the series are HMAC pseudonyms (:func:`pseudonymise`); no header value
(PatientID, names, dates, UIDs) is stored. The inbox-relative path is kept because a run must find its
files without listing the inbox; it is the level of detail the project already records: ingestion errors
and notes name files by inbox-relative path in the Dagster event log, and ``_failures.jsonl`` beside this
folder holds those messages. (Sensor cursors and the schedule's scan cache keep path hashes only.)

**Staleness.** A run checks the size and mtime of each of its files; when one is missing or differs, or
the shard is missing, unreadable or written for another inbox, it falls back to a full scan
(:func:`imaging_pipelines.medical.inbox.scan_inbox`). A file added to a partition after the last scan is
seen by the next scan, which rewrites the shard and requests a new run of that partition.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from upath import UPath

from imaging_pipelines.core.remote_inbox import is_remote, remote_file_signature
from imaging_pipelines.core.storage import as_upath, write_text_atomic
from imaging_pipelines.medical.inbox import InboxFile, file_identity, path_token, scan_inbox

INDEX_FOLDER = "_inbox_index"
UNASSIGNED = "_unassigned"
INDEX_VERSION = 1


def shard_path(root: UPath | str, dataset_id: str, partition: str) -> UPath:
    """``<root>/<dataset>/_inbox_index/<partition>.json``."""
    return as_upath(root) / dataset_id / INDEX_FOLDER / f"{partition}.json"


def inbox_token(inbox: str | os.PathLike) -> str:
    """Hash of the inbox location: a shard written for another inbox is not used."""
    return path_token(str(inbox))


def _record(f: InboxFile, role: str, series: str) -> dict:
    return {"token": path_token(f.relpath), "relpath": f.relpath, "format": f.format, "size": f.size,
            "mtime_ns": f.mtime_ns, "series": series, "role": role}


def read_shard(root: UPath | str, dataset_id: str, partition: str) -> dict | None:
    """A partition's shard as written, or None when missing or unreadable."""
    path = shard_path(root, dataset_id, partition)
    try:
        shard = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return shard if isinstance(shard, dict) and shard.get("version") == INDEX_VERSION else None


def _series(f: InboxFile, previous: dict[str, dict]) -> str:
    """The file's series pseudonym: the previous record's when the file is unchanged, else one header read."""
    old = previous.get(path_token(f.relpath))
    if old and old.get("size") == f.size and old.get("mtime_ns") == f.mtime_ns:
        return old.get("series", "")
    return file_identity(f)[1] if f.format == "dicom" else ""


def write_partition_shard(root: UPath | str, dataset_id: str, inbox: str | os.PathLike, partition: str,
                          files: list[InboxFile], digest: str, role: str | None = None) -> str:
    """Write one partition's shard atomically (``role`` None: label files ``label``, others ``image``)."""
    old = read_shard(root, dataset_id, partition) or {}
    previous = {r["token"]: r for r in old.get("files", []) if isinstance(r, dict) and "token" in r}
    ordered = [f for f in files if not f.is_label] + [f for f in files if f.is_label]
    records = [_record(f, role or ("label" if f.is_label else "image"), _series(f, previous)) for f in ordered]
    shard = {"version": INDEX_VERSION, "dataset": dataset_id, "partition": partition, "inbox": inbox_token(inbox),
             "digest": digest, "files": records}
    return write_text_atomic(shard_path(root, dataset_id, partition), json.dumps(shard, indent=1))


def write_index(root: UPath | str, dataset_id: str, inbox: str | os.PathLike, files: list[InboxFile],
                state: dict[str, list[str]], digests: dict[str, str], changed: list[str]) -> list[str]:
    """After a scan: write the shard of every partition in ``changed`` or without a shard yet, and the
    unassigned files. ``files``: the inbox listing; ``state``: path token -> [signature, owner];
    ``digests``: partition -> digest of its files. Returns the partitions written."""
    by_owner: dict[str, list[InboxFile]] = {}
    for f in files:
        entry = state.get(path_token(f.relpath))
        by_owner.setdefault(entry[1] if entry and entry[1] else UNASSIGNED, []).append(f)
    changed_set = set(changed)
    written = []
    for owner, members in by_owner.items():
        if owner == UNASSIGNED:
            continue
        if owner in changed_set or not shard_path(root, dataset_id, owner).exists():
            write_partition_shard(root, dataset_id, inbox, owner, members, digests.get(owner, ""))
            written.append(owner)
    unassigned = by_owner.get(UNASSIGNED, [])
    if unassigned or shard_path(root, dataset_id, UNASSIGNED).exists():
        write_partition_shard(root, dataset_id, inbox, UNASSIGNED, unassigned, "", role="unassigned")
    return written


def _current_signature(path: str) -> tuple[int, int] | None:
    if is_remote(path):
        return remote_file_signature(path)
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_size, st.st_mtime_ns


def _file_path(inbox: str | os.PathLike, relpath: str) -> str:
    """The path :func:`list_inbox_files` gives the file (so caches keyed by path agree)."""
    return str(UPath(str(inbox)) / relpath) if is_remote(inbox) else str(Path(inbox) / relpath)


def indexed_partition_files(dataset, root: UPath | str, partition: str) -> list[InboxFile] | None:
    """The partition's files from its shard, each checked against the inbox (size and mtime); None when
    the shard is missing, unreadable, for another inbox, or any of its files is missing or changed."""
    shard = read_shard(root, dataset.id, partition)
    if shard is None or shard.get("inbox") != inbox_token(dataset.inbox):
        return None
    files = []
    for r in shard.get("files", []):
        path = _file_path(dataset.inbox, r["relpath"])
        if _current_signature(path) != (r["size"], r["mtime_ns"]):
            return None
        files.append(InboxFile(path, r["relpath"], r["format"], r["size"], r["mtime_ns"], r["role"] == "label"))
    return files or None


def partition_files(dataset, root: UPath | str, partition: str) -> tuple[list[InboxFile], bool]:
    """(the partition's inbox files, whether they came from the index): the index when it is fresh for
    this partition, else a full scan of the inbox (every header read). ``dataset``: a catalog
    ``DatasetConfig``. The list is empty when no file of the inbox belongs to the partition."""
    files = indexed_partition_files(dataset, root, partition)
    if files is not None:
        return files, True
    groups = scan_inbox(dataset.inbox, dataset.formats, dataset.label_suffixes, dataset.inbox_checks.quiescence())
    return groups.by_patient.get(partition, []), False
