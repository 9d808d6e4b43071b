"""Train an image classifier, predict class probabilities, save and load it (no dagster import).

Inputs are ``(n, channel, y, x)`` float32 images of one square size and ``(n,)`` class *indices*
(``0..n_classes-1``). NaN pixels (e.g. invalid reflectance) become 0 after normalisation.
Training: Adam on cross-entropy weighted by inverse class frequency (normalised to mean 1), random
augmentation (horizontal flips, or all 8 dihedral transforms for tiles), seeded; with validation images the
weights of the epoch with the lowest validation loss are kept, else those of the last epoch.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from torch import nn

from imaging_pipelines.classify.network import build_classifier
from imaging_pipelines.config.classification import ClassifierTraining
from imaging_pipelines.core.storage import atomic_file


@dataclass
class Normalisation:
    """``per_image``: each image and channel z-scored on its own finite pixels; ``dataset``: per-channel
    ``(x - mean) / std`` with statistics of the training images. NaN -> 0 afterwards."""

    mode: str
    mean: list[float] = field(default_factory=list)
    std: list[float] = field(default_factory=list)

    @classmethod
    def fit(cls, mode: str, images: np.ndarray) -> Normalisation:
        if mode == "per_image":
            return cls(mode)
        mean = [float(np.nanmean(images[:, c])) for c in range(images.shape[1])]
        std = [float(np.nanstd(images[:, c])) or 1.0 for c in range(images.shape[1])]
        return cls(mode, mean, std)

    def apply(self, images: np.ndarray) -> np.ndarray:
        x = images.astype(np.float32)
        if self.mode == "per_image":
            mean = np.nanmean(x, axis=(2, 3), keepdims=True)
            std = np.nanstd(x, axis=(2, 3), keepdims=True)
            x = (x - mean) / np.where(std > 1e-12, std, 1.0)
        else:
            if x.shape[1] != len(self.mean):
                raise ValueError(f"images have {x.shape[1]} channels, the classifier expects {len(self.mean)}")
            x = (x - np.asarray(self.mean, np.float32)[:, None, None]) / np.asarray(self.std, np.float32)[:, None, None]
        return np.nan_to_num(x, nan=0.0, posinf=0.0, neginf=0.0).astype(np.float32)


@dataclass
class Classifier:
    """A trained classifier: the network (eval mode), its input normalisation, the class names in index
    order, the training settings it was built with, the per-epoch curve and ``meta`` (JSON-able)."""

    model: nn.Module
    normalisation: Normalisation
    class_names: list[str]
    training: ClassifierTraining
    in_channels: int
    curve: list[dict] = field(default_factory=list)
    meta: dict = field(default_factory=dict)


def class_weights(labels: np.ndarray, n_classes: int, mode: str) -> torch.Tensor:
    """Inverse-frequency weights normalised to mean 1 over the present classes (absent classes 0); ones for ``none``."""
    if mode == "none":
        return torch.ones(n_classes)
    counts = np.bincount(labels, minlength=n_classes).astype(np.float64)
    w = np.where(counts > 0, counts.sum() / np.maximum(counts, 1), 0.0)
    return torch.tensor(w / w[w > 0].mean(), dtype=torch.float32)


def _augment(batch: np.ndarray, mode: str, rng: np.random.Generator) -> np.ndarray:
    out = batch.copy()
    for i in range(len(out)):
        if mode in ("flip", "dihedral") and rng.random() < 0.5:
            out[i] = out[i][:, :, ::-1]
        if mode == "dihedral":
            out[i] = np.rot90(out[i], int(rng.integers(4)), axes=(1, 2))
    return np.ascontiguousarray(out)


def _loss(model: nn.Module, x: np.ndarray, y: np.ndarray, loss_fn, device: str, batch: int) -> float:
    model.eval()
    total = 0.0
    with torch.no_grad():
        for s in range(0, len(x), batch):
            logits = model(torch.from_numpy(x[s:s + batch]).to(device))
            total += float(loss_fn(logits, torch.from_numpy(y[s:s + batch]).to(device))) * len(x[s:s + batch])
    return total / max(len(x), 1)


def train_classifier(images: np.ndarray, labels: np.ndarray, class_names: list[str], training: ClassifierTraining,
                     device: str = "cpu", validation: tuple[np.ndarray, np.ndarray] | None = None,
                     log: Callable[[str], None] | None = None) -> Classifier:
    """Train on ``images`` (n, c, y, x) / ``labels`` (n,) class indices; seeded by ``training.seed``."""
    n_classes = len(class_names)
    labels = np.asarray(labels, np.int64)
    if len(images) != len(labels) or len(images) == 0:
        raise ValueError(f"{len(images)} image(s) for {len(labels)} label(s): nothing to train on")
    if labels.min() < 0 or labels.max() >= n_classes:
        raise ValueError(f"class indices must be in 0..{n_classes - 1}")
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    norm = Normalisation.fit(training.normalise, images)
    x = norm.apply(images)
    model = build_classifier(training.architecture, x.shape[1], n_classes, training.base_filters).to(device)
    weights = class_weights(labels, n_classes, training.class_weights).to(device)
    loss_fn = nn.CrossEntropyLoss(weight=weights)
    optimiser = torch.optim.Adam(model.parameters(), lr=training.learning_rate, weight_decay=1e-4)
    scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=training.epochs)
    val = (norm.apply(validation[0]), np.asarray(validation[1], np.int64)) if validation and len(validation[0]) else None
    best, best_loss, curve = None, float("inf"), []
    for epoch in range(training.epochs):
        model.train()
        order = rng.permutation(len(x))
        losses = []
        for s in range(0, len(order), training.batch_size):
            idx = order[s:s + training.batch_size]
            if len(idx) < 2 and len(order) > 1:
                continue  # batch norm needs two samples
            xb = torch.from_numpy(_augment(x[idx], training.augmentation, rng)).to(device)
            optimiser.zero_grad()
            loss = loss_fn(model(xb), torch.from_numpy(labels[idx]).to(device))
            loss.backward()
            optimiser.step()
            losses.append(float(loss.detach()))
        scheduler.step()
        record = {"epoch": epoch + 1, "loss": round(float(np.mean(losses)), 5)}
        if val is not None:
            record["validation_loss"] = round(_loss(model, val[0], val[1], loss_fn, device, training.batch_size), 5)
            if record["validation_loss"] < best_loss:
                best_loss, best = record["validation_loss"], copy.deepcopy(model.state_dict())
        curve.append(record)
        if log:
            log(f"epoch {epoch + 1}/{training.epochs}: {record}")
    if best is not None:
        model.load_state_dict(best)
    model.eval()
    return Classifier(model, norm, list(class_names), training, int(x.shape[1]), curve)


def predict_proba(classifier: Classifier, images: np.ndarray, device: str = "cpu", batch: int = 32) -> np.ndarray:
    """``(n, n_classes)`` softmax probabilities of ``images`` (n, c, y, x)."""
    x = classifier.normalisation.apply(images)
    model = classifier.model.to(device).eval()
    out = []
    with torch.no_grad():
        for s in range(0, len(x), batch):
            out.append(torch.softmax(model(torch.from_numpy(x[s:s + batch]).to(device)).float(), 1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(classifier.class_names)), np.float32)


def save_classifier(classifier: Classifier, path: str | os.PathLike) -> None:
    """``torch.save`` of the state dict (CPU tensors), settings, normalisation, classes, curve and meta; atomic."""
    blob = {
        "state_dict": {k: v.detach().cpu() for k, v in classifier.model.state_dict().items()},
        "training": classifier.training.model_dump(),
        "in_channels": classifier.in_channels,
        "normalisation": {"mode": classifier.normalisation.mode, "mean": classifier.normalisation.mean,
                          "std": classifier.normalisation.std},
        "class_names": classifier.class_names,
        "curve": json.dumps(classifier.curve),
        "meta": json.dumps(classifier.meta, default=str),
    }
    with atomic_file(path) as tmp:
        torch.save(blob, tmp)


def load_classifier(path: str | os.PathLike, device: str = "cpu") -> Classifier:
    """The classifier saved by :func:`save_classifier`, in eval mode on ``device``."""
    blob = torch.load(path, map_location=device, weights_only=True)
    training = ClassifierTraining(**blob["training"])
    names = list(blob["class_names"])
    model = build_classifier(training.architecture, int(blob["in_channels"]), len(names), training.base_filters)
    model.load_state_dict(blob["state_dict"])
    model.to(device).eval()
    return Classifier(model, Normalisation(**blob["normalisation"]), names, training, int(blob["in_channels"]),
                      json.loads(blob["curve"]), json.loads(blob["meta"]))
