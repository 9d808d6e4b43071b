"""The model protocol (models/protocol.py): a version is a hash of code, data and parameters; an unchanged
version reuses the stored model, a change of any part retrains; every task returns one ModelOutcome.

A tiny fake task (inputs: .npy files; its "model" is their sum) checks the protocol itself; the real
segmentation task (DynUNet, 2 phantoms of 24^3 voxels, 1 epoch of 2 steps) checks that a real task goes
through it unchanged, and the three model tasks share one outcome type.
"""

from __future__ import annotations

import importlib.util
import json
import types
from pathlib import Path
from typing import Any, Iterable

import numpy as np
import pytest
from scipy import ndimage

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import INGESTED
from imaging_pipelines.core.stage_result import stage_store
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.io.ome_zarr import write_volume_store
from imaging_pipelines.medical.stages.registration_model import RegistrationModelTask
from imaging_pipelines.medical.stages.segmentation_model import SegmentationModelTask, load_segmentation_model
from imaging_pipelines.models.outcome import MetricCheck, ModelOutcome
from imaging_pipelines.models.protocol import ModelTask, TrainedModel, load_current, task_version, train_or_reuse
from imaging_pipelines.models.versioning import VERSION_DIGITS, array_bytes
from imaging_pipelines.remote_sensing.stages.tile_model import TileModelTask

def code_module(tmp_path: Path, name: str, source: str) -> types.ModuleType:
    """A module loaded from a file (``inspect.getsource`` reads the file), its source part of the version."""
    file = tmp_path / f"{name}.py"
    file.write_text(source)
    spec = importlib.util.spec_from_file_location(name, file)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class FakeTask(ModelTask[list[np.ndarray]]):
    """Inputs: every ``<root>/<dataset>/fake_inputs/*.npy``; model: ``scale * sum(inputs)`` as a .npy file."""

    name = "fake_model"
    what = "fake model"
    file_prefix = "fake_model"

    def __init__(self, dataset: Any, code: types.ModuleType, scale: float = 1.0) -> None:
        super().__init__(dataset)
        self.code, self.scale, self.trained_on = code, scale, []

    def training_inputs(self, root) -> list[np.ndarray]:
        files = sorted((Path(root) / self.dataset.id / "fake_inputs").glob("*.npy"))
        if not files:
            raise ValueError("no fake inputs")
        return [np.load(f) for f in files]

    def code_modules(self) -> list[types.ModuleType]:
        return [self.code]

    def fingerprint(self, inputs: list[np.ndarray]) -> Iterable[bytes]:
        for a in inputs:
            yield from array_bytes(a)

    def params(self) -> dict[str, Any]:
        return {"scale": self.scale}

    def train(self, inputs, version, device, log) -> TrainedModel:
        self.trained_on.append(device)
        model = self.scale * sum(float(a.sum()) for a in inputs)
        return TrainedModel(lambda path: path.write_bytes(np.float64(model).tobytes()), {"curve": [3.0, 2.0, 1.0], "total": model})

    @staticmethod
    def load(path: Path, device: str) -> float:
        return float(np.frombuffer(path.read_bytes(), np.float64)[0])

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        return {"total": report["total"]}


@pytest.fixture
def fake(tmp_path):
    root = tmp_path / "storage"
    (root / "ds" / "fake_inputs").mkdir(parents=True)
    np.save(root / "ds" / "fake_inputs" / "a.npy", np.arange(4.0))
    code = code_module(tmp_path, "fake_code_a", "STEP = 1\n")
    return root, types.SimpleNamespace(id="ds"), code


