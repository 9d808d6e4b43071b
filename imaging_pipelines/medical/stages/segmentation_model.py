"""The segmentation model (MONAI DynUNet / UNet) as a :class:`~imaging_pipelines.models.protocol.ModelTask`:
trained on the labelled training partitions (the test split is never seen), stored as
``<root>/<dataset>/segmentation_model/<method>-<version>.pt`` with its training report beside it (``.json``:
``TrainingReport.as_dict()`` + training cases), and reused while its version does not change.

Version (see :mod:`imaging_pipelines.models.versioning`): the model/training source code, every training
image and label (voxels and geometry) and the training parameters (:func:`training_parameters`).
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import SEGMENTATION_MODEL
from imaging_pipelines.medical.stages.segmentation_data import SegmentationInput, labelled_cohort
from imaging_pipelines.models.protocol import Log, ModelTask, TrainedModel, load_current
from imaging_pipelines.models.versioning import volume_bytes


def training_parameters(dataset: DatasetConfig) -> dict[str, Any]:
    """The keyword arguments of ``train_segmentation`` that the catalog sets (sizes in voxels, lr per step)."""
    cfg = dataset.segmentation
    t = cfg.training
    return {
        "architecture": cfg.method, "n_classes": len(cfg.label_values), "label_values": cfg.label_values,
        "patch_size": list(t.patch_size), "epochs": t.epochs, "iterations_per_epoch": t.iterations_per_epoch,
        "batch_size": t.batch_size, "optimizer": t.optimizer, "lr": t.learning_rate, "base_filters": t.base_filters,
        "foreground_oversampling": t.foreground_oversampling, "val_fraction": t.validation_fraction,
        "seed": t.seed, "overlap": cfg.inference.overlap,
    }


class SegmentationModelTask(ModelTask[list[SegmentationInput]]):
    name = SEGMENTATION_MODEL
    what = "segmentation model"

    def __init__(self, dataset: DatasetConfig) -> None:
        super().__init__(dataset)
        self.file_prefix = dataset.segmentation.method  # "dynunet" or "unet"

    def training_inputs(self, root: UPath | str) -> list[SegmentationInput]:
        """Every selected image with a reference label in the train split."""
        cases = labelled_cohort(self.dataset, root, split="train")
        if not cases:
            raise ValueError(f"{self.dataset.id}: no labelled training image yet (labels.source "
                             f"{self.dataset.segmentation.labels.source!r}; materialise the input stage first)")
        return cases

    def code_modules(self) -> list[ModuleType]:
        from imaging_pipelines.medical.segment import unet, unet_train  # torch + MONAI: heavy

        return [unet, unet_train]

    def fingerprint(self, inputs: list[SegmentationInput]) -> Iterable[bytes]:
        for volume in [c.image for c in inputs] + [c.reference for c in inputs]:
            yield from volume_bytes(volume)

    def params(self) -> dict[str, Any]:
        return training_parameters(self.dataset)

    def train(self, inputs: list[SegmentationInput], version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.medical.segment.unet_train import train_segmentation

        model, report = train_segmentation([c.image for c in inputs], [c.reference for c in inputs],
                                           **self.params(), device=device, log=log)
        model.version = report.version = version
        return TrainedModel(model.save, {**report.as_dict(), "training_cases": [f"{c.partition}/{c.name}" for c in inputs]})

    @staticmethod
    def load(path: Path, device: str) -> Any:
        from imaging_pipelines.medical.segment.unet import SegmentationModel

        return SegmentationModel.load(path, device)

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """Best validation Dice (mean foreground) and its epoch, seconds per epoch, case counts."""
        return {"best_validation_dice": report.get("best_val_dice"), "best_epoch": report.get("best_epoch"),
                "seconds_per_epoch": report.get("seconds_per_epoch"), "training_images": report.get("n_train"),
                "validation_images": report.get("n_val")}

    def curve(self, report: dict[str, Any]) -> list[Any]:
        """Per epoch: training loss (5 decimals) and validation Dice per label value (4 decimals)."""
        return [{"epoch": r["epoch"], "train_loss": round(r["train_loss"], 5),
                 "val_dice": {k: round(v, 4) for k, v in r["val_dice"].items()}} for r in report.get("curve", [])]


def load_segmentation_model(root: UPath | str, dataset_id: str, device: str = "cpu") -> Any:
    """The current SegmentationModel of a dataset, on ``device`` (FileNotFoundError when none is trained yet)."""
    return load_current(SegmentationModelTask, root, dataset_id, device)
