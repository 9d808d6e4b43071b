"""Evaluation of the masks against reference labels: per patient (model and every baseline side by side,
per class) and over the cohort (mean / median per method and class, on the held-out test split and on all).

Per-patient results: ``<root>/<dataset>/segmentation_evaluation/<partition>.json`` (a list of rows: image,
method, class, split, dice, iou, hd95_mm, volume_pred_ml, volume_ref_ml, volume_difference_ml). The
``method`` of the model is ``model``; baselines are ``baseline_<name>``. HD95 in mm, volumes in mL.
"""

from __future__ import annotations

import json
import math
import time

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.config.segmentation import EvaluationConfig
from imaging_pipelines.medical.io.ome_zarr import read_labels, store_attributes
from imaging_pipelines.core.storage import as_upath
from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
from imaging_pipelines.core.stage_result import CheckOutcome, StageResult, stage_store
from imaging_pipelines.medical.stages.segmentation_data import EVALUATED, SEGMENTED, partition_split

METRICS = ("dice", "iou", "hd95_mm", "volume_pred_ml", "volume_ref_ml", "volume_difference_ml")


def evaluation_file(root: UPath | str, dataset_id: str, partition: str) -> UPath:
    return as_upath(root) / dataset_id / EVALUATED / f"{partition}.json"


def evaluate_partition(dataset: DatasetConfig, partition: str, root: UPath | str) -> StageResult:
    """Score every mask of the partition's segmentation store that has a reference; write the JSON rows."""
    start = time.perf_counter()
    store = stage_store(root, dataset.id, SEGMENTED, partition)
    split = partition_split(dataset, partition)
    classes = dataset.segmentation.classes
    rows, notes = [], []
    for image in store_attributes(store).get("images", []):
        labels = read_labels(store, image)
        reference = labels.pop("reference", None)
        if reference is None:
            notes.append(f"{image}: no reference label; not evaluated")
            continue
        for method, mask in labels.items():
            scores = segmentation_metrics(mask, reference, labels=list(classes.values()))
            for name, value in classes.items():
                rows.append({"image": image, "method": "model" if method == "segmentation" else method,
                             "class": name, "split": split,
                             **{k: _finite(scores[value][k]) for k in METRICS}})
    out = evaluation_file(root, dataset.id, partition)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(rows, indent=1))
    return StageResult(str(out), sorted({r["image"] for r in rows}), rows, notes, {}, time.perf_counter() - start)


def _finite(value: float) -> float | None:
    """JSON-safe metric: None for NaN (undefined), a large number stands in for no inf (kept as 'inf' string)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return round(float(value), 5) if math.isfinite(value) else float("inf")


def cohort_evaluation(dataset: DatasetConfig, root: UPath | str) -> tuple[list[dict], int]:
    """Rows ``{method, class, split, n, n_scored (cases with a Dice), dice_mean, dice_median, hd95_median_mm, abs_volume_difference_ml_mean}``
    for split ``test`` and ``all``, plus the number of evaluated partitions."""
    folder = as_upath(root) / dataset.id / EVALUATED
    files = sorted(p for p in folder.iterdir() if p.name.endswith(".json")) if folder.exists() else []
    rows = [r for f in files for r in json.loads(f.read_text())]
    summary = []
    for split in ("test", "all"):
        chosen = [r for r in rows if split == "all" or r["split"] == split]
        for method in sorted({r["method"] for r in chosen}, key=lambda m: (m != "model", m)):
            for name in dataset.segmentation.classes:
                sel = [r for r in chosen if r["method"] == method and r["class"] == name]
                dice = [r["dice"] for r in sel if r["dice"] is not None]
                hd = [r["hd95_mm"] for r in sel if r["hd95_mm"] is not None]
                vol = [abs(r["volume_difference_ml"]) for r in sel if r["volume_difference_ml"] is not None]
                summary.append({"method": method, "class": name, "split": split, "n": len(sel), "n_scored": len(dice),
                                "dice_mean": _mean(dice), "dice_median": _median(dice),
                                "hd95_median_mm": _median(hd), "abs_volume_difference_ml_mean": _mean(vol)})
    return summary, len(files)


def _mean(values: list[float]) -> float:
    return round(float(np.mean(values)), 4) if values else float("nan")


def _median(values: list[float]) -> float:
    return round(float(np.median(values)), 4) if values else float("nan")


def cohort_checks(summary: list[dict], floors: EvaluationConfig, split: str = "test") -> dict[str, CheckOutcome]:
    """The cohort's quality gates on ``split``, by check name:

    - ``test_dice_above_floor``: the model's mean Dice reaches ``floors.min_test_dice`` for every class;
    - ``model_beats_baselines_on_test_split``: the model's mean Dice beats every baseline's, for every class,
      and reaches the floor too (beating baselines that all fail proves nothing).

    With fewer than ``floors.min_evaluable_cases`` scored model cases of a class, both fail with severity
    ``warn``: there is too little to judge.
    """
    rows = [r for r in summary if r["split"] == split and r["n_scored"]]
    model = {r["class"]: r for r in rows if r["method"] == "model"}
    scored = {name: r["n_scored"] for name, r in model.items()}
    meta = {"min_test_dice": floors.min_test_dice, "min_evaluable_cases": floors.min_evaluable_cases,
            "scored_cases": scored}
    if not model or min(scored.values()) < floors.min_evaluable_cases:
        text = (f"not judged: {min(scored.values()) if scored else 0} scored {split} case(s), fewer than "
                f"min_evaluable_cases {floors.min_evaluable_cases}")
        warn = CheckOutcome(False, text, meta, severity="warn")
        return {"test_dice_above_floor": warn, "model_beats_baselines_on_test_split": warn}
    below = [f"{name}: model {r['dice_mean']} < floor {floors.min_test_dice}" for name, r in model.items()
             if not r["dice_mean"] >= floors.min_test_dice]
    losing = [f"{r['class']}: model {model[r['class']]['dice_mean']} <= {r['method']} {r['dice_mean']}"
              for r in rows if r["method"] != "model" and r["class"] in model
              and not model[r["class"]]["dice_mean"] > r["dice_mean"]]
    floor = CheckOutcome(not below, "; ".join(below) or f"model Dice reaches {floors.min_test_dice} on the {split} "
                         "split for every class", meta)
    beats = CheckOutcome(not (below or losing), "; ".join(below + losing) or
                         f"the model beats every baseline on the {split} split and reaches the floor", meta)
    return {"test_dice_above_floor": floor, "model_beats_baselines_on_test_split": beats}
