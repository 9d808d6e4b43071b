"""The segmentation model trained on domain-randomised synthetic lesions (catalog ``segmentation.training.source:
synthetic``) as a :class:`~imaging_pipelines.models.protocol.ModelTask`. It is stored where the labelled
model is (``<root>/<dataset>/segmentation_model/dynunet-<version>.pt``), loads the same way, and writes the
catalog's lesion label value. No dataset image is read: the inputs are the generator and its anatomy.

Version: the generator, network and training code, the MNI152 anatomy (label voxels) and the generator +
training parameters (the same hash as :func:`~imaging_pipelines.medical.synth.train.synth_version`, plus the
label values). The reported ``best_validation_dice`` is the mean Dice on ``HELD_OUT_CASES`` held-out
generated cases.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from upath import UPath

from imaging_pipelines.medical.stages.segmentation_model import SegmentationModelTask
from imaging_pipelines.models.protocol import Log, TrainedModel

HELD_OUT_CASES = 3


class SyntheticLesionModelTask(SegmentationModelTask):
    """``segmentation_model`` of a dataset whose catalog says ``training.source: synthetic``."""

    def _configs(self) -> tuple[Any, Any]:
        from imaging_pipelines.medical.synth import train

        small = self.dataset.segmentation.training.synthetic_config == "small"
        return train.BENCHMARK_SYNTH, train.SMALL if small else train.BENCHMARK

    def training_inputs(self, root: UPath | str) -> Any:
        """The anatomy the generator deforms (no dataset data is read)."""
        from imaging_pipelines.medical.synth.anatomy import load_anatomy

        return load_anatomy()

    def code_modules(self) -> list[ModuleType]:
        from imaging_pipelines.medical.synth.train import version_code_modules

        return version_code_modules()

    def fingerprint(self, inputs: Any) -> Iterable[bytes]:
        yield inputs.fingerprint()

    def params(self) -> dict[str, Any]:
        synth, training = self._configs()
        return {"synth": asdict(synth), "seed": int(training.seed), "training": asdict(training),
                "label_values": self.dataset.segmentation.label_values}

    def train(self, inputs: Any, version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.medical.synth.evaluate import score_generated
        from imaging_pipelines.medical.synth.generator import LesionGenerator
        from imaging_pipelines.medical.synth.train import held_out_generator, train_on_generator

        synth, training = self._configs()
        gen = LesionGenerator(synth, seed=training.seed)
        model, report = train_on_generator(gen, training, device=device, log=log)
        held = score_generated(model, held_out_generator(gen), HELD_OUT_CASES, training.target_labels,
                               baselines=(), device=device)
        lesion_value = int(self.dataset.segmentation.label_values[-1])  # brain-gated: outside and brain write 0
        model.label_values = [0] * (model.n_classes - 1) + [lesion_value]
        model.version = report["version"] = version
        report.update({"best_val_dice": held["model"]["mean"], "held_out_dice": held["model"]["per_case"],
                       "best_epoch": 0, "seconds_per_epoch": report["seconds_training"], "n_train": report["cases_generated"],
                       "n_val": HELD_OUT_CASES, "training_cases": [f"synthetic:{report['cases_generated']}"]})
        return TrainedModel(model.save, report)

    def curve(self, report: dict[str, Any]) -> list[Any]:
        """Training loss every 25 iterations."""
        return [{"iteration": r["iteration"], "train_loss": round(r["loss"], 5)} for r in report.get("curve", [])]

    @staticmethod
    def load(path: Path, device: str) -> Any:
        return SegmentationModelTask.load(path, device)


def segmentation_model_task(dataset: Any) -> SegmentationModelTask:
    """The model task of a dataset: synthetic-lesion training or training on its labels."""
    if dataset.segmentation.training.source == "synthetic":
        return SyntheticLesionModelTask(dataset)
    return SegmentationModelTask(dataset)
