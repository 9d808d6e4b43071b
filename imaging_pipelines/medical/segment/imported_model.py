"""One interface over the models a scan can be segmented with: imported nnU-Net folders, MONAI bundles and
this project's own model files; and :func:`segment_image`, the one "segment one image with a model" step
that both the per-patient ``segmentation`` asset and ``imaging-pipelines segment`` call.

A :class:`LoadedModel` holds the loaded network (load once, predict many) with its version (hash of its
files, :mod:`imaging_pipelines.medical.segment.model_files`), its labels (value -> name, from its own files)
and the device it runs on. Masks lie on the input image's own grid (array ``[z, y, x]``, LPS mm).

:func:`open_model` keeps the last :data:`CACHED_MODELS` loaded models of the process, keyed by the model's
version (its files' hash, kept while the files' sizes, inodes and times are unchanged:
:func:`~imaging_pipelines.medical.segment.model_files.files_version_cached`) with the settings and device, so
a process that segments many partitions (in-process executor, a backfill, ``imaging-pipelines segment`` over
a folder) loads an nnU-Net predictor once; a changed checkpoint has a new version and is loaded afresh.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from typing import Callable

import numpy as np

from imaging_pipelines.config.segmentation import ImportedModelConfig, InferenceConfig
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.model_files import ModelFiles, clear_version_cache, inspect_model

# what a brain-gated model's label map says about its gate (segment.unet.predict), kept on the output
BRAIN_GATE_ATTRIBUTES = ("brain_prior", "network_brain_ml", "brain_warning")


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


CACHED_MODELS = 2  # loaded models kept per process (each holds its network's weights in memory)
_cache: OrderedDict[tuple, LoadedModel] = OrderedDict()
_cache_lock = threading.Lock()


def clear_model_cache() -> None:
    """Forget every loaded model kept by :func:`open_model` and every kept file hash (the next call hashes
    and loads the files, as a new process does)."""
    with _cache_lock:
        _cache.clear()
    clear_version_cache()


def open_model(spec: ImportedModelConfig, device: str = "auto", inference: InferenceConfig | None = None,
               labels: dict[int, str] | None = None) -> LoadedModel:
    """Check ``spec``'s files (ImagingInputError naming a missing file) and load the model on ``device``
    (``auto``: CUDA when present), or hand back the one this process loaded from the same files (same
    version) with the same settings. ``inference``: sliding-window settings of ``project`` models (catalog
    defaults otherwise); ``labels``: names for a ``project`` model's label values (its file has none).
    ``load_s``: seconds this call spent (checking the files, hashing them when changed; loading when not
    cached)."""
    from imaging_pipelines.models.device import pick_device

    start = time.perf_counter()
    files = inspect_model(spec)
    resolved = str(pick_device(device))
    key = (files.kind, str(files.root), files.version, resolved, spec.model_dump_json(),
           (inference or InferenceConfig()).model_dump_json() if spec.kind == "project" else "",
           tuple(sorted((labels or {}).items())) if spec.kind == "project" else ())
    with _cache_lock:
        cached = _cache.get(key)
        if cached is not None:
            _cache.move_to_end(key)
            return LoadedModel(cached.files, cached.device, cached.predict, time.perf_counter() - start)
    loaded = _load(spec, files, resolved, inference, labels, start)
    with _cache_lock:
        _cache[key] = loaded
        while len(_cache) > CACHED_MODELS:
            _cache.popitem(last=False)
    return loaded


def _load(spec: ImportedModelConfig, files: ModelFiles, resolved: str, inference: InferenceConfig | None,
          labels: dict[int, str] | None, start: float) -> LoadedModel:
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
    lock = threading.Lock()  # one prediction at a time per loaded network (nnUNetPredictor keeps state)

    def serial(image: Volume) -> Volume:
        with lock:
            return predict(image)

    return LoadedModel(files, resolved, serial, time.perf_counter() - start)


def _project_predictor(files: ModelFiles, device: str, inference: InferenceConfig) -> Callable[[Volume], Volume]:
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict

    model = SegmentationModel.load(files.root, device)

    def run(image: Volume) -> Volume:
        return predict(model, image, overlap=inference.overlap, sw_batch_size=inference.sw_batch_size,
                       device=device, flip_tta=inference.flip_tta)

    return run


def segment_image(model: LoadedModel, image: Volume) -> Volume:
    """The label map of ``image`` by ``model``, on ``image``'s grid (uint8, uint16 beyond 255 labels), with
    ``attributes``: ``model_version``, ``device``, ``runtime_s`` (seconds of prediction), and a brain-gated
    model's :data:`BRAIN_GATE_ATTRIBUTES` (which gate was used, the brain's volume in mL, a warning when it is
    implausibly small)."""
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
                              "runtime_s": time.perf_counter() - start,
                              **{k: v for k, v in mask.attributes.items() if k in BRAIN_GATE_ATTRIBUTES}})
