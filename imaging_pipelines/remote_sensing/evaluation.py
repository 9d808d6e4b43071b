"""Land-cover evaluation against reference labels: a confusion matrix pooled over tile cores, per split and
method, giving per-class IoU (background included), pixel accuracy and mean IoU, always next to the
majority-class predictor (every pixel labelled with the class most frequent in the *training* reference).

Classes are the catalog's ``{name: value}`` plus ``background`` (value 0); only valid pixels (finite in
every composite band) count. A class absent from both prediction and reference has IoU None (not
measured), and mean IoU is the mean over the measured classes. No torch or dagster import.
"""

from __future__ import annotations

import numpy as np

BACKGROUND = "background"


class PooledScores:
    """Confusion counts ``(reference, prediction)`` pooled per ``(split, method)``, and the tiles counted."""

    def __init__(self, classes: dict[str, int]):
        self.classes = {BACKGROUND: 0, **{k: int(v) for k, v in classes.items() if int(v) != 0}}
        self.names = list(self.classes)
        self._lut = np.full(256, -1, np.int64)
        for i, value in enumerate(self.classes.values()):
            self._lut[value] = i
        self.confusion: dict[tuple[str, str], np.ndarray] = {}
        self.tiles: dict[str, set[str]] = {}

    def add(self, split: str, method: str, pred: np.ndarray, ref: np.ndarray, valid: np.ndarray | None = None,
            tile: str | None = None) -> None:
        """Count one tile core: ``pred`` / ``ref`` (y, x) class values; values outside the classes are ignored."""
        p, r = self._lut[np.asarray(pred, np.uint8)], self._lut[np.asarray(ref, np.uint8)]
        keep = (p >= 0) & (r >= 0) & (np.ones_like(p, bool) if valid is None else np.asarray(valid, bool))
        n = len(self.names)
        counts = np.bincount(r[keep] * n + p[keep], minlength=n * n).reshape(n, n)
        key = (split, method)
        self.confusion[key] = self.confusion.get(key, np.zeros((n, n), np.int64)) + counts
        if tile is not None:
            self.tiles.setdefault(split, set()).add(tile)

    def methods(self, split: str) -> list[str]:
        return sorted(m for s, m in self.confusion if s == split)

    def reference_counts(self, split: str) -> np.ndarray | None:
        """Reference pixels per class index in ``split`` (None when nothing was counted there)."""
        methods = self.methods(split)
        return self.confusion[(split, methods[0])].sum(axis=1) if methods else None

    def scores(self, split: str, method: str) -> dict:
        """``{"iou": {class: IoU or None}, "mean_iou", "accuracy", "pixels"}`` of one method on one split."""
        return confusion_scores(self.confusion[(split, method)], self.names)

    def majority(self, split: str, majority_from: str = "train") -> dict | None:
        """Scores on ``split`` of predicting everywhere the class most frequent in ``majority_from``'s
        reference (``split``'s own when ``majority_from`` has none), plus ``"class"``: its name."""
        counts = self.reference_counts(split)
        if counts is None:
            return None
        source = self.reference_counts(majority_from)
        source = counts if source is None or source.sum() == 0 else source
        index = int(np.argmax(source))
        confusion = np.zeros((len(self.names), len(self.names)), np.int64)
        confusion[:, index] = counts
        return {"class": self.names[index], **confusion_scores(confusion, self.names)}

    def summary(self, majority_from: str = "train") -> dict:
        """Split -> ``{"tiles", "methods": {method: scores}, "majority_class": scores}``."""
        out = {}
        for split in sorted({s for s, _ in self.confusion}):
            out[split] = {"tiles": len(self.tiles.get(split, ())),
                          "methods": {m: self.scores(split, m) for m in self.methods(split)},
                          "majority_class": self.majority(split, majority_from)}
        return out

    def iou(self) -> dict:
        """Split -> method -> catalog class -> IoU (background left out; None = not measured)."""
        out: dict = {}
        for (split, method), confusion in sorted(self.confusion.items()):
            ious = confusion_scores(confusion, self.names)["iou"]
            out.setdefault(split, {})[method] = {k: v for k, v in ious.items() if k != BACKGROUND}
        return out


def confusion_scores(confusion: np.ndarray, names: list[str]) -> dict:
    """Per-class IoU, mean IoU over the measured classes, pixel accuracy and pixel count of a
    ``(reference, prediction)`` confusion matrix (rounded to 4 decimals)."""
    confusion = np.asarray(confusion, np.float64)
    tp = np.diag(confusion)
    union = confusion.sum(axis=0) + confusion.sum(axis=1) - tp
    iou = {name: (round(float(tp[i] / union[i]), 4) if union[i] else None) for i, name in enumerate(names)}
    measured = [v for v in iou.values() if v is not None]
    total = confusion.sum()
    return {"iou": iou, "mean_iou": round(float(np.mean(measured)), 4) if measured else None,
            "accuracy": round(float(tp.sum() / total), 4) if total else None, "pixels": int(total)}
