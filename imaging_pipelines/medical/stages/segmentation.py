"""Segmentation stage (inference), per patient: the trained model (or the catalog's classical fallback while
no model exists) on every selected image, post-processing, the configured baselines beside it, and the
outputs a user takes away.

Store ``segmentation/<partition>.zarr``: each segmented image with OME-Zarr labels ``segmentation``,
``baseline_<name>`` and ``reference`` (when one exists), all on the segmented (input-stage) grid. Beside it,
``segmentation_masks/<partition>/<image>.nii.gz`` (the mask on the image's original, ingested grid) and,
for DICOM sources, ``<image>.seg.dcm``: a pseudonymised DICOM SEG referencing the source series.
Volumes in mL; label values are the catalog's class values.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from upath import UPath

from imaging_pipelines.medical.io.ome_zarr import read_volume_store, write_volume_store
from imaging_pipelines.core.storage import as_upath
from imaging_pipelines.core.stage_result import INGESTED, CheckOutcome, StageResult, stage_store
from imaging_pipelines.medical.stages.segmentation_data import (
    SEGMENTED, SegmentationInput, input_stage, segmentation_inputs,
)
from imaging_pipelines.core.volume import Volume

MASKS = "segmentation_masks"


@dataclass
class SegmentationOutcome(StageResult):
    method: str = ""  # what produced the masks: "<method> <version>" or "<baseline> (fallback)"
    model_version: str = ""
    volumes_ml: dict[str, float] = field(default_factory=dict)  # class name -> total over images
    lesion_count: int = 0  # connected components of the first class, over images
    outputs: list[str] = field(default_factory=list)  # NIfTI / DICOM SEG files written
    objects: list[dict] = field(default_factory=list)  # one row per connected component (connected_components)
    surfaces: list[dict] = field(default_factory=list)  # one row per mesh (catalog meshes): area mm^2, volume mL


def _predictor(dataset, root, device: str, notes: list[str]):
    """(function image -> label Volume, method description, model version, class name -> label value)."""
    from imaging_pipelines.medical.segment.baselines import run_baseline

    cfg = dataset.segmentation
    first_value = cfg.label_values[1]
    if cfg.uses_imported_model:
        from imaging_pipelines.medical.segment.imported_model import open_model, segment_image

        model = open_model(cfg.model, device, cfg.inference, labels={v: k for k, v in cfg.classes.items()})
        classes = {name: value for value, name in sorted(model.labels.items())}
        return (lambda image: segment_image(model, image)), model.description, model.version, classes
    if cfg.uses_model:
        try:
            predict, version = trained_predictor(dataset, root, device)
        except FileNotFoundError as exc:
            notes.append(f"{exc}; using the fallback {cfg.fallback!r} until a model is trained")
        else:
            return predict, f"{cfg.method} {version}", version, cfg.classes
    method = cfg.method if not cfg.uses_model else cfg.fallback
    if method == "none":
        return None, "none", "", cfg.classes

    def classical(image: Volume) -> Volume:
        mask, _ = run_baseline(method, image)
        return mask.with_array(mask.array.astype(np.uint8) * np.uint8(first_value))

    return classical, f"{method} (classical{', fallback' if cfg.uses_model else ''})", "", cfg.classes


def trained_predictor(dataset, root, device: str):
    """(function image -> label Volume with the catalog's values, model version) of the dataset's current
    trained model: nnU-Net (``method: nnunet``) or the DynUNet / UNet; FileNotFoundError while none exists."""
    cfg = dataset.segmentation
    if cfg.method == "nnunet":
        from imaging_pipelines.medical.stages.nnunet_model import nnunet_predictor

        return nnunet_predictor(dataset, root, device)
    from imaging_pipelines.medical.segment.unet import predict
    from imaging_pipelines.medical.stages.segmentation_model import load_segmentation_model

    model = load_segmentation_model(root, dataset.id)
    inf = cfg.inference
    return (lambda image: predict(model, image, overlap=inf.overlap, sw_batch_size=inf.sw_batch_size,
                                  device=device, flip_tta=inf.flip_tta)), model.version


def segment_partition(dataset, partition: str, root: UPath | str, device: str = "auto") -> SegmentationOutcome:
    """Segment the partition's selected images; write the store, the NIfTI masks and DICOM SEGs."""
    from imaging_pipelines.medical.segment.postprocess import postprocess_labels

    start = time.perf_counter()
    cfg = dataset.segmentation
    inputs, notes = segmentation_inputs(dataset, root, partition)
    predict_fn, method, version, classes = _predictor(dataset, root, device, notes)
    images, labels, rows, outputs = {}, {}, [], []
    volumes = {name: 0.0 for name in classes}
    lesions, objects, surfaces = 0, [], []
    if input_stage(dataset) == INGESTED:  # the inputs are the ingested images: no second read
        sources = {case.name: case.image for case in inputs}
    else:
        sources = read_volume_store(stage_store(root, dataset.id, INGESTED, partition)) if inputs else {}
    path = stage_store(root, dataset.id, SEGMENTED, partition)
    # the per-object statistics of an image are computed on a second thread while its outputs (and the next
    # image's prediction) are written: NumPy / SciPy and the file writers leave the interpreter lock
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="class-figures") as pool:
        pending = []
        for case in inputs if predict_fn is not None else []:
            t0 = time.perf_counter()
            prediction, pp = postprocess_labels(predict_fn(case.image), cfg.postprocess.min_component_ml,
                                                cfg.postprocess.keep_largest, cfg.postprocess.fill_holes)
            images[case.name] = case.image
            labels[case.name] = {"segmentation": prediction}
            labels[case.name].update(baseline_masks(case, cfg.baselines, cfg.label_values[1], notes))
            if case.reference is not None:
                labels[case.name]["reference"] = case.reference
            pending.append((case.name, t0, pp, pool.submit(timed_class_figures, prediction, classes, case.image)))
            outputs += write_take_away_outputs(dataset, root, partition, case, sources.get(case.name), prediction,
                                               notes, {v: k for k, v in classes.items()}, surfaces)
        write_volume_store(path, images, {"dataset": dataset.id, "partition": partition, "stage": SEGMENTED,
                                          "method": method, "model_version": version}, labels=labels)
        for name, t0, pp, future in pending:
            (figures, found), done = future.result()
            row = {"image": name, "method": method}
            objects += [{"image": name, **o} for o in found]
            for class_name, count, ml in figures:
                row[f"{class_name}_ml"], row[f"{class_name}_count"] = round(ml, 3), count
                volumes[class_name] += ml
            lesions += row[f"{next(iter(classes))}_count"] if classes else 0
            row["removed_ml"] = round(pp.removed_ml, 3)
            row["runtime_s"] = round(done - t0, 3)  # prediction, post-processing and statistics
            rows.append(row)
    checks = {"mask_not_empty_where_reference_is": not_empty_check(inputs, labels)}
    return SegmentationOutcome(str(path), list(images), rows, notes, checks, time.perf_counter() - start,
                               method=method, model_version=version, volumes_ml=volumes, lesion_count=lesions,
                               outputs=outputs, objects=objects, surfaces=surfaces)


