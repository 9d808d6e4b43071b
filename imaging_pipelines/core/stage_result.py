"""What every stage returns, and how stages find their partition stores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from upath import UPath

from imaging_pipelines.core.storage import as_upath, partition_store_path
from imaging_pipelines.core.asset_names import INGESTED, PREPROCESSED, REGISTERED  # noqa: F401 (re-exported)



@dataclass
class CheckOutcome:
    """One asset check's verdict. ``severity`` ``"warn"``: a failure that only warns (e.g. too few evaluable
    cases to judge); ``"error"``: a real failure."""

    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)
    severity: str = "error"


@dataclass
class StageResult:
    """Outcome of one stage for one partition."""

    store_path: str
    images: list[str] = field(default_factory=list)
    rows: list[dict[str, Any]] = field(default_factory=list)  # one row per image (and step), plain values
    notes: list[str] = field(default_factory=list)
    checks: dict[str, CheckOutcome] = field(default_factory=dict)
    runtime_s: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)  # stage-specific figures for the asset metadata


def stable_fraction(seed: int, key: str) -> float:
    """A number in [0, 1) fixed by ``seed`` and ``key`` (SHA-256): assigns partitions to train / test splits
    so that adding partitions never moves existing ones."""
    return int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 2**32


def stage_store(root: UPath | str, dataset_id: str, stage: str, partition: str) -> UPath:
    return partition_store_path(root, dataset_id, stage, partition)


def stored_partitions(root: UPath | str, dataset_id: str, stage: str) -> list[str]:
    """The sorted partition keys with a store under ``<root>/<dataset_id>/<stage>/`` (none when it is absent)."""
    folder = as_upath(root) / dataset_id / stage
    if not folder.exists():
        return []
    return sorted(p.name[: -len(".zarr")] for p in folder.iterdir() if p.name.endswith(".zarr"))


def image_modality(attributes: dict[str, Any]) -> str:
    return str(attributes.get("modality") or "").upper()