def test_reuse_when_nothing_changed(fake):
    root, dataset, code = fake
    task = FakeTask(dataset, code)
    first = train_or_reuse(task, root, device="cpu", log=lambda _: None)
    second = train_or_reuse(FakeTask(dataset, code), root, device="cpu", log=lambda _: None)
    assert isinstance(first, ModelOutcome) and isinstance(second, ModelOutcome)
    assert first.trained and not second.trained and task.trained_on == ["cpu"]
    assert first.version == second.version and len(first.version) == VERSION_DIGITS
    assert first.path == second.path == str(root / "ds" / "fake_model" / f"fake_model-{first.version}.pt")
    assert second.report == first.report == {"curve": [3.0, 2.0, 1.0], "total": 6.0}
    assert second.metrics == {"total": 6.0} and second.curve == [3.0, 2.0, 1.0] and second.runtime_s >= 0
    pointer = json.loads((root / "ds" / "fake_model" / "current.json").read_text())
    assert pointer == {"version": first.version, "file": Path(first.path).name,
                       "report": f"fake_model-{first.version}.json"}
    assert load_current(FakeTask, root, "ds") == 6.0
    assert not list((root / "ds" / "fake_model").glob("*.partial"))


def test_retrain_when_data_params_or_code_change(fake, tmp_path):
    root, dataset, code = fake
    base = train_or_reuse(FakeTask(dataset, code), root, log=lambda _: None)
    np.save(root / "ds" / "fake_inputs" / "b.npy", np.ones(2))  # data: a new training input
    more_data = train_or_reuse(FakeTask(dataset, code), root, log=lambda _: None)
    params = train_or_reuse(FakeTask(dataset, code, scale=2.0), root, log=lambda _: None)
    other_code = train_or_reuse(FakeTask(dataset, code_module(tmp_path, "fake_code_b", "STEP = 2\n")), root,
                                log=lambda _: None)
    outcomes = [base, more_data, params, other_code]
    assert all(o.trained for o in outcomes[1:])
    assert len({o.version for o in outcomes}) == 4
    assert [o.metrics["total"] for o in outcomes] == [6.0, 8.0, 16.0, 8.0]
    assert load_current(FakeTask, root, "ds") == 8.0  # the last one is current
    # going back to an earlier version reuses its file instead of training again
    again = train_or_reuse(FakeTask(dataset, code, scale=2.0), root, log=lambda _: None)
    assert not again.trained and again.version == params.version


def test_interrupted_training_is_retrained_not_reused(fake):
    root, dataset, code = fake
    first = train_or_reuse(FakeTask(dataset, code), root, log=lambda _: None)
    Path(first.path).with_suffix(".json").unlink()  # killed after the model file, before its report
    task = FakeTask(dataset, code)
    second = train_or_reuse(task, root, log=lambda _: None)
    assert second.trained and second.version == first.version and task.trained_on


def test_nothing_to_train_on_raises_and_writes_nothing(tmp_path):
    code = code_module(tmp_path, "fake_code_c", "")
    with pytest.raises(ValueError, match="no fake inputs"):
        train_or_reuse(FakeTask(types.SimpleNamespace(id="ds"), code), tmp_path, log=lambda _: None)
    assert not (tmp_path / "ds" / "fake_model").exists()
    with pytest.raises(FileNotFoundError, match="no trained fake model yet"):
        load_current(FakeTask, tmp_path, "ds")


def test_device_is_resolved_once_by_the_device_module(fake):
    import torch

    root, dataset, code = fake
    task = FakeTask(dataset, code)
    train_or_reuse(task, root, device="auto", log=lambda _: None)
    assert task.trained_on == ["cuda" if torch.cuda.is_available() else "cpu"]


def test_metric_check():
    outcome = lambda **m: ModelOutcome("m", "0" * 16, True, "m.pt", metrics=m)  # noqa: E731
    gate = MetricCheck("score_above_threshold", "score", 0.5)
    assert gate.evaluate(outcome(score=0.6)).passed and not gate.evaluate(outcome(score=0.4)).passed
    assert not gate.evaluate(outcome(score=float("nan"))).passed and not gate.evaluate(outcome()).passed
    lenient = MetricCheck("score_above_threshold", "score", 0.5, missing_passes=True)
    result = lenient.evaluate(outcome(score=None))
    assert result.passed and result.metadata == {"threshold": 0.5, "score": -1.0}


# --- a real task, tiny -----------------------------------------------------------------------------------


