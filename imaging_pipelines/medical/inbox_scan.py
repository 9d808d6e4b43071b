"""Scan a medical dataset's inbox for partitions: the patients present now and those whose files changed."""

from __future__ import annotations

from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.inbox_scan import InboxScan, owner_digest
from imaging_pipelines.medical.inbox import diff_inbox, list_inbox
from imaging_pipelines.medical.inbox_index import write_index


def scan_patients(dataset: DatasetConfig, previous_state: dict | None, index_root: UPath | str | None = None) -> InboxScan:
    """Scan a medical dataset's inbox: patients (pseudonymous keys) now present and those whose files are
    new, changed or removed since ``previous_state`` (only new or changed files have their headers read).
    ``index_root``: the storage root; when given, the inbox index of the changed partitions (and of those
    without one) is written there (:mod:`imaging_pipelines.medical.inbox_index`) for their runs to read."""
    listing = list_inbox(dataset.inbox, dataset.formats, dataset.label_suffixes,
                         dataset.inbox_checks.quiescence())
    files = listing.files
    changes = diff_inbox(previous_state or {}, files)
    warnings = [f"{folder or '.'}/: files still changing; read once unchanged for "
                f"{dataset.inbox_checks.quiescence():g} s" for folder in listing.waiting]
    if changes.unassigned:
        warnings.append(
            f"{len(changes.unassigned)} inbox file(s) belong to no patient (not DICOM, no DICOM beside them): "
            + ", ".join(f.relpath for f in changes.unassigned[:10])
        )
    digests = {k: owner_digest(changes.state, k) for k in changes.current_patients}
    requests = [(k, digests[k]) for k in changes.changed_patients]
    if index_root is not None:
        write_index(index_root, dataset.id, dataset.inbox, files, changes.state, digests, changes.changed_patients)
    return InboxScan(list(changes.current_patients), requests, changes.state, warnings, list(listing.problems),
                     digests=digests)
