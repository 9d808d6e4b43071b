"""What every stage returns, and how stages find their partition stores."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from upath import UPath

from imaging_pipelines.io.storage import partition_store_path

INGESTED = "ingested_scans"
PREPROCESSED = "preprocessed"
REGISTERED = "registered"


@dataclass
class CheckOutcome:
    passed: bool
    description: str
    metadata: dict[str, Any] = field(default_factory=dict)


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


def image_modality(attributes: dict[str, Any]) -> str:
    return str(attributes.get("modality") or "").upper()