def tiny_segmentation_dataset() -> DatasetConfig:
    return DatasetConfig(
        id="tiny", domain="medical", inbox="inbox", formats=["nifti"], partitioning="patient",
        segmentation={"method": "dynunet", "input": "ingested", "classes": {"lesion": 1}, "labels": {"source": "inbox"},
                      "training": {"patch_size": [16, 16, 16], "epochs": 1, "iterations_per_epoch": 2, "batch_size": 1,
                                   "base_filters": 4, "validation_fraction": 0.5, "test_fraction": 0.0, "seed": 0}})


def write_phantom(root: Path, partition: str, seed: int) -> None:
    """A 24^3 image with a bright blob (label 1) on a 2 mm grid, as an ingested store with its reference."""
    rng = np.random.default_rng(seed)
    zz, yy, xx = np.mgrid[:24, :24, :24]
    centre = rng.integers(8, 16, 3)
    blob = ((zz - centre[0]) ** 2 + (yy - centre[1]) ** 2 + (xx - centre[2]) ** 2) < 16
    image = ndimage.gaussian_filter(blob.astype(np.float32), 1) + rng.normal(0, 0.05, blob.shape).astype(np.float32)
    volume = Volume(image.astype(np.float32), spacing=(2.0, 2.0, 2.0), attributes={"modality": "MR"})
    label = Volume(blob.astype(np.uint8), spacing=(2.0, 2.0, 2.0))
    write_volume_store(stage_store(root, "tiny", INGESTED, partition), {"t1": volume}, labels={"t1": {"reference": label}})


def test_real_segmentation_task_trains_once_then_reuses(tmp_path):
    root = tmp_path / "storage"
    dataset = tiny_segmentation_dataset()
    with pytest.raises(ValueError, match="no labelled training image yet"):
        train_or_reuse(SegmentationModelTask(dataset), root, "cpu", log=lambda _: None)
    for i, partition in enumerate(["p1", "p2"]):
        write_phantom(root, partition, seed=i)
    first = train_or_reuse(SegmentationModelTask(dataset), root, "cpu", log=lambda _: None)
    second = train_or_reuse(SegmentationModelTask(dataset), root, "cpu", log=lambda _: None)
    assert type(first) is ModelOutcome and first.trained and not second.trained
    assert first.version == second.version and Path(first.path).name == f"dynunet-{first.version}.pt"
    assert first.metrics["training_images"] == 1 and first.metrics["validation_images"] == 1
    assert 0.0 <= first.metrics["best_validation_dice"] <= 1.0 and len(first.curve) == 1
    assert sorted(first.report["training_cases"]) == ["p1/t1", "p2/t1"]
    model = load_segmentation_model(root, "tiny")
    assert model.version == first.version and model.label_values == [0, 1]
    # new data (a patient) -> new version, retrained; new parameters -> new version (hashed, not trained here)
    write_phantom(root, "p3", seed=7)
    new_data = train_or_reuse(SegmentationModelTask(dataset), root, "cpu", log=lambda _: None)
    assert new_data.trained and new_data.version != first.version
    assert sorted(new_data.report["training_cases"]) == ["p1/t1", "p2/t1", "p3/t1"]
    more_epochs = dataset.model_copy(update={"segmentation": dataset.segmentation.model_copy(
        update={"training": dataset.segmentation.training.model_copy(update={"epochs": 2})})})
    inputs = SegmentationModelTask(dataset).training_inputs(root)
    assert task_version(SegmentationModelTask(dataset), inputs) == new_data.version
    assert task_version(SegmentationModelTask(more_epochs), inputs) != new_data.version


def test_every_model_task_is_one_protocol():
    """The three trained models are tasks of one protocol (and so return one ModelOutcome type)."""
    for task in (RegistrationModelTask, SegmentationModelTask, TileModelTask):
        assert issubclass(task, ModelTask) and not getattr(task, "__abstractmethods__", None)
    assert {t.name for t in (RegistrationModelTask, SegmentationModelTask, TileModelTask)} == {
        "registration_model", "segmentation_model", "land_cover_model"}
