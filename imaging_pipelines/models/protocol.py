"""One protocol for every trained model: a :class:`ModelTask` gives small hooks, :func:`train_or_reuse` does
the rest (versioning, reuse, device, atomic store), and every task returns the same
:class:`~imaging_pipelines.models.outcome.ModelOutcome`.

Hooks of a task (cf. TorchGeo's ``BaseTask``: one protocol, per-task hooks):

- ``name`` / ``what`` / ``file_prefix``: asset name (store folder), words for messages, model file prefix;
- ``training_inputs(root)``: read the training data from the storage root (ValueError when there is none);
- ``code_modules()``, ``fingerprint(inputs)``, ``params()``: the code, data and parameter parts of the version;
- ``train(inputs, version, device, log)``: train, returning a :class:`TrainedModel` (how to save it + report);
- ``load(path, device)``: read a saved model file (a static hook, so loading needs no training data);
- ``metrics(report)`` / ``curve(report)``: the report's summary and training curve, for metadata and checks.

Store (see :mod:`imaging_pipelines.models.store`): ``<root>/<dataset>/<name>/<prefix>-<version>.pt``, the
training report beside it (``.json``) and ``current.json`` naming the model in use. Both files are written
atomically; a model is reused only when both exist, so a run killed half-way retrains instead of reusing.
"""

from __future__ import annotations

import json
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Callable, ClassVar, Generic, Iterable, TypeVar

from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.storage import write_text_atomic
from imaging_pipelines.models import store
from imaging_pipelines.models.outcome import ModelOutcome
from imaging_pipelines.models.versioning import model_version

InputsT = TypeVar("InputsT")
Log = Callable[[str], None]


@dataclass(frozen=True)
class TrainedModel:
    """A freshly trained model: ``save(local_path)`` writes its file; ``report`` (JSON-able) is stored beside it."""

    save: Callable[[Path], Any]
    report: dict[str, Any]


class ModelTask(ABC, Generic[InputsT]):
    """The per-task hooks of one trained model of one dataset (see the module docstring)."""

    name: ClassVar[str]  # asset name, and the model's folder under <root>/<dataset>/
    what: ClassVar[str]  # e.g. "segmentation model", in messages ("no trained segmentation model yet")
    file_prefix: str  # model files are <file_prefix>-<version><file_suffix> (a class attribute, or set per dataset)
    file_suffix: ClassVar[str] = ".pt"  # e.g. ".zip" for a model that is a folder (nnU-Net results)

    def __init__(self, dataset: DatasetConfig) -> None:
        self.dataset = dataset

    @abstractmethod
    def training_inputs(self, root: UPath | str) -> InputsT:
        """The training data read from the storage root; ValueError when there is nothing to train on."""

    @abstractmethod
    def code_modules(self) -> list[ModuleType]:
        """The modules whose source defines and trains the model (the code part of the version)."""

    @abstractmethod
    def fingerprint(self, inputs: InputsT) -> Iterable[bytes]:
        """The data part of the version: bytes that change whenever the training data does."""

    @abstractmethod
    def params(self) -> dict[str, Any]:
        """The parameter part of the version (JSON-able): every setting that changes the trained model."""

    @abstractmethod
    def train(self, inputs: InputsT, version: str, device: str, log: Log) -> TrainedModel:
        """Train on ``inputs`` on ``device`` (a resolved torch device string: ``"cpu"``, ``"cuda"``...)."""

    @staticmethod
    @abstractmethod
    def load(path: Path, device: str) -> Any:
        """The model saved at the local ``path``, on ``device``."""

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """Named figures of the training report (scalars, None or small dicts); none by default."""
        return {}

    def curve(self, report: dict[str, Any]) -> list[Any]:
        """The per-epoch training curve to show (default: the report's ``curve``)."""
        return list(report.get("curve") or [])


def task_version(task: ModelTask[InputsT], inputs: InputsT) -> str:
    """The version ``task`` would train or reuse on ``inputs``: hash of its code, data and parameters."""
    return model_version(task.code_modules(), task.fingerprint(inputs), task.params())


def train_or_reuse(task: ModelTask[Any], root: UPath | str, device: str = "auto", log: Log = print) -> ModelOutcome:
    """Reuse the stored model of ``task`` when its version (code + data + parameters) exists, else train
    it on ``device`` (``"auto"``: CUDA when present; see :func:`imaging_pipelines.models.device.pick_device`)
    and store it; either way make it the current model. ``runtime_s`` in the outcome is in seconds."""
    from imaging_pipelines.models.device import pick_device  # torch: heavy, imported only to train

    start = time.perf_counter()
    inputs = task.training_inputs(root)
    version = task_version(task, inputs)
    folder = store.model_folder(root, task.dataset.id, task.name)
    target = folder / f"{task.file_prefix}-{version}{task.file_suffix}"
    report_file = folder / f"{task.file_prefix}-{version}.json"
    trained = not (target.exists() and report_file.exists())
    if trained:
        resolved = str(pick_device(device))
        log(f"training {task.what} {version} on {resolved}")
        model = task.train(inputs, version, resolved, log)
        store.publish_model(folder, target.name, model.save)
        write_text_atomic(report_file, json.dumps(model.report))
    report = json.loads(report_file.read_text())
    store.write_pointer(folder, {"version": version, "file": target.name, "report": report_file.name})
    return ModelOutcome(name=task.name, version=version, trained=trained, path=str(target), report=report,
                        runtime_s=time.perf_counter() - start, metrics=task.metrics(report), curve=task.curve(report))


def load_current(task_type: type[ModelTask[Any]], root: UPath | str, dataset_id: str, device: str = "cpu") -> Any:
    """The current model of ``task_type`` for a dataset (the file ``current.json`` names), loaded on
    ``device``; FileNotFoundError naming the asset to materialise when none has been trained yet."""
    folder = store.model_folder(root, dataset_id, task_type.name)
    with store.local_copy(folder / store.read_pointer(folder, task_type.what)["file"]) as local:
        return task_type.load(local, device)