def baseline_masks(case: SegmentationInput, baselines: list[str], value: int, notes: list[str]) -> dict[str, Volume]:
    """``{"baseline_<name>": mask}`` of every baseline that succeeds on ``case`` (masks written with label
    ``value``). A baseline that fails (e.g. an empty brain mask after erosion) is noted and skipped: it never
    takes the method's own mask or the other baselines down with it."""
    from imaging_pipelines.medical.segment.baselines import run_baseline

    masks = {}
    for name in baselines:
        try:
            mask, _ = run_baseline(name, case.image)
        except (ValueError, RuntimeError) as exc:  # SimpleITK raises RuntimeError
            notes.append(f"{case.name}: baseline {name} skipped: {exc}")
            continue
        masks[f"baseline_{name}"] = mask.with_array(mask.array * np.uint8(value))
    return masks


MAX_OBJECT_ROWS = 200  # per class and image: the largest objects get a statistics row; every object is counted


def class_figures(prediction: Volume, classes: dict[str, int], image: Volume) -> tuple[list[tuple[str, int, float]], list[dict]]:
    """((class name, connected components, volume mL) per class, one row per object with its statistics:
    volume mL, centroid LPS mm, mean intensity in ``image`` units). Components are face-connected and
    numbered 1..n by decreasing size (raster order of their first voxel among equal sizes), as
    :func:`~imaging_pipelines.medical.segment.classical.connected_components` numbers a binary mask; a class
    with more than :data:`MAX_OBJECT_ROWS` objects (a speckled mask) is counted and measured in full but only
    its largest objects get rows, so a noisy model costs no more than the rest of the stage. One labelling
    and one counting pass per class; each object with a row is then measured inside its bounding box."""
    from scipy import ndimage

    voxel_ml = float(np.prod(prediction.spacing)) / 1000.0
    to_world = prediction.index_to_world_lps()
    if not image.same_geometry(prediction):
        raise ValueError("image is not on the label grid")
    figures, objects = [], []
    for name, value in classes.items():
        mask = prediction.array == value
        components, count = ndimage.label(mask) if mask.any() else (None, 0)  # face connectivity
        if not count:
            figures.append((name, 0, 0.0))
            continue
        sizes = np.bincount(components.ravel(), minlength=count + 1)
        figures.append((name, int(count), float((components.size - sizes[0]) * voxel_ml)))
        order = np.argsort(-sizes[1:], kind="stable")[:MAX_OBJECT_ROWS] + 1  # component ids, largest first
        ijk, means = object_sums(components, order, image.array)
        centroids = (to_world[:3, :3] @ (ijk / sizes[order]) + to_world[:3, 3:]).T  # LPS mm, one row per object
        means /= sizes[order]
        objects += [{"class": name, "object": rank, "volume_ml": round(size * voxel_ml, 3),
                     "centroid_lps_mm": ", ".join(f"{v:.1f}" for v in centroid), "mean_intensity": round(mean, 3)}
                    for rank, (size, centroid, mean) in enumerate(zip(sizes[order].tolist(), centroids.tolist(),
                                                                      means.tolist()), start=1)]
    return figures, objects


