"""Prediction with a MONAI bundle, one :class:`Volume` at a time, through the bundle's own workflow.

The bundle's inference config is run by ``monai.bundle.run`` (the function behind ``python -m monai.bundle
run``): the same ``ConfigWorkflow`` with the bundle's own preprocessing, network, inferer and postprocessing,
and two overrides only: the data list (``bundle_data_id``, default ``dataset#data``) becomes the one image,
and the output folder (``bundle_output_dir_id``, default ``output_dir``) a temporary one, whose written
label file is read back. The image is handed over as a NIfTI file written from the Volume (LPS -> RAS
affine, voxels unchanged), so the label map equals what ``python -m monai.bundle run`` writes for that file.
A bundle whose postprocessing does not return to the input grid (no ``Invertd``) gets its output resampled
onto it (nearest neighbour, in world LPS mm). Device: the bundle's ``device`` entry is overridden with
:func:`imaging_pipelines.models.device.pick_device`'s choice when the config has one.

Reuse (``reuse=True``, the default): a :class:`BundleModel` runs its first image exactly as
``monai.bundle.run`` does, and later images through the same parsed ``ConfigWorkflow``
(:class:`imaging_pipelines.medical.segment.bundle_workflow.KeptWorkflow`): MONAI's ``initialize()`` re-parses
the config with the new data list and output folder, so the bundle's own pre/post-processing, inferer,
handlers and evaluator run for each image, while the network built for the first image (its torch modules)
is kept with the weights its ``CheckpointLoader`` loaded then (that handler is not run again). Bundles where that is not safe run through ``monai.bundle.run`` for every image
(``reuse_note`` says why): a network built from the data list or the output folder, a network the
``initialize`` expressions act on, or no network among the config's top-level items (one built inside
another component cannot be put back). ``reuse=False`` always uses ``monai.bundle.run``.

Parsing a bundle config runs the code it names (``_target_``, ``$`` expressions): only import bundles you trust.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.volume import Volume


class BundleModel:
    """A MONAI bundle folder run through its ``configs/inference.json`` (or ``inference.yaml``) on ``device``."""

    def __init__(self, folder: str | Path, device: str = "auto", data_id: str = "dataset#data",
                 image_key: str = "image", output_dir_id: str = "output_dir", reuse: bool = True) -> None:
        from imaging_pipelines.medical.segment.model_files import bundle_inference_config, read_bundle_config
        from imaging_pipelines.models.device import pick_device

        self.folder = Path(folder)
        self.config_file = bundle_inference_config(self.folder)
        self.meta_file = self.folder / "configs" / "metadata.json"
        self.device = pick_device(device)
        self.data_id, self.image_key, self.output_dir_id = data_id, image_key, output_dir_id
        config = read_bundle_config(self.config_file)
        for needed in (data_id, output_dir_id):
            if not _has_id(config, needed):
                raise ImagingInputError(self.config_file, f"no config id {needed!r} to override (set the catalog's "
                                                          "bundle_data_id / bundle_output_dir_id)")
        self.has_device = "device" in config
        self.reuse = reuse
        self.workflow: Any = None  # KeptWorkflow once the first image has run (reuse=True)
        self.reuse_note = "" if reuse else "reuse=False"

    def overrides(self, image_file: Path, output_dir: Path) -> dict[str, Any]:
        """The config overrides that feed ``image_file`` and collect the output in ``output_dir``."""
        return {**self.fixed_overrides(), **self.case_overrides(image_file, output_dir)}

    def fixed_overrides(self) -> dict[str, Any]:
        """The overrides that are the same for every image: ``bundle_root`` and (when configured) ``device``."""
        found: dict[str, Any] = {"bundle_root": str(self.folder)}
        if self.has_device:
            found["device"] = f"$torch.device('{self.device}')"
        return found

    def case_overrides(self, image_file: Path, output_dir: Path) -> dict[str, Any]:
        """The overrides of one image: the data list (``image_file``) and the output folder."""
        return {self.data_id: [{self.image_key: str(image_file)}], self.output_dir_id: str(output_dir)}

    def run_file(self, image_file: Path, output_dir: Path) -> Path:
        """Run the bundle on ``image_file``; the label file it wrote into ``output_dir``."""
        from monai.bundle import run

        output_dir.mkdir(parents=True, exist_ok=True)
        if self.reuse and self.workflow is None:
            from imaging_pipelines.medical.segment.bundle_workflow import KeptWorkflow

            first = KeptWorkflow(self.config_file, self.meta_file, self.fixed_overrides())
            first.run_case(self.case_overrides(image_file, output_dir))  # as monai.bundle.run
            if first.kept:
                self.workflow = first
            else:
                self.reuse, self.reuse_note = False, first.not_reused
        elif self.reuse:
            self.workflow.run_case(self.case_overrides(image_file, output_dir))
        else:
            run(config_file=str(self.config_file), meta_file=str(self.meta_file),
                **self.overrides(image_file, output_dir))
        written = sorted(p for p in output_dir.rglob("*") if p.is_file() and p.name.endswith((".nii.gz", ".nii")))
        if len(written) != 1:
            raise ImagingInputError(self.config_file, f"the bundle wrote {len(written)} NIfTI file(s) into its "
                                                      "output folder; expected one label map")
        return written[0]

    def predict(self, image: Volume) -> Volume:
        """uint8 (uint16 beyond 255) label Volume on ``image``'s grid; ``attributes['runtime_s']`` in seconds."""
        from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti
        from imaging_pipelines.medical.preprocess.resample import resample_like

        start = time.perf_counter()
        if image.is_timeseries:
            raise ValueError("bundle prediction expects a 3D image Volume")
        with tempfile.TemporaryDirectory(prefix="bundle-") as tmp:
            # uncompressed (no gzip time), not fsynced (a scratch file, deleted with its folder)
            source = write_nifti(image, Path(tmp) / "input" / "image.nii", durable=False)
            labels = read_nifti(self.run_file(source, Path(tmp) / "output"))
        array = np.asarray(labels.array)
        if array.ndim == 4:
            raise ImagingInputError(self.config_file, "the bundle wrote a multi-channel output, not a label map")
        if not np.issubdtype(array.dtype, np.integer):  # a float label file: values rounded to integers
            array = np.rint(array).astype(np.int64)
        labels = labels.with_array(array.astype(np.uint8 if array.max(initial=0) < 256 else np.uint16, copy=False))
        if not labels.same_geometry(image):
            labels = resample_like(labels, image, interpolator="nearest")
        return Volume(array=labels.array, spacing=image.spacing, origin=image.origin, direction=image.direction,
                      attributes={"runtime_s": time.perf_counter() - start})


def _has_id(config: dict, config_id: str) -> bool:
    """Whether ``config`` holds the ``#``-separated id (``dataset#data``) as the bundle parser reads it."""
    node: Any = config
    for part in config_id.split("#"):
        if isinstance(node, dict) and part in node:
            node = node[part]
        elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
            node = node[int(part)]
        else:
            return False
    return True
