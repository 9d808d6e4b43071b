"""Evaluation of class probabilities against reference classes: accuracy, ROC AUC (one-vs-rest macro
average for more than two classes), the confusion matrix and calibration (reliability bins + expected
calibration error, ECE). Pure numpy + scikit-learn, JSON-able results (no torch, no dagster)."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.metrics import roc_auc_score


def roc_auc(probabilities: np.ndarray, truth: np.ndarray) -> float | None:
    """ROC AUC of ``probabilities`` (n, k) for ``truth`` (n,) class indices: the positive class's AUC for
    k = 2, the macro one-vs-rest AUC over the classes present for k > 2; None when fewer than two classes
    are present (AUC undefined)."""
    truth = np.asarray(truth, np.int64)
    present = np.unique(truth)
    if len(present) < 2:
        return None
    k = probabilities.shape[1]
    if k == 2:
        return float(roc_auc_score(truth, probabilities[:, 1]))
    aucs = [roc_auc_score(truth == c, probabilities[:, c]) for c in present]
    return float(np.mean(aucs))


def confusion(truth: np.ndarray, predicted: np.ndarray, k: int) -> list[list[int]]:
    """``k`` x ``k`` counts: row = reference class index, column = predicted class index."""
    m = np.zeros((k, k), np.int64)
    np.add.at(m, (np.asarray(truth, np.int64), np.asarray(predicted, np.int64)), 1)
    return m.tolist()


def calibration(probabilities: np.ndarray, truth: np.ndarray, bins: int = 10) -> dict[str, Any]:
    """Reliability of the top-class confidence: ``bins`` equal-width bins over [0, 1], each with its count,
    mean confidence and accuracy (None when empty), and ``ece`` = sum over bins of
    ``count / n * |accuracy - mean confidence|``."""
    confidence = probabilities.max(axis=1)
    correct = probabilities.argmax(axis=1) == np.asarray(truth)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(confidence, edges[1:-1], right=True), 0, bins - 1)
    rows, ece = [], 0.0
    for b in range(bins):
        sel = which == b
        n = int(sel.sum())
        conf = float(confidence[sel].mean()) if n else None
        acc = float(correct[sel].mean()) if n else None
        if n:
            ece += n / len(confidence) * abs(acc - conf)
        rows.append({"lower": round(float(edges[b]), 3), "upper": round(float(edges[b + 1]), 3), "count": n,
                     "mean_confidence": None if conf is None else round(conf, 4),
                     "accuracy": None if acc is None else round(acc, 4)})
    return {"bins": rows, "ece": round(float(ece), 4) if len(confidence) else None}


def evaluate(probabilities: np.ndarray, truth: np.ndarray, class_names: list[str], bins: int = 10) -> dict[str, Any]:
    """``{"n", "accuracy", "roc_auc", "confusion", "classes", "calibration"}`` of one split (accuracy and
    AUC None for an empty split)."""
    truth = np.asarray(truth, np.int64)
    k = len(class_names)
    if len(truth) == 0:
        return {"n": 0, "accuracy": None, "roc_auc": None, "confusion": confusion(truth, truth, k),
                "classes": list(class_names), "calibration": {"bins": [], "ece": None}}
    predicted = probabilities.argmax(axis=1)
    auc = roc_auc(probabilities, truth)
    return {"n": int(len(truth)), "accuracy": round(float((predicted == truth).mean()), 4),
            "roc_auc": None if auc is None else round(auc, 4), "confusion": confusion(truth, predicted, k),
            "classes": list(class_names), "calibration": calibration(probabilities, truth, bins)}


def majority_accuracy(train_truth: np.ndarray, test_truth: np.ndarray) -> float:
    """Accuracy on ``test_truth`` of always predicting the most frequent class of ``train_truth``."""
    majority = np.bincount(np.asarray(train_truth, np.int64)).argmax()
    return float((np.asarray(test_truth) == majority).mean())
