"""The segmentation model as a pipeline stage: trained on the labelled training partitions (the test split is
never seen), stored as ``<root>/<dataset>/segmentation_model/<method>-<version>.pt`` with its training
report beside it (``.json``), and reused as long as its version does not change.

Version = the first 16 hex digits of SHA-256 over the model/training source code, every training image
and label (array bytes and geometry) and the training parameters (see ``segment.unet_train.training_version``).
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field

from upath import UPath

from imaging_pipelines.stages import model_store
from imaging_pipelines.stages.segmentation_data import SEGMENTATION_MODEL, labelled_cohort


@dataclass
class SegmentationModelOutcome:
    path: str
    version: str
    trained: bool  # False when the file of this version existed and was reused
    report: dict = field(default_factory=dict)  # TrainingReport.as_dict(): curve, best_val_dice, seconds_per_epoch
    training_cases: list[str] = field(default_factory=list)  # "<partition>/<image>"
    runtime_s: float = 0.0


def training_parameters(dataset) -> dict:
    cfg = dataset.segmentation
    t = cfg.training
    return {
        "architecture": cfg.method, "n_classes": len(cfg.label_values), "label_values": cfg.label_values,
        "patch_size": list(t.patch_size), "epochs": t.epochs, "iterations_per_epoch": t.iterations_per_epoch,
        "batch_size": t.batch_size, "optimizer": t.optimizer, "lr": t.learning_rate, "base_filters": t.base_filters,
        "foreground_oversampling": t.foreground_oversampling, "val_fraction": t.validation_fraction,
        "seed": t.seed, "overlap": cfg.inference.overlap,
    }


def train_segmentation_model(dataset, root: UPath | str, device: str = "auto", log=print) -> SegmentationModelOutcome:
    """Train (or reuse) the dataset's segmentation model; raises ValueError when there is nothing to train on."""
    from imaging_pipelines.segment.unet_train import train_segmentation, training_version

    start = time.perf_counter()
    cases = labelled_cohort(dataset, root, split="train")
    if not cases:
        raise ValueError(f"{dataset.id}: no labelled training image yet (labels.source "
                         f"{dataset.segmentation.labels.source!r}; materialise the input stage first)")
    images, labels = [c.image for c in cases], [c.reference for c in cases]
    params = training_parameters(dataset)
    version = training_version(images, labels, params)[:16]
    folder = model_store.model_folder(root, dataset.id, SEGMENTATION_MODEL)
    target = folder / f"{dataset.segmentation.method}-{version}.pt"
    report_file = folder / f"{dataset.segmentation.method}-{version}.json"
    names = [f"{c.partition}/{c.name}" for c in cases]
    trained = not (target.exists() and report_file.exists())
    if trained:
        log(f"training {dataset.segmentation.method} {version} on {len(cases)} labelled image(s)")
        model, report = train_segmentation(
            images, labels, n_classes=params["n_classes"], label_values=params["label_values"],
            patch_size=params["patch_size"], epochs=params["epochs"], iterations_per_epoch=params["iterations_per_epoch"],
            batch_size=params["batch_size"], optimizer=params["optimizer"], lr=params["lr"],
            base_filters=params["base_filters"], foreground_oversampling=params["foreground_oversampling"],
            val_fraction=params["val_fraction"], seed=params["seed"], overlap=params["overlap"],
            architecture=params["architecture"], device=device, log=log)
        model.version = report.version = version
        model_store.publish_model(folder, target.name, model.save)
        report_file.write_text(json.dumps({**report.as_dict(), "training_cases": names}))
    report = json.loads(report_file.read_text())
    model_store.write_pointer(folder, {"version": version, "file": target.name, "report": report_file.name})
    return SegmentationModelOutcome(str(target), version, trained, report, names, time.perf_counter() - start)


def load_segmentation_model(root: UPath | str, dataset_id: str):
    """The current model (FileNotFoundError when none is trained yet)."""
    from imaging_pipelines.segment.unet import SegmentationModel

    folder = model_store.model_folder(root, dataset_id, SEGMENTATION_MODEL)
    with model_store.local_copy(folder / model_store.read_pointer(folder, "segmentation model")["file"]) as local:
        return SegmentationModel.load(local)
