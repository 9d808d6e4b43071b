"""Evaluation of the stored classifications per split (accuracy, ROC AUC, confusion matrix, calibration,
the majority-class accuracy for comparison) and the classification report
(``<root>/<dataset>/reports/classification.html``: metrics, reliability diagram, saliency overlays)."""

from __future__ import annotations

import numpy as np
from upath import UPath

from imaging_pipelines.classify.metrics import evaluate, majority_accuracy
from imaging_pipelines.classify.stages.inference import result_folder, stored_results
from imaging_pipelines.classify.stages.source import SPLITS
from imaging_pipelines.config.catalog import DatasetConfig


def evaluate_results(results: dict[str, dict], class_names: list[str]) -> dict[str, dict]:
    """Split -> :func:`~imaging_pipelines.classify.metrics.evaluate` of its labelled partitions, plus
    ``majority_accuracy`` (always predicting the most frequent class of the train split; None without one)."""
    labelled = {k: r for k, r in results.items() if r.get("reference") in class_names}
    train_truth = np.asarray([class_names.index(r["reference"]) for r in labelled.values() if r["split"] == "train"])
    out = {}
    for split in SPLITS:
        rows = [r for r in labelled.values() if r["split"] == split]
        probs = np.asarray([[r["probabilities"][n] for n in class_names] for r in rows]).reshape(-1, len(class_names))
        truth = np.asarray([class_names.index(r["reference"]) for r in rows], np.int64)
        ev = evaluate(probs, truth, class_names)
        ev["majority_accuracy"] = (round(majority_accuracy(train_truth, truth), 4)
                                   if len(train_truth) and len(truth) else None)
        out[split] = ev
    return out


def evaluate_dataset(dataset: DatasetConfig, root: UPath | str) -> tuple[dict[str, dict], str]:
    """The per-split evaluation of every stored classification and the path of the written report;
    ValueError when nothing has been classified yet."""
    from imaging_pipelines.report.classification import write_classification_report

    results = stored_results(root, dataset.id)
    if not results:
        raise ValueError(f"{dataset.id}: no classified partition yet (materialise classification first)")
    evaluation = evaluate_results(results, dataset.classification.class_names)
    folder = result_folder(root, dataset.id)
    overlays = {k: folder / f"{k}_saliency.png" for k in results}
    report = write_classification_report(root, dataset.id, evaluation, results,
                                         {k: p for k, p in overlays.items() if p.exists()})
    return evaluation, report
