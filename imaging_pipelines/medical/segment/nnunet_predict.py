"""Prediction with an nnU-Net v2 trained-model folder, on one in-memory :class:`Volume` at a time.

The route is ``nnUNetPredictor`` itself: ``initialize_from_trained_model_folder`` (folds ensembled, the
configured checkpoint), then ``predict_single_npy_array``, which preprocesses with the plans' preprocessor
(``run_case_npy``, the step ``predict_from_files`` runs after reading the file), predicts by Gaussian sliding
window (mirroring and tile step as configured) and resamples the argmax back to the input's own shape. The
label map therefore lies on the input image's grid and equals what ``nnUNetPredictor`` writes for the same
image read from a file.

Axis conventions: nnU-Net's SimpleITK reader hands it the voxels as ``[c, z, y, x]`` (``GetArrayFromImage``)
and the spacing in the same order ``(z, y, x)`` mm; a :class:`Volume` array is already ``[z, y, x]`` with
``spacing`` in ``(x, y, z)`` order, so the array is passed as it is and the spacing reversed. Models whose
plans use ``NibabelIOWithReorient`` see the image turned to the closest RAS orientation first (as that reader
does); the label map is turned back. Device: :func:`imaging_pipelines.models.device.pick_device` only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Sequence

import numpy as np

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.nnunet_trainers import trainer_lookup

REORIENTING_READERS = ("NibabelIOWithReorient",)
SUPPORTED_READERS = ("SimpleITKIO", "NibabelIO", "NibabelIOWithReorient", "SimpleITKIOWithReorient")


def _reader_name(folder: Path, plans: dict, dataset_json: dict) -> str:
    name = str(dataset_json.get("overwrite_image_reader_writer") or plans.get("image_reader_writer") or "SimpleITKIO")
    if name not in SUPPORTED_READERS:
        raise ImagingInputError(folder / "plans.json", f"image reader {name!r} is not supported for in-memory "
                                                       f"prediction (supported: {', '.join(SUPPORTED_READERS)})")
    return name


def _quiet():
    """nnU-Net prints progress to stdout; send it to stderr so stdout stays the caller's."""
    return contextlib.redirect_stdout(sys.stderr)


class NnunetFolderModel:
    """An nnU-Net v2 trained-model folder loaded into ``nnUNetPredictor`` on ``device`` (a torch device).

    The trainer class named in the checkpoint is found by
    :func:`~imaging_pipelines.medical.segment.nnunet_trainers.trainer_lookup` (``trainer``: the dotted path of
    a trainer of one's own, for models trained with one)."""

    def __init__(self, folder: str | Path, folds: Sequence[int | str] = (0,), checkpoint: str = "checkpoint_final.pth",
                 device: str = "auto", use_mirroring: bool = True, tile_step_size: float = 0.5,
                 configuration: str | None = None, trainer: str | None = None) -> None:
        import torch
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

        from imaging_pipelines.models.device import pick_device

        self.folder = Path(folder)
        self.device = pick_device(device)
        os.environ.setdefault("nnUNet_compile", "f")  # no torch.compile: minutes of start-up for one scan
        with _quiet():
            self.predictor = nnUNetPredictor(tile_step_size=tile_step_size, use_gaussian=True, use_mirroring=use_mirroring,
                                             perform_everything_on_device=self.device.type == "cuda",
                                             device=self.device if self.device.type == "cuda" else torch.device("cpu"),
                                             verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        try:
            with _quiet(), trainer_lookup(trainer):
                self.predictor.initialize_from_trained_model_folder(str(self.folder), use_folds=tuple(folds),
                                                                    checkpoint_name=checkpoint)
        except (KeyError, RuntimeError, ValueError) as exc:
            raise ImagingInputError(self.folder, f"cannot load the nnU-Net model: {type(exc).__name__}: {exc}") from None
        if configuration is not None and configuration != self._config_name():
            raise ImagingInputError(self.folder, f"checkpoint was trained with configuration {self._config_name()!r}, "
                                                 f"not {configuration!r}")
        self.reader = _reader_name(self.folder, self.predictor.plans_manager.plans, self.predictor.dataset_json)

    def _config_name(self) -> str:
        plans = self.predictor.plans_manager.plans
        ours = self.predictor.configuration_manager.configuration
        return next((name for name, cfg in plans["configurations"].items()
                     if cfg.get("data_identifier") == ours.get("data_identifier")), "")

    def predict_array(self, image: Volume) -> np.ndarray:
        """Label map ``[z, y, x]`` (nnU-Net's label values) on ``image``'s grid."""
        if image.is_timeseries:
            raise ValueError("nnU-Net prediction expects a 3D image Volume")
        if self.reader in REORIENTING_READERS:
            return _predict_reoriented(self, image)
        return self.predict_zyx(np.asarray(image.array), image.spacing)

    def predict_zyx(self, array_zyx: np.ndarray, spacing_xyz: Sequence[float]) -> np.ndarray:
        """Label map of voxels ``[z, y, x]`` with spacing in ``(x, y, z)`` mm, as nnU-Net's SimpleITK reader
        would hand them over (one channel)."""
        data = np.asarray(array_zyx, dtype=np.float32)[None]
        properties = {"spacing": [abs(float(s)) for s in list(spacing_xyz)[::-1]]}
        with _quiet():
            return np.asarray(self.predictor.predict_single_npy_array(data, properties, None, None, False))

    def predict(self, image: Volume) -> Volume:
        """uint8 (uint16 beyond 255) label Volume on ``image``'s grid; ``attributes['runtime_s']`` in seconds."""
        start = time.perf_counter()
        labels = self.predict_array(image)
        dtype = np.uint8 if labels.max(initial=0) < 256 else np.uint16
        return Volume(array=labels.astype(dtype), spacing=image.spacing, origin=image.origin,
                      direction=image.direction, attributes={"runtime_s": time.perf_counter() - start})


def _predict_reoriented(model: NnunetFolderModel, image: Volume) -> np.ndarray:
    """As ``NibabelIOWithReorient``: voxels turned to the closest RAS orientation, predicted, turned back."""
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    affine, data = image.to_nifti_affine(), image.nifti_data()  # RAS affine, voxels [i, j, k]
    ras = np.array([[0, 1], [1, 1], [2, 1]])
    to_ras = ornt_transform(io_orientation(affine), ras)
    data_ras = apply_orientation(data, to_ras)
    affine_ras = affine @ inv_ornt_aff(to_ras, data.shape)
    zooms = np.sqrt((affine_ras[:3, :3] ** 2).sum(axis=0))  # mm along the reoriented (i, j, k)
    labels_zyx = model.predict_zyx(np.transpose(data_ras, (2, 1, 0)), zooms)
    back = apply_orientation(np.transpose(labels_zyx, (2, 1, 0)), ornt_transform(ras, io_orientation(affine)))
    return np.transpose(back, (2, 1, 0))