def object_sums(components: np.ndarray, ids: np.ndarray, intensities: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """For the components ``ids`` of a label array ``[z, y, x]``: the sums of their voxels' indices (shape
    ``(3, len(ids))``, rows i, j, k = x, y, z) and of their ``intensities`` (float64). The components are
    renumbered 1..len(ids) (others 0), so one bounding-box pass finds all boxes however many components
    there are; each is then summed inside its box from the marginal counts."""
    from scipy import ndimage

    rank = np.zeros(int(components.max()) + 1, dtype=np.min_scalar_type(len(ids)))
    rank[ids] = np.arange(1, len(ids) + 1)
    ranked = rank[components]
    ijk = np.zeros((3, len(ids)), dtype=np.float64)
    sums = np.zeros(len(ids), dtype=np.float64)
    for r, box in enumerate(ndimage.find_objects(ranked)):
        inside = ranked[box] == r + 1
        for row, axis in ((2, 0), (1, 1), (0, 2)):
            marginal = inside.sum(axis=tuple(a for a in range(3) if a != axis), dtype=np.int64)
            ijk[row, r] = float(np.arange(box[axis].start, box[axis].stop) @ marginal)
        sums[r] = np.sum(intensities[box][inside], dtype=np.float64)
    return ijk, sums


def timed_class_figures(prediction: Volume, classes: dict[str, int], image: Volume) -> tuple[tuple, float]:
    """(:func:`class_figures`, ``time.perf_counter()`` when they were done)."""
    return class_figures(prediction, classes, image), time.perf_counter()


def not_empty_check(inputs: list[SegmentationInput], labels: dict) -> CheckOutcome:
    empty = [c.name for c in inputs if c.reference is not None and c.reference.array.any()
             and c.name in labels and not labels[c.name]["segmentation"].array.any()]
    checked = sum(1 for c in inputs if c.reference is not None and c.reference.array.any())
    return CheckOutcome(not empty, "masks are not empty where the reference is not" if not empty
                        else f"empty mask where the reference has labels: {', '.join(empty)}", {"images_checked": checked})


def write_take_away_outputs(dataset, root, partition: str, case: SegmentationInput, source: Volume | None,
                            prediction: Volume, notes: list[str], names: dict[int, str] | None = None,
                            surfaces: list[dict] | None = None) -> list[str]:
    """The mask on the image's ingested grid (``source``) as NIfTI and, for a DICOM source, the de-identified
    DICOM SEG (catalog ``dicom_seg_type``; segments named by ``names``, label value -> name, default: the
    catalog's classes) and TID 1500 measurement report (``dicom_sr``); with catalog ``meshes`` an STL and a GLB
    surface per label (world LPS mm), whose area (mm^2) and enclosed volume (mL) rows are appended to
    ``surfaces``; the files are published atomically, as one set."""
    from imaging_pipelines.core.storage import atomic_files
    from imaging_pipelines.medical.io.image_files import write_nifti
    from imaging_pipelines.medical.preprocess.resample import resample_like

    if source is None:
        notes.append(f"{case.name}: no ingested image of that name; masks kept in the store only")
        return []
    mask = prediction if prediction.same_geometry(source) else resample_like(prediction, source, interpolator="nearest")
    folder = as_upath(root) / dataset.id / MASKS / partition
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        local = [write_nifti(mask, Path(tmp) / f"{case.name}.nii.gz")]
        if cfg_wants_seg(dataset, source):
            local += write_partition_seg(dataset, root, partition, case.name, mask, Path(tmp), notes, image=source,
                                         names=names)
        if dataset.segmentation.meshes:
            from imaging_pipelines.medical.segment.meshes import mesh_files

            paths, rows = mesh_files(mask, Path(tmp), case.name, names or {v: k for k, v in dataset.segmentation.classes.items()})
            local += paths
            if surfaces is not None:
                surfaces += [{"image": case.name, **row} for row in rows]
        # published as a set: every file written and flushed before any is renamed, so a kill while writing
        # leaves the previous mask, SEG and SR (the SR references the SEG it was written with) all in place
        with atomic_files([folder / path.name for path in local]) as tmps:
            for path, tmp in zip(local, tmps):
                shutil.copyfile(path, tmp)
        written = [str(folder / path.name) for path in local]
    return written


def cfg_wants_seg(dataset, source: Volume) -> bool:
    return dataset.segmentation.dicom_seg and "dicom" in dataset.formats and source.attributes.get("source_format") is None


def write_partition_seg(dataset, root, partition: str, name: str, mask: Volume, tmp: Path,
                        notes: list[str], image: Volume | None = None, names: dict[int, str] | None = None) -> list[Path]:
    """The DICOM SEG (and SR, catalog ``dicom_sr``; it needs ``image``, the intensities on the mask's grid) of
    ``mask`` referencing the patient's DICOM series whose files lie on the mask's grid, written in ``tmp``
    and de-identified with the partition key as pseudonym; segments named by ``names`` (label value -> name,
    default: the catalog's classes). A profile violation raises."""
    try:
        from imaging_pipelines.medical.segment.dicom_outputs import write_dicom_outputs
    except ImportError:
        notes.append("DICOM SEG skipped: install the segment-export extra (highdicom)")
        return []
    import importlib.util

    if importlib.util.find_spec("highdicom") is None:
        notes.append("DICOM SEG skipped: install the segment-export extra (highdicom)")
        return []
    cfg = dataset.segmentation
    names = names or {v: k for k, v in cfg.classes.items()}
    for files in candidate_series_files(dataset, root, partition, mask.spatial_shape):
        try:
            return write_dicom_outputs(mask, mask if image is None else image, files, tmp, name, names,
                                       patient_pseudonym=partition, seg_type=cfg.dicom_seg_type,
                                       algorithm_version=str(mask.attributes.get("model_version") or "classical")[:16],
                                       write_sr=cfg.dicom_sr and image is not None)
        except ValueError:  # this series is not on the mask's grid; a profile violation is not a ValueError
            continue
    notes.append(f"{name}: no DICOM series of this patient lies on the mask's grid; no DICOM SEG written")
    return []


def candidate_series_files(dataset, root, partition: str, shape_zyx: tuple[int, int, int]) -> list[list[str]]:
    """Local paths of the patient's single-frame DICOM series with ``shape_zyx`` (slices, rows, columns); the
    patient's files come from the inbox index (a scan when it is stale), so only they are read."""
    import pydicom

    from imaging_pipelines.medical.inbox_index import partition_files

    files = [f for f in partition_files(dataset, root, partition)[0] if f.format == "dicom" and not f.is_label]
    series: dict[str, list[str]] = {}
    for f in files:
        local = f.local_path()
        try:
            ds = pydicom.dcmread(local, stop_before_pixels=True, specific_tags=["SeriesInstanceUID", "Rows", "Columns"])
        except Exception:  # noqa: BLE001 - not a readable DICOM file: not a candidate
            continue
        if (int(getattr(ds, "Rows", 0)), int(getattr(ds, "Columns", 0))) == tuple(shape_zyx[1:]):
            series.setdefault(str(ds.SeriesInstanceUID), []).append(local)
    return [paths for paths in series.values() if len(paths) == shape_zyx[0]]
