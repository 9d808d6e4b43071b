"""What :func:`imaging_pipelines.models.protocol.train_or_reuse` returns, in one shape for every model, and
the quality gate a model asset applies to it.

``report`` is the training report exactly as stored beside the model file (``<prefix>-<version>.json``), so
a reused model reports what its training run measured. ``metrics`` is the task's summary of that report
(flat names such as ``best_validation_dice`` or ``mean_validation_iou``; values are numbers, None, or small
JSON-able dicts); ``curve`` is the per-epoch training curve for display.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from imaging_pipelines.core.stage_result import CheckOutcome


@dataclass(frozen=True)
class ModelOutcome:
    name: str  # the model's asset name (also its folder: <root>/<dataset>/<name>/)
    version: str  # 16 hex digits: hash of training code, training data and parameters
    trained: bool  # False when the model of this version already existed and was reused
    path: str  # the model file, <root>/<dataset>/<name>/<prefix>-<version>.pt
    report: dict[str, Any] = field(default_factory=dict)  # the stored training report (JSON)
    runtime_s: float = 0.0  # seconds spent in this call (gathering data + training or reuse)
    metrics: dict[str, Any] = field(default_factory=dict)  # the task's summary of the report
    curve: list[Any] = field(default_factory=list)  # per-epoch training curve (loss, or records with scores)


@dataclass(frozen=True)
class MetricCheck:
    """A model passes when ``metrics[metric] >= threshold``. A missing (None) or NaN metric passes only with
    ``missing_passes`` (for models trained without a validation split, whose score cannot be measured)."""

    name: str  # the asset check name, e.g. "validation_dice_above_threshold"
    metric: str  # key of ModelOutcome.metrics
    threshold: float
    missing_passes: bool = False

    def evaluate(self, outcome: ModelOutcome) -> CheckOutcome:
        """Pass/fail with a description and metadata (``threshold`` and the metric; -1.0 when missing)."""
        value = outcome.metrics.get(self.metric)
        missing = value is None or (isinstance(value, float) and math.isnan(value))
        passed = self.missing_passes if missing else float(value) >= self.threshold
        return CheckOutcome(
            passed=passed,
            description=f"{self.metric} {'not measured' if missing else value} vs threshold {self.threshold}",
            metadata={"threshold": self.threshold, self.metric: -1.0 if missing else float(value)},
        )
