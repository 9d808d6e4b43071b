"""nnU-Net v2 as the dataset's trained segmentation method (``segmentation.method: nnunet``), on the models
protocol: the ``segmentation_model`` asset runs nnU-Net's own fingerprint, planning (``nnunet.planner``,
e.g. the Residual Encoder presets), preprocessing and training of ``nnunet.trainer`` on every fold of
``nnunet.folds``; the per-patient ``segmentation`` asset predicts with ``nnUNetPredictor`` from that results
folder, ensembling the folds, with the catalog's mirroring and tile step.

Store: ``<root>/<dataset>/segmentation_model/nnunet-<version>.zip``, the results folder (``dataset.json``,
``plans.json``, ``fold_<f>/checkpoint_final.pth``) as one file, so it is published atomically like every
model file and works on object storage; it is unpacked once per process into a local cache for prediction.

Version (see :mod:`imaging_pipelines.models.versioning`): the source of this module, the nnU-Net stage and
the exporter; every training image and label (voxels and geometry: what nnU-Net's dataset fingerprint and
plans are computed from); and the parameters: planner, trainer, configuration, folds, labels and the
nnunetv2 version (which fixes how plans are derived). Label values: nnU-Net works on consecutive classes
(0 = background, then the catalog classes in order); predictions are mapped back to the catalog's values.
"""

from __future__ import annotations

import hashlib
import tempfile
import zipfile
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import SEGMENTATION_MODEL
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.stages.segmentation_data import SegmentationInput, labelled_cohort
from imaging_pipelines.models.protocol import Log, ModelTask, TrainedModel, load_current
from imaging_pipelines.models.versioning import volume_bytes

RESULT_FILES = ("dataset.json", "plans.json")
CACHE = Path(tempfile.gettempdir()) / "imaging_pipelines_nnunet_models"


def consecutive_labels(dataset: DatasetConfig) -> tuple[dict[str, int], np.ndarray]:
    """nnU-Net's labels ``{"background": 0, <class>: 1, ...}`` (catalog order) and the lookup table that maps
    a catalog label value to its consecutive class index (values not in the catalog become background)."""
    values = dataset.segmentation.label_values
    lut = np.zeros(256, dtype=np.uint8)
    lut[values] = np.arange(len(values), dtype=np.uint8)
    return {"background": 0, **{name: i + 1 for i, name in enumerate(dataset.segmentation.classes)}}, lut


def case_id(case: SegmentationInput) -> str:
    """nnU-Net case identifier of a training image (no underscores: nnU-Net splits channel suffixes on them)."""
    return f"{case.partition}_{case.name}".replace("_", "-")


