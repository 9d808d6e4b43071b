"""The land-cover model of a remote-sensing dataset as a :class:`~imaging_pipelines.models.protocol.ModelTask`:
a MONAI 2D U-Net trained on the cores of the labelled analysis-ready tiles of the train split, stored as
``<root>/<dataset>/land_cover_model/unet2d-<version>.pt`` (+ ``.json`` training report) and reused while its
version does not change.

Split: a stable hash of the tile key and the training seed puts a tile in ``test`` (never trained on),
``validation`` (model selection) or ``train``. Training uses tile cores only, so a test tile's pixels never
reach training through a neighbour's overlap. Version (see :mod:`imaging_pipelines.models.versioning`): the
model code, the training and validation tiles (keys, arrays) and the parameters.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import store_exists
from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.raster import Raster
from imaging_pipelines.core.stage_result import stable_fraction, stage_store, stored_partitions
from imaging_pipelines.models.protocol import Log, ModelTask, TrainedModel, load_current
from imaging_pipelines.models.versioning import array_bytes
from imaging_pipelines.remote_sensing.stages.tile_ingest import PREPARED, TILE_MODEL


def tile_split(dataset: DatasetConfig, partition: str) -> str:
    """``"test"``, ``"validation"`` or ``"train"`` for a tile key (stable; new tiles never move others)."""
    t = dataset.remote_sensing.segmentation.training
    u = stable_fraction(t.seed, partition)
    return "test" if u < t.test_fraction else "validation" if u < t.test_fraction + t.validation_fraction else "train"


def date_slots(n_dates: int, steps: int) -> list[int | None]:
    """Date index per model slot: ``steps`` dates spread evenly over ``n_dates`` (first and last kept), or
    every date followed by empty slots (None) when there are fewer."""
    if n_dates >= steps:
        return [int(i) for i in np.linspace(0, n_dates - 1, steps).round()]
    return list(range(n_dates)) + [None] * (steps - n_dates)


def model_inputs(dataset: DatasetConfig, composite: Raster, per_date: np.ndarray | None = None) -> np.ndarray:
    """The (c, y, x) float32 model input: the catalog's ``inputs`` bands of the composite (all by default),
    then, with ``segmentation.temporal: per_date``, the reflectance bands of each of ``temporal_steps`` date
    slots (:func:`date_slots`; ``per_date`` is the analysis-ready tile's ``(time, band, y, x)`` layer, NaN =
    not clear; empty slots are NaN, i.e. 0 after the model's normalisation)."""
    seg = dataset.remote_sensing.segmentation
    names = seg.inputs or list(composite.band_names)
    missing = [n for n in names if n not in composite.band_names]
    if missing:
        raise ValueError(f"segmentation.inputs {missing} are not composite bands ({composite.band_names})")
    channels = [composite.band(n) for n in names]
    if seg.temporal == "per_date":
        if per_date is None:
            raise ValueError("segmentation.temporal is per_date but the analysis-ready tile has no per_date layer "
                             "(materialise analysis_ready_tiles again)")
        empty = np.full(per_date.shape[1:], np.nan, np.float32)
        for index in date_slots(per_date.shape[0], seg.temporal_steps):
            channels += list(per_date[index] if index is not None else empty)
    return np.stack(channels).astype(np.float32)


@dataclass
class LabelledTile:
    partition: str
    image: np.ndarray  # (c, y, x) core of the tile
    reference: np.ndarray  # (y, x) class values


def labelled_tiles(dataset: DatasetConfig, root: UPath | str, partitions: list[str], split: str) -> list[LabelledTile]:
    """The cores of the labelled analysis-ready tiles among ``partitions`` that fall in ``split``."""
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_info, read_tile_layers, read_tile_zarr

    out = []
    for key in sorted(partitions):
        store = stage_store(root, dataset.id, PREPARED, key)
        if tile_split(dataset, key) != split or not store_exists(store):
            continue
        layers = read_tile_layers(store, "reference", "per_date")
        if layers.get("reference") is None:
            continue
        reference = layers["reference"]
        rows, cols = read_tile_info(store)[1].core_in_window.slices
        image = model_inputs(dataset, read_tile_zarr(store), layers.get("per_date"))
        out.append(LabelledTile(key, image[:, rows, cols], reference[rows, cols]))
    return out



# (train tiles, validation tiles)
TileInputs = tuple[list[LabelledTile], list[LabelledTile]]


class TileModelTask(ModelTask[TileInputs]):
    name = TILE_MODEL
    what = "land-cover model"
    file_prefix = "unet2d"

    def training_inputs(self, root: UPath | str) -> TileInputs:
        """The labelled tile cores of the train and validation splits."""
        partitions = stored_partitions(root, self.dataset.id, PREPARED)
        train = labelled_tiles(self.dataset, root, partitions, "train")
        if not train:
            raise ValueError(f"{self.dataset.id}: no labelled training tile yet (materialise {PREPARED} for labelled scenes)")
        return train, labelled_tiles(self.dataset, root, partitions, "validation")

    def code_modules(self) -> list[ModuleType]:
        from imaging_pipelines.remote_sensing import unet2d  # torch + MONAI: heavy

        return [unet2d]

    def fingerprint(self, inputs: TileInputs) -> Iterable[bytes]:
        for tile in inputs[0] + inputs[1]:
            yield tile.partition.encode()
            yield from array_bytes(tile.image)
            yield from array_bytes(tile.reference)

    def params(self) -> dict[str, Any]:
        seg = self.dataset.remote_sensing.segmentation
        return {"classes": seg.classes, "inputs": seg.inputs, "training": seg.training.model_dump(),
                "temporal": seg.temporal, "temporal_steps": seg.temporal_steps}

    def train(self, inputs: TileInputs, version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.remote_sensing.unet2d import save_unet2d, train_unet2d

        start = time.perf_counter()
        seg = self.dataset.remote_sensing.segmentation
        train, validation = inputs
        log(f"{len(train)} training tile(s), {len(validation)} validation tile(s)")
        outcome = train_unet2d(
            [t.image for t in train], [t.reference for t in train], seg.classes, seg.training, device=device,
            validation=([t.image for t in validation], [t.reference for t in validation]) if validation else None,
            log=log)
        meta = {"version": version, "inputs": seg.inputs, "patch_size": seg.training.patch_size}
        report = {"curve": outcome.curve, "validation_iou": outcome.validation_iou,
                  "training_tiles": [t.partition for t in train], "validation_tiles": [t.partition for t in validation],
                  "seconds": round(time.perf_counter() - start, 1)}
        return TrainedModel(lambda path: save_unet2d(outcome, path, meta), report)

    @staticmethod
    def load(path: Path, device: str) -> Any:
        """``(model, normalisation, class_values, meta)`` (see ``unet2d.load_unet2d``)."""
        from imaging_pipelines.remote_sensing.unet2d import load_unet2d

        return load_unet2d(path, device)

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """IoU per class on the validation tiles, their mean over measured classes, tile counts."""
        ious = {k: v for k, v in (report.get("validation_iou") or {}).items() if v is not None}
        return {"validation_iou": report.get("validation_iou"),
                "mean_validation_iou": round(sum(ious.values()) / len(ious), 4) if ious else None,
                "training_tiles": len(report.get("training_tiles", [])),
                "validation_tiles": len(report.get("validation_tiles", []))}


def load_tile_model(root: UPath | str, dataset_id: str, device: str = "cpu") -> Any:
    """``(model, normalisation, class_values, meta)`` of the current model (FileNotFoundError when none)."""
    return load_current(TileModelTask, root, dataset_id, device)
