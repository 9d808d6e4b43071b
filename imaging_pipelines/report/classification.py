"""The classification report (``<root>/<dataset>/reports/classification.html``) and its figures: the
saliency overlay of one image (Grad-CAM map in a heat colour map over the network input) and the
reliability diagram of each split (accuracy against mean confidence per confidence bin)."""

from __future__ import annotations

from typing import Any

import numpy as np
from matplotlib import colormaps
from upath import UPath

from imaging_pipelines.report.figures import reliability_diagram
from imaging_pipelines.report.html import Figure, Section, report_path, write_report
from imaging_pipelines.report.thumbnails import to_png

MAX_OVERLAYS = 48  # saliency overlays embedded in the report (the first, by partition key); the rest stay as files


def saliency_overlay(rgb: np.ndarray, saliency: np.ndarray, width: int = 256) -> bytes:
    """PNG: ``rgb`` (y, x, 3) in [0, 1] beside the same image with ``saliency`` (y, x) in [0, 1] blended in
    the ``jet`` colour map (weight 0.5 x saliency, so low saliency leaves the image visible)."""
    heat = colormaps["jet"](np.clip(saliency, 0, 1))[..., :3]
    alpha = 0.5 * np.clip(saliency, 0, 1)[..., None]
    blended = rgb * (1 - alpha) + heat * alpha
    gap = np.ones((rgb.shape[0], max(1, rgb.shape[1] // 16), 3))
    return to_png(np.concatenate([rgb, gap, blended], axis=1), max_width=2 * width)


def write_classification_report(root: UPath | str, dataset_id: str, evaluation: dict[str, dict],
                                results: dict[str, dict], overlays: dict[str, UPath]) -> str:
    """Write the report and return its path: metrics per split, confusion matrices, reliability diagram,
    the per-partition results and the saliency overlays."""
    metrics = [{"split": s, "images": ev["n"], "accuracy": ev["accuracy"], "roc_auc": ev["roc_auc"],
                "ece": (ev.get("calibration") or {}).get("ece"), "majority_accuracy": ev.get("majority_accuracy")}
               for s, ev in evaluation.items()]
    tables: list[tuple[str, list[dict[str, Any]]]] = [("Per split", metrics)]
    for split, ev in evaluation.items():
        if ev["n"]:
            rows = [{"reference \\ predicted": name, **dict(zip(ev["classes"], counts))}
                    for name, counts in zip(ev["classes"], ev["confusion"])]
            tables.append((f"Confusion matrix, {split}", rows))
    sections = [Section("metrics", "Evaluation", text=[
        "Accuracy, ROC AUC (one-vs-rest macro average for more than two classes), expected calibration error "
        "over 10 confidence bins, and the accuracy of always predicting the train split's most frequent class."],
        tables=tables, figures=[Figure(reliability_diagram(evaluation), "Reliability diagram")])]
    rows = [{"partition": k, "split": r["split"], "reference": r.get("reference"), "predicted": r["predicted"],
             "p(predicted)": r["probabilities"][r["predicted"]]} for k, r in results.items()]
    sections.append(Section("results", "Per image", tables=[("Predictions", rows)]))
    shown = sorted(overlays)[:MAX_OVERLAYS]
    sections.append(Section("saliency", "Saliency (Grad-CAM)", text=[
        f"Grad-CAM of the predicted class over each image ({len(shown)} of {len(overlays)} shown)."],
        figures=[Figure(overlays[k].read_bytes(), f"{k}: predicted {results[k]['predicted']}, "
                        f"reference {results[k].get('reference')}") for k in shown]))
    summary = {f"{s}_accuracy": ev["accuracy"] for s, ev in evaluation.items()}
    outcome = write_report(report_path(root, dataset_id, "classification"), "cohort.html.j2",
                           f"Classification report {dataset_id}", sections, [], summary, dataset=dataset_id,
                           domain="classification", n_items=len(results), item_kind="classified images")
    return outcome.path