class NnunetModelTask(ModelTask[list[SegmentationInput]]):
    name = SEGMENTATION_MODEL
    what = "nnU-Net segmentation model"
    file_prefix = "nnunet"
    file_suffix = ".zip"

    def training_inputs(self, root: UPath | str) -> list[SegmentationInput]:
        """Every selected image with a reference label in the train split (the test split is never seen)."""
        cases = labelled_cohort(self.dataset, root, split="train")
        if not cases:
            raise ValueError(f"{self.dataset.id}: no labelled training image yet (materialise the input stage first)")
        return cases

    def code_modules(self) -> list[ModuleType]:
        import sys

        from imaging_pipelines.medical.segment import nnunet_export
        from imaging_pipelines.medical.stages import nnunet

        return [sys.modules[__name__], nnunet, nnunet_export]

    def fingerprint(self, inputs: list[SegmentationInput]) -> Iterable[bytes]:
        for case in inputs:
            yield case_id(case).encode()
            yield from volume_bytes(case.image)
            yield from volume_bytes(case.reference)

    def params(self) -> dict[str, Any]:
        from importlib.metadata import version

        nn = self.dataset.segmentation.nnunet
        return {"planner": nn.planner, "trainer": nn.trainer, "configuration": nn.configuration,
                "folds": [str(f) for f in nn.folds], "labels": consecutive_labels(self.dataset)[0],
                "modalities": self.dataset.segmentation.modalities, "nnunetv2": version("nnunetv2")}

    def train(self, inputs: list[SegmentationInput], version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.medical.stages.nnunet import train_nnunet_model

        nn = self.dataset.segmentation.nnunet
        labels, lut = consecutive_labels(self.dataset)
        cases = [(case_id(c), c.image, c.reference.with_array(lut[c.reference.array])) for c in inputs]
        modality = (self.dataset.segmentation.modalities or ["MR"])[0].upper()
        work = tempfile.mkdtemp(prefix="nnunet-train-")
        trained = train_nnunet_model(cases, work, dataset_number=nn.dataset_number,
                                     name=self.dataset.id.replace("_", ""), labels=labels,
                                     channel_names={"0": modality}, configuration=nn.configuration,
                                     planner=nn.planner, trainer=nn.trainer, folds=nn.folds, device=device, log=log)
        folds = trained.folds
        dice = [f["best_ema_fg_dice"] for f in folds.values() if f["best_ema_fg_dice"] is not None]
        report = {"planner": nn.planner, "trainer": nn.trainer, "configuration": nn.configuration,
                  "plans": trained.plans, "folds": folds, "notes": trained.notes,
                  "best_validation_dice": float(np.mean(dice)) if dice else None,
                  "training_cases": [f"{c.partition}/{c.name}" for c in inputs]}

        def save(path: Path) -> None:
            zip_results(trained.results_folder, nn.folds, path)

        return TrainedModel(save, report)

    @staticmethod
    def load(path: Path, device: str) -> Path:
        """The results folder unpacked from the model file at ``path`` (a local cache folder per file
        content; ``device`` is chosen when predicting)."""
        return unpack_results(path)

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """nnU-Net's own validation figure: EMA pseudo Dice of the foreground, best epoch, mean over folds."""
        folds = report.get("folds", {})
        seconds = [f["seconds_per_epoch"] for f in folds.values() if f.get("seconds_per_epoch")]
        return {"best_validation_dice": report.get("best_validation_dice"),
                "seconds_per_epoch": float(np.mean(seconds)) if seconds else None,
                "folds": len(folds), "training_images": len(report.get("training_cases", [])),
                "planner": report.get("planner"), "trainer": report.get("trainer")}

    def curve(self, report: dict[str, Any]) -> list[Any]:
        """Per epoch of the first fold: training loss and EMA pseudo Dice (nnU-Net's own log)."""
        first = next(iter(report.get("folds", {}).values()), {})
        losses, dice = first.get("train_losses", []), first.get("ema_fg_dice", [])
        return [{"epoch": i, "train_loss": round(loss, 5), "ema_fg_dice": round(d, 4)}
                for i, (loss, d) in enumerate(zip(losses, dice))]


def zip_results(results: Path, folds, out: Path) -> Path:
    """``results``' ``dataset.json``, ``plans.json`` and each fold's ``checkpoint_final.pth`` as one zip file."""
    with zipfile.ZipFile(out, "w", compression=zipfile.ZIP_STORED) as archive:
        for name in RESULT_FILES:
            archive.write(results / name, name)
        for fold in folds:
            checkpoint = results / f"fold_{fold}" / "checkpoint_final.pth"
            if not checkpoint.is_file():
                raise ValueError(f"nnU-Net training left no {checkpoint}")
            archive.write(checkpoint, f"fold_{fold}/checkpoint_final.pth")
    return out


def unpack_results(model_file: Path) -> Path:
    """The results folder of a model zip, unpacked once into ``CACHE/<sha256 of the file>`` (atomically:
    unpacked beside it, then renamed, so a killed unpack is never used)."""
    digest = hashlib.sha256(Path(model_file).read_bytes()).hexdigest()[:32]
    target = CACHE / digest
    if (target / "plans.json").is_file():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=f"{digest}.partial-", dir=CACHE))
    with zipfile.ZipFile(model_file) as archive:
        archive.extractall(partial)
    try:
        partial.rename(target)
    except OSError:  # another process unpacked the same model first
        import shutil

        shutil.rmtree(partial, ignore_errors=True)
    return target


def trained_folds(results: Path) -> list[int | str]:
    """The folds of an unpacked results folder (``fold_<f>`` with a final checkpoint)."""
    folds = [p.name[len("fold_"):] for p in sorted(results.glob("fold_*")) if (p / "checkpoint_final.pth").is_file()]
    return [f if f == "all" else int(f) for f in folds]


def nnunet_predictor(dataset: DatasetConfig, root: UPath | str, device: str):
    """(function image Volume -> label Volume with the catalog's label values, model version) of the
    dataset's current nnU-Net model; FileNotFoundError when none is trained yet."""
    from imaging_pipelines.medical.segment.nnunet_predict import NnunetFolderModel
    from imaging_pipelines.models import store

    folder = store.model_folder(root, dataset.id, SEGMENTATION_MODEL)
    version = store.read_pointer(folder, NnunetModelTask.what)["version"]
    results = load_current(NnunetModelTask, root, dataset.id, device)
    nn = dataset.segmentation.nnunet
    model = NnunetFolderModel(results, trained_folds(results), "checkpoint_final.pth", device, nn.use_mirroring,
                              nn.tile_step_size, nn.configuration, trainer=nn.trainer if "." in nn.trainer else None)
    values = np.asarray(dataset.segmentation.label_values, dtype=np.uint8)

    def predict(image: Volume) -> Volume:
        labels = model.predict(image)
        return Volume(values[labels.array], image.spacing, image.origin, image.direction,
                      attributes={"model_version": version})

    return predict, version

