"""``imaging-pipelines segment SRC OUT --model MODEL``: one scan through the step the per-patient
``segmentation`` asset runs (:func:`imaging_pipelines.medical.segment.imported_model.segment_image`).

SRC: a DICOM series folder (one series) or a NIfTI / NRRD / MHA file, read with the pipeline's readers.
MODEL: an nnU-Net v2 trained-model folder (``plans.json`` + ``dataset.json``), a MONAI bundle folder
(``configs/``), a project model file (``.pt``), or the id of a catalog dataset whose model is used (its
``segmentation.model`` for method ``imported``; its current trained model for ``dynunet`` / ``unet``).
OUT ending in ``.nii.gz``: the label map on SRC's grid. OUT a folder: ``<name>.nii.gz``,
``<name>.manifest.json`` (model kind and version, device, timings in seconds, labels, volumes in mL) and,
for DICOM sources when the DICOM output writer is installed, ``<name>.seg.dcm`` and ``<name>.sr.dcm``.
``<name>``: ``s<SeriesNumber>_<modality>`` for DICOM, the file's stem otherwise; never a free-text DICOM
descriptor, and no patient-identifying value is written anywhere. Every file is written atomically.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from imaging_pipelines.config.segmentation import ImportedModelConfig, InferenceConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.privacy import slug
from imaging_pipelines.core.storage import write_text_atomic
from imaging_pipelines.core.volume import Volume

class SegmentArgumentError(ValueError):
    """A bad command-line argument (exit code 2), as opposed to a failure while segmenting (exit code 1)."""


@dataclass
class Scan:
    """One scan read from SRC. ``patient_id`` is PHI: kept in memory only, to derive a pseudonym."""

    name: str
    volume: Volume
    source_format: str  # "dicom", "nifti", "nrrd", "mha"
    source_files: list[str] = field(default_factory=list)  # DICOM files of the series (empty otherwise)
    patient_id: str = ""
    modality: str = ""


@dataclass
class SegmentRun:
    written: list[Path]
    manifest: dict
    notes: list[str]


def read_scan(src: Path) -> Scan:
    """The one scan of SRC (ImagingInputError naming the file and the problem; SegmentArgumentError when a
    DICOM folder holds several series)."""
    from imaging_pipelines.medical.io.image_files import image_file_format, read_image_file

    if src.is_dir():
        from imaging_pipelines.medical.io.dicom import read_dicom_folder

        series = read_dicom_folder(src).series
        names = [_series_name(s) for s in series]
        if len(series) != 1:
            raise SegmentArgumentError(f"{src}: holds {len(series)} image series ({', '.join(names)}); give the "
                                       "folder of one series")
        s = series[0]
        return Scan(names[0], s.volume, "dicom", list(s.files), s.patient_id or "", s.modality or "")
    if not src.exists():
        raise ImagingInputError(src, "no such file or folder")
    fmt = image_file_format(src)
    if fmt is None:
        raise SegmentArgumentError(f"{src}: not a DICOM folder or a NIfTI / NRRD / MHA file")
    return Scan(slug(src.name.split(".")[0]) or "scan", read_image_file(src), fmt)


def _series_name(series) -> str:
    number = series.series_number if series.series_number is not None else 0
    return f"s{number:03d}_{slug(series.modality or 'image')}"


def _nnunet_folds(folder: Path, checkpoint: str) -> list[int | str]:
    """The folds of an nnU-Net folder with ``checkpoint`` (as ``nnUNetv2_predict`` finds them)."""
    found = []
    for sub in sorted(folder.glob("fold_*")):
        if (sub / checkpoint).is_file():
            tail = sub.name.removeprefix("fold_")
            found.append(int(tail) if tail.isdigit() else tail)
    return found or [0]


def resolve_model(model: str, folds: list[int | str] | None = None, use_mirroring: bool | None = None,
                  tile_step_size: float | None = None, checkpoint: str | None = None,
                  ) -> tuple[ImportedModelConfig, InferenceConfig | None, dict[int, str]]:
    """(model spec, sliding-window settings of a project model, label names from a catalog) for MODEL.
    ``checkpoint``: the nnU-Net checkpoint file name in each fold folder (``nnUNetv2_predict -chk``; default
    ``checkpoint_final.pth``); without ``folds`` every ``fold_<f>`` holding it is ensembled."""
    path = Path(model).expanduser()
    inference, names = None, {}
    if path.is_file():
        spec = ImportedModelConfig(kind="project", path=str(path.absolute()))
    elif path.is_dir():
        if (path / "plans.json").exists() or (path / "dataset.json").exists():
            spec = ImportedModelConfig(kind="nnunet", path=str(path.absolute()),
                                       folds=_nnunet_folds(path, checkpoint or "checkpoint_final.pth"))
        elif (path / "configs").is_dir():
            spec = ImportedModelConfig(kind="monai_bundle", path=str(path.absolute()))
        else:
            raise ImagingInputError(path, "not a model folder: no plans.json / dataset.json (nnU-Net) and no "
                                          "configs/ (MONAI bundle)")
    else:
        spec, inference, names = _catalog_model(model)
    updates = {k: v for k, v in (("folds", folds), ("use_mirroring", use_mirroring),
                                 ("tile_step_size", tile_step_size), ("checkpoint", checkpoint)) if v is not None}
    if updates and spec.kind != "nnunet":
        raise SegmentArgumentError(f"--folds / --mirroring / --tile-step / --checkpoint apply to nnU-Net models, "
                                   f"not {spec.kind}")
    return ImportedModelConfig(**{**spec.model_dump(), **updates}), inference, names


def _catalog_model(name: str) -> tuple[ImportedModelConfig, InferenceConfig | None, dict[int, str]]:
    from imaging_pipelines.config.catalog import load_catalog

    datasets = {d.id: d for d in load_catalog()}
    if name not in datasets:
        raise SegmentArgumentError(f"--model {name!r}: no such file or folder, and no catalog dataset of that id "
                                   f"(catalog datasets: {', '.join(sorted(datasets)) or 'none'})")
    cfg = datasets[name].segmentation
    names = {v: k for k, v in cfg.classes.items()}
    if cfg.uses_imported_model:
        return cfg.model, cfg.inference, names
    if cfg.uses_model:
        from imaging_pipelines.core.asset_names import SEGMENTATION_MODEL
        from imaging_pipelines.core.storage import is_local, local_path, storage_root
        from imaging_pipelines.models import store

        folder = store.model_folder(storage_root(), name, SEGMENTATION_MODEL)
        file = folder / store.read_pointer(folder, "segmentation model")["file"]
        if not is_local(file):
            raise SegmentArgumentError(f"--model {name!r}: the trained model lies in remote storage ({file}); "
                                       "copy the file here and pass its path")
        return ImportedModelConfig(kind="project", path=str(local_path(file))), cfg.inference, names
    raise SegmentArgumentError(f"--model {name!r}: catalog dataset has no model (segmentation method {cfg.method!r})")


def _write_nifti_atomic(volume: Volume, target: Path) -> Path:
    from imaging_pipelines.medical.io.image_files import write_nifti

    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial.nii.gz", dir=target.parent)
    os.close(fd)
    try:
        write_nifti(volume, tmp)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def label_figures(mask: Volume, labels: dict[int, str]) -> dict[str, dict[str, float]]:
    """Per label name: voxel count and volume in mL (voxel volume from the spacing in mm)."""
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0
    values, counts = np.unique(np.asarray(mask.array), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    return {name: {"value": int(v), "voxels": int(found.get(v, 0)), "volume_ml": round(found.get(v, 0) * voxel_ml, 4)}
            for v, name in sorted(labels.items())}


def segment_scan(src: str | Path, out: str | Path, model: str, device: str = "auto",
                 folds: list[int | str] | None = None, use_mirroring: bool | None = None,
                 tile_step_size: float | None = None, log: Callable[[str], None] = lambda _: None,
                 checkpoint: str | None = None) -> SegmentRun:
    """Segment the one scan of ``src`` with ``model`` and write the outputs (see the module docstring)."""
    from imaging_pipelines.medical.segment.imported_model import open_model, segment_image

    src, out, start = Path(src), Path(out), time.perf_counter()
    single_file = out.name.lower().endswith(".nii.gz")
    if not single_file and out.exists() and not out.is_dir():
        raise SegmentArgumentError(f"{out}: OUT must end in .nii.gz or be a folder")
    spec, inference, names = resolve_model(model, folds, use_mirroring, tile_step_size, checkpoint)
    scan = read_scan(src)
    if scan.volume.is_timeseries:
        raise ImagingInputError(src, "is a time series; segmentation needs one 3D image")
    t_read = time.perf_counter()
    loaded = open_model(spec, device, inference, labels=names)
    log(f"model {loaded.description} on {loaded.device} ({len(loaded.labels)} label(s))")
    t_load = time.perf_counter()
    mask = segment_image(loaded, scan.volume)
    t_pred = time.perf_counter()
    target = out if single_file else out / f"{scan.name}.nii.gz"
    written, notes = [_write_nifti_atomic(mask, target)], []
    if mask.attributes.get("brain_warning"):
        notes.append(str(mask.attributes["brain_warning"]))
        log(f"warning: {notes[-1]}")
    if not single_file and scan.source_format == "dicom":
        written += _dicom_outputs(scan, mask, loaded, out, notes)
    manifest = {
        "tool": "imaging-pipelines segment",
        "source": {"name": scan.name, "format": scan.source_format, "modality": scan.modality or None,
                   "shape_zyx": list(scan.volume.spatial_shape), "spacing_mm_xyz": list(scan.volume.spacing)},
        "model": {"kind": spec.kind, "version": loaded.version, "path": spec.path,
                  "folds": spec.folds if spec.kind == "nnunet" else None},
        "device": loaded.device,
        "labels": {str(v): n for v, n in sorted(loaded.labels.items())},
        "segments": label_figures(mask, loaded.labels),
        "timings_s": {"read": round(t_read - start, 3), "load_model": round(t_load - t_read, 3),
                      "predict": round(t_pred - t_load, 3), "total": round(time.perf_counter() - start, 3)},
        "outputs": [p.name for p in written],
        "notes": notes,
    }
    if not single_file:
        manifest_file = out / f"{scan.name}.manifest.json"
        write_text_atomic(manifest_file, json.dumps(manifest, indent=2))
        written.append(manifest_file)
    return SegmentRun(written, manifest, notes)


def _dicom_outputs(scan: Scan, mask: Volume, loaded, folder: Path, notes: list[str]) -> list[Path]:
    """The de-identified DICOM SEG + TID 1500 SR of ``mask``, referencing the source series (needs the
    ``segment-export`` extra: highdicom)."""
    try:
        from imaging_pipelines.medical.segment.dicom_outputs import write_dicom_outputs
    except ImportError:
        notes.append("DICOM SEG / SR not written: install the segment-export extra (highdicom)")
        return []
    from imaging_pipelines.core.privacy import pseudonymise

    return list(write_dicom_outputs(mask, scan.volume, scan.source_files, folder, scan.name, loaded.labels,
                                    patient_pseudonym=pseudonymise(scan.patient_id or scan.name),
                                    algorithm_version=loaded.version))
