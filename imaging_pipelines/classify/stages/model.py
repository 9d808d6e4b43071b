"""The classifier of a dataset as a :class:`~imaging_pipelines.models.protocol.ModelTask`: trained on the
labelled partitions of the train split (the validation split picks the epoch), stored as
``<root>/<dataset>/classifier_model/classifier-<version>.pt`` (+ ``.json`` training report) and reused
while its version (code + training images and labels + parameters) holds."""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import numpy as np
from upath import UPath

from imaging_pipelines.classify.stages.source import ClassificationSource
from imaging_pipelines.core.asset_names import CLASSIFIER_MODEL
from imaging_pipelines.models.protocol import Log, ModelTask, TrainedModel
from imaging_pipelines.models.versioning import array_bytes


@dataclass
class LabelledSet:
    partitions: list[str]
    images: np.ndarray  # (n, c, s, s)
    indices: np.ndarray  # (n,) class indices


def labelled_set(source: ClassificationSource, root: UPath | str, split: str) -> LabelledSet:
    """The labelled partitions of ``split`` with their inputs (partitions without a readable image are skipped)."""
    keys, images, indices = [], [], []
    for key in source.partitions(root):
        if source.split(key) != split:
            continue
        value = source.label(root, key)
        if value is None:
            continue
        try:
            images.append(source.image(root, key))
        except ValueError:
            continue
        keys.append(key)
        indices.append(source.index_of(value))
    size = source.config.training.input_size
    empty = np.zeros((0, 1, size, size), np.float32)
    return LabelledSet(keys, np.stack(images) if images else empty, np.asarray(indices, np.int64))


class ClassifierTask(ModelTask[tuple[LabelledSet, LabelledSet]]):
    name = CLASSIFIER_MODEL
    what = "classifier"
    file_prefix = "classifier"

    def __init__(self, source: ClassificationSource) -> None:
        super().__init__(source.dataset)
        self.source = source

    def training_inputs(self, root: UPath | str) -> tuple[LabelledSet, LabelledSet]:
        train = labelled_set(self.source, root, "train")
        if len(train.partitions) < 2 or len(set(train.indices.tolist())) < 2:
            raise ValueError(f"{self.dataset.id}: the classifier needs labelled training partitions of at least two "
                             f"classes (found {len(train.partitions)}); materialise {self.source.input_stage} first")
        return train, labelled_set(self.source, root, "validation")

    def code_modules(self) -> list[ModuleType]:
        from imaging_pipelines.classify import network, train

        return [network, train]

    def fingerprint(self, inputs: tuple[LabelledSet, LabelledSet]) -> Iterable[bytes]:
        for part in inputs:
            yield "\n".join(part.partitions).encode()
            yield from array_bytes(part.images)
            yield from array_bytes(part.indices)

    def params(self) -> dict[str, Any]:
        cfg = self.dataset.classification
        return {"classes": cfg.classes, "inputs": cfg.inputs, "labels": cfg.labels.model_dump(exclude={"file"}),
                "training": cfg.training.model_dump()}

    def train(self, inputs: tuple[LabelledSet, LabelledSet], version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.classify.metrics import evaluate
        from imaging_pipelines.classify.train import predict_proba, save_classifier, train_classifier

        start = time.perf_counter()
        train, val = inputs
        names = self.dataset.classification.class_names
        log(f"{len(train.partitions)} training and {len(val.partitions)} validation image(s)")
        clf = train_classifier(train.images, train.indices, names, self.dataset.classification.training, device,
                               validation=(val.images, val.indices) if len(val.partitions) else None, log=log)
        clf.meta = {"version": version}
        validation = evaluate(predict_proba(clf, val.images, device), val.indices, names) if len(val.partitions) else None
        report = {"curve": clf.curve, "validation": validation, "class_counts": np.bincount(
                      train.indices, minlength=len(names)).tolist(),
                  "training_partitions": len(train.partitions), "validation_partitions": len(val.partitions),
                  "seconds": round(time.perf_counter() - start, 1)}
        return TrainedModel(lambda path: save_classifier(clf, path), report)

    @staticmethod
    def load(path: Path, device: str) -> Any:
        from imaging_pipelines.classify.train import load_classifier

        return load_classifier(path, device)

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """Validation accuracy / ROC AUC / ECE (None without validation partitions) and partition counts."""
        val = report.get("validation") or {}
        return {"validation_accuracy": val.get("accuracy"), "validation_roc_auc": val.get("roc_auc"),
                "validation_ece": (val.get("calibration") or {}).get("ece"),
                "training_partitions": report.get("training_partitions"),
                "validation_partitions": report.get("validation_partitions"),
                "class_counts": report.get("class_counts")}
