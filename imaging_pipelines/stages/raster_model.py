"""The land-cover model of a remote-sensing dataset: a MONAI 2D U-Net trained on the cores of the labelled
analysis-ready tiles of the train split, stored as ``<root>/<dataset>/land_cover_model/unet2d-<version>.pt``
(+ ``.json`` training report) and reused while its version does not change.

Split: a stable hash of the tile key and the training seed puts a tile in ``test`` (never trained on),
``validation`` (model selection) or ``train``. Training uses tile cores only, so a test tile's pixels never
reach training through a neighbour's overlap. Version = SHA-256 (16 hex digits) of the model code, the
training arrays and the parameters.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field

import numpy as np
from upath import UPath

from imaging_pipelines.io.storage import as_upath
from imaging_pipelines.stages import model_store
from imaging_pipelines.stages.common import stable_fraction, stage_store
from imaging_pipelines.stages.raster_tiles import PREPARED, TILE_MODEL


def tile_split(dataset, partition: str) -> str:
    """``"test"``, ``"validation"`` or ``"train"`` for a tile key (stable; new tiles never move others)."""
    t = dataset.remote_sensing.segmentation.training
    u = stable_fraction(t.seed, partition)
    return "test" if u < t.test_fraction else "validation" if u < t.test_fraction + t.validation_fraction else "train"


def model_inputs(dataset, composite) -> np.ndarray:
    """The (c, y, x) float32 model input: the catalog's ``inputs`` bands of the composite (all by default)."""
    names = dataset.remote_sensing.segmentation.inputs or list(composite.band_names)
    missing = [n for n in names if n not in composite.band_names]
    if missing:
        raise ValueError(f"segmentation.inputs {missing} are not composite bands ({composite.band_names})")
    return np.stack([composite.band(n) for n in names]).astype(np.float32)


@dataclass
class LabelledTile:
    partition: str
    image: np.ndarray  # (c, y, x) core of the tile
    reference: np.ndarray  # (y, x) class values


def labelled_tiles(dataset, root: UPath | str, partitions: list[str], split: str) -> list[LabelledTile]:
    from imaging_pipelines.raster.zarr_tiles import read_tile_info, read_tile_layers, read_tile_zarr

    out = []
    for key in sorted(partitions):
        store = stage_store(root, dataset.id, PREPARED, key)
        if tile_split(dataset, key) != split or not store.exists():
            continue
        reference = read_tile_layers(store, "reference").get("reference")
        if reference is None:
            continue
        rows, cols = read_tile_info(store)[1].core_in_window.slices
        image = model_inputs(dataset, read_tile_zarr(store))
        out.append(LabelledTile(key, image[:, rows, cols], reference[rows, cols]))
    return out


def prepared_partitions(dataset, root: UPath | str) -> list[str]:
    folder = as_upath(root) / dataset.id / PREPARED
    return sorted(p.name[: -len(".zarr")] for p in folder.iterdir() if p.name.endswith(".zarr")) if folder.exists() else []


def training_version(tiles: list[LabelledTile], params: dict) -> str:
    from imaging_pipelines.raster import unet2d

    h = hashlib.sha256(inspect.getsource(unet2d).encode())
    h.update(json.dumps(params, sort_keys=True).encode())
    for t in tiles:
        h.update(t.partition.encode())
        h.update(np.ascontiguousarray(t.image).tobytes())
        h.update(np.ascontiguousarray(t.reference).tobytes())
    return h.hexdigest()[:16]


@dataclass
class TileModelOutcome:
    path: str
    version: str
    trained: bool
    report: dict = field(default_factory=dict)
    runtime_s: float = 0.0


def train_tile_model(dataset, root: UPath | str, device: str = "cpu", log=print) -> TileModelOutcome:
    """Train (or reuse) the dataset's 2D U-Net; ValueError when no labelled training tile exists."""
    from imaging_pipelines.raster.unet2d import save_unet2d, train_unet2d

    start = time.perf_counter()
    seg = dataset.remote_sensing.segmentation
    partitions = prepared_partitions(dataset, root)
    train = labelled_tiles(dataset, root, partitions, "train")
    validation = labelled_tiles(dataset, root, partitions, "validation")
    if not train:
        raise ValueError(f"{dataset.id}: no labelled training tile yet (materialise {PREPARED} for labelled scenes)")
    params = {"classes": seg.classes, "inputs": seg.inputs, "training": seg.training.model_dump()}
    version = training_version(train + validation, params)
    folder = model_store.model_folder(root, dataset.id, TILE_MODEL)
    target, report_file = folder / f"unet2d-{version}.pt", folder / f"unet2d-{version}.json"
    trained = not (target.exists() and report_file.exists())
    if trained:
        log(f"training the 2D U-Net {version} on {len(train)} tile(s), validating on {len(validation)}")
        outcome = train_unet2d(
            [t.image for t in train], [t.reference for t in train], seg.classes, seg.training, device=device,
            validation=([t.image for t in validation], [t.reference for t in validation]) if validation else None,
            log=log)
        meta = {"version": version, "inputs": seg.inputs, "patch_size": seg.training.patch_size}
        model_store.publish_model(folder, target.name, lambda p: save_unet2d(outcome, p, meta))
        report = {"curve": outcome.curve, "validation_iou": outcome.validation_iou,
                  "training_tiles": [t.partition for t in train], "validation_tiles": [t.partition for t in validation],
                  "seconds": round(time.perf_counter() - start, 1)}
        report_file.write_text(json.dumps(report))
    report = json.loads(report_file.read_text())
    model_store.write_pointer(folder, {"version": version, "file": target.name, "report": report_file.name})
    return TileModelOutcome(str(target), version, trained, report, time.perf_counter() - start)


def load_tile_model(root: UPath | str, dataset_id: str, device: str = "cpu"):
    """``(model, normalisation, class_values, meta)`` of the current model (FileNotFoundError when none)."""
    from imaging_pipelines.raster.unet2d import load_unet2d

    folder = model_store.model_folder(root, dataset_id, TILE_MODEL)
    with model_store.local_copy(folder / model_store.read_pointer(folder, "land-cover model")["file"]) as local:
        return load_unet2d(local, device)
