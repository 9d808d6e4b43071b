"""One interface over the models a scan can be segmented with: imported nnU-Net folders, MONAI bundles and
this project's own model files; and :func:`segment_image`, the one "segment one image with a model" step
that both the per-patient ``segmentation`` asset and ``imaging-pipelines segment`` call.

A :class:`LoadedModel` holds the loaded network (load once, predict many) with its version (hash of its
files, :mod:`imaging_pipelines.medical.segment.model_files`), its labels (value -> name, from its own files)
and the device it runs on. Masks lie on the input image's own grid (array ``[z, y, x]``, LPS mm).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from imaging_pipelines.config.segmentation import ImportedModelConfig, InferenceConfig
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.model_files import ModelFiles, inspect_model


@dataclass
class LoadedModel:
    """A model ready to predict: ``predict(image) -> label Volume`` on the image's grid."""

    files: ModelFiles
    device: str  # resolved torch device ("cpu", "cuda")
    predict: Callable[[Volume], Volume]
    load_s: float = 0.0  # seconds spent loading

    @property
    def version(self) -> str:
        return self.files.version

    @property
    def labels(self) -> dict[int, str]:
        return self.files.labels

    @property
    def description(self) -> str:
        """``imported <kind> <version>``: what produced a mask, for metadata and manifests."""
        return f"imported {self.files.kind} {self.version}"


def open_model(spec: ImportedModelConfig, device: str = "auto", inference: InferenceConfig | None = None,
               labels: dict[int, str] | None = None) -> LoadedModel:
    """Check ``spec``'s files (ImagingInputError naming a missing file) and load the model on ``device``
    (``auto``: CUDA when present). ``inference``: sliding-window settings of ``project`` models (catalog
    defaults otherwise); ``labels``: names for a ``project`` model's label values (its file has none)."""
    from imaging_pipelines.models.device import pick_device

    start = time.perf_counter()
    files = inspect_model(spec)
    resolved = str(pick_device(device))
    if spec.kind == "nnunet":
        from imaging_pipelines.medical.segment.nnunet_predict import NnunetFolderModel

        model = NnunetFolderModel(files.root, spec.folds, spec.checkpoint, resolved, spec.use_mirroring,
                                  spec.tile_step_size, spec.configuration)
        predict = model.predict
    elif spec.kind == "monai_bundle":
        from imaging_pipelines.medical.segment.monai_bundle import BundleModel

        predict = BundleModel(files.root, resolved, spec.bundle_data_id, spec.bundle_image_key,
                              spec.bundle_output_dir_id).predict
    else:
        predict = _project_predictor(files, resolved, inference or InferenceConfig())
        if labels:
            files = ModelFiles(files.kind, files.root, files.files, {v: labels.get(v, n) for v, n in files.labels.items()},
                               files.version)
    return LoadedModel(files, resolved, predict, time.perf_counter() - start)


def _project_predictor(files: ModelFiles, device: str, inference: InferenceConfig) -> Callable[[Volume], Volume]:
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict

    model = SegmentationModel.load(files.root, device)

    def run(image: Volume) -> Volume:
        return predict(model, image, overlap=inference.overlap, sw_batch_size=inference.sw_batch_size,
                       device=device, flip_tta=inference.flip_tta)

    return run


def segment_image(model: LoadedModel, image: Volume) -> Volume:
    """The label map of ``image`` by ``model``, on ``image``'s grid (uint8, uint16 beyond 255 labels), with
    ``attributes``: ``model_version``, ``device``, ``runtime_s`` (seconds of prediction)."""
    from imaging_pipelines.medical.preprocess.resample import resample_like

    if image.is_timeseries:
        raise ValueError("segmentation expects a 3D image, not a time series")
    start = time.perf_counter()
    mask = model.predict(image)
    if not mask.same_geometry(image):
        mask = resample_like(mask, image, interpolator="nearest")
    array = np.asarray(mask.array)
    if array.dtype not in (np.uint8, np.uint16):
        array = array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16)
    return Volume(array=array, spacing=image.spacing, origin=image.origin, direction=image.direction,
                  attributes={"model_version": model.version, "device": model.device,
                              "runtime_s": time.perf_counter() - start})
