"""The learned registration model as a pipeline stage: trained on every preprocessed partition of a
dataset (moving = subject after affine alignment to the atlas, fixed = atlas), stored as a file whose
name carries its version, and reused as long as that version does not change.

Version = SHA-256 over the learned-registration source code, the training data (array bytes of every
training image) and the training parameters; the model file is
``<root>/<dataset>/registration_model/voxelmorph-<version>.pt`` next to ``current.json``.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import time
from dataclasses import dataclass, field

from upath import UPath

from imaging_pipelines.io.ome_zarr import read_volume_store
from imaging_pipelines.io.storage import as_upath
from imaging_pipelines.stages import model_store
from imaging_pipelines.stages.common import PREPROCESSED, image_modality

MODEL_ASSET = "registration_model"


@dataclass
class ModelOutcome:
    path: str
    version: str
    trained: bool  # False when an existing model of the same version was reused
    n_training_images: int
    training_curve: list[float] = field(default_factory=list)
    runtime_s: float = 0.0


def training_images(dataset, root: UPath | str):
    """(atlas image, subjects affinely aligned onto the atlas grid, partition names) from the preprocessed stores."""
    from imaging_pipelines.atlases import available_atlases
    from imaging_pipelines.register.api import register

    atlas, _ = available_atlases()[dataset.registration.atlas].load()
    modalities = {m.upper() for m in dataset.registration.modalities}
    folder = as_upath(root) / dataset.id / PREPROCESSED
    stores = sorted(p for p in folder.iterdir() if p.name.endswith(".zarr")) if folder.exists() else []
    aligned, names = [], []
    for store in stores:
        for name, volume in read_volume_store(store).items():
            if image_modality(volume.attributes) in modalities:
                aligned.append(register(atlas, volume, "affine").warped)
                names.append(f"{store.name[:-5]}/{name}")
    return atlas, aligned, names


def model_version(images, params: dict) -> str:
    from imaging_pipelines.register import learned, learned_model

    h = hashlib.sha256()
    for module in (learned, learned_model):
        h.update(inspect.getsource(module).encode())
    for volume in images:
        h.update(volume.array.tobytes())
    h.update(json.dumps(params, sort_keys=True).encode())
    return h.hexdigest()[:16]


def train_registration_model(dataset, root: UPath | str, log=print) -> ModelOutcome:
    """Train (or reuse) the dataset's learned registration model; returns where it is and its version."""
    from imaging_pipelines.register.learned import train_voxelmorph

    start = time.perf_counter()
    atlas, images, names = training_images(dataset, root)
    if not images:
        raise ValueError(f"{dataset.id}: no preprocessed image of modalities {dataset.registration.modalities} to train on")
    params = {"epochs": dataset.registration.learned_epochs, "seed": 0}
    version = model_version([atlas, *images], params)
    folder = model_store.model_folder(root, dataset.id, MODEL_ASSET)
    target = folder / f"voxelmorph-{version}.pt"
    trained, curve = False, []
    if not target.exists():
        model = train_voxelmorph(images, atlas, epochs=params["epochs"], seed=params["seed"], log=log)
        curve = [float(v) for v in model.training_curve]
        model_store.publish_model(folder, target.name, model.save)
        trained = True
    model_store.write_pointer(folder, {"version": version, "file": target.name, "training_images": names})
    return ModelOutcome(str(target), version, trained, len(images), curve, time.perf_counter() - start)


def load_current_model(root: UPath | str, dataset_id: str):
    """The model named by ``current.json`` (raises FileNotFoundError when none has been trained yet)."""
    from imaging_pipelines.register.learned_model import LearnedModel

    folder = model_store.model_folder(root, dataset_id, MODEL_ASSET)
    with model_store.local_copy(folder / model_store.read_pointer(folder, "registration model")["file"]) as local:
        return LearnedModel.load(local)
