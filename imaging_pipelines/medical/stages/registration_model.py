"""The learned (VoxelMorph-style) registration model as a :class:`~imaging_pipelines.models.protocol.ModelTask`:
trained on every preprocessed partition of a dataset (moving = subject after affine alignment to the atlas,
fixed = atlas), stored as ``<root>/<dataset>/registration_model/voxelmorph-<version>.pt`` (+ ``.json``
report: loss curve, training images) and reused while its version does not change.

Version (see :mod:`imaging_pipelines.models.versioning`): the learned-registration source code, the atlas
and the aligned training images (voxels and geometry), and the training parameters.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from upath import UPath

from imaging_pipelines.config.atlases import available_atlases
from imaging_pipelines.core.asset_names import REGISTRATION_MODEL
from imaging_pipelines.core.stage_result import PREPROCESSED, image_modality, stage_store, stored_partitions
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.io.ome_zarr import read_volume_store
from imaging_pipelines.medical.register.api import register
from imaging_pipelines.medical.register.atlas import load_atlas
from imaging_pipelines.models.protocol import Log, ModelTask, TrainedModel, load_current
from imaging_pipelines.models.versioning import volume_bytes

MODEL_ASSET = REGISTRATION_MODEL

# (atlas image, subjects affinely aligned onto the atlas grid, "<partition>/<image>" of each subject)
RegistrationInputs = tuple[Volume, list[Volume], list[str]]


class RegistrationModelTask(ModelTask[RegistrationInputs]):
    name = REGISTRATION_MODEL
    what = "registration model"
    file_prefix = "voxelmorph"

    def training_inputs(self, root: UPath | str) -> RegistrationInputs:
        """The atlas and every preprocessed image of the configured modalities, affinely aligned onto it."""
        cfg = self.dataset.registration
        atlas, _ = load_atlas(available_atlases()[cfg.atlas])
        modalities = {m.upper() for m in cfg.modalities}
        aligned, names = [], []
        for partition in stored_partitions(root, self.dataset.id, PREPROCESSED):
            for name, volume in read_volume_store(stage_store(root, self.dataset.id, PREPROCESSED, partition)).items():
                if image_modality(volume.attributes) in modalities:
                    aligned.append(register(atlas, volume, "affine").warped)
                    names.append(f"{partition}/{name}")
        if not aligned:
            raise ValueError(f"{self.dataset.id}: no preprocessed image of modalities {cfg.modalities} to train on")
        return atlas, aligned, names

    def code_modules(self) -> list[ModuleType]:
        from imaging_pipelines.medical.register import learned, learned_model  # torch + MONAI: heavy

        return [learned, learned_model]

    def fingerprint(self, inputs: RegistrationInputs) -> Iterable[bytes]:
        atlas, images, _ = inputs
        for volume in (atlas, *images):
            yield from volume_bytes(volume)

    def params(self) -> dict[str, Any]:
        return {"epochs": self.dataset.registration.learned_epochs, "seed": 0}

    def train(self, inputs: RegistrationInputs, version: str, device: str, log: Log) -> TrainedModel:
        from imaging_pipelines.medical.register.learned import train_voxelmorph

        atlas, images, names = inputs
        params = self.params()
        model = train_voxelmorph(images, atlas, epochs=params["epochs"], seed=params["seed"], device=device, log=log)
        return TrainedModel(model.save, {"curve": [float(v) for v in model.training_curve], "training_images": names})

    @staticmethod
    def load(path: Path, device: str) -> Any:
        from imaging_pipelines.medical.register.learned_model import LearnedModel

        return LearnedModel.load(path, device)

    def metrics(self, report: dict[str, Any]) -> dict[str, Any]:
        """``training_images`` (count) and ``final_loss`` (mean loss of the last epoch; None without epochs)."""
        curve = report.get("curve") or []
        return {"training_images": len(report.get("training_images", [])), "final_loss": curve[-1] if curve else None}


def load_current_model(root: UPath | str, dataset_id: str, device: str = "auto") -> Any:
    """The current LearnedModel of a dataset (FileNotFoundError when none has been trained yet)."""
    return load_current(RegistrationModelTask, root, dataset_id, device)
