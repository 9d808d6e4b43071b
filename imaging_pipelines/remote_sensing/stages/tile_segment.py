"""Per-tile segmentation: the 2D U-Net (sliding window with overlap over the whole tile window, so tile
borders see their neighbours' context) and the classical baseline (Otsu on the index of each class).

Store ``<root>/<dataset>/tile_segmentation/<key>.zarr``: ``raster`` = one band ``class`` (uint8 class
values, 0 = background) on the tile window; layers ``baseline``, ``probability`` (model's softmax x 255,
``(class, y, x)`` uint8 in the order of the ``class_values`` attribute) and, when labelled, ``reference``. The
tile's figures (class fractions, IoU per class on the core) are stored in the ``raster`` attributes.
Until a model exists (or with ``method: baseline``) the baseline is the segmentation.
"""

from __future__ import annotations

import time

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import store_exists
from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.stage_result import CheckOutcome, StageResult, stage_store
from imaging_pipelines.remote_sensing.stages.tile_model import load_tile_model, model_inputs, tile_split
from imaging_pipelines.remote_sensing.stages.tile_ingest import PREPARED, TILE_SEGMENTATION


def segment_tile(dataset: DatasetConfig, partition: str, root: UPath | str, device: str = "auto") -> StageResult:
    from imaging_pipelines.remote_sensing.baseline import otsu_baseline
    from imaging_pipelines.remote_sensing.vectorize import class_iou
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_info, read_tile_layers, read_tile_zarr, write_tile_zarr
    from imaging_pipelines.models.device import pick_device

    start = time.perf_counter()
    seg = dataset.remote_sensing.segmentation
    source = stage_store(root, dataset.id, PREPARED, partition)
    if not store_exists(source):
        raise FileNotFoundError(f"{source}: no analysis-ready tile (materialise {PREPARED} first)")
    composite = read_tile_zarr(source)
    scene, tile = read_tile_info(source)
    stored = read_tile_layers(source, "reference", "per_date")
    reference = stored.get("reference")
    baseline = otsu_baseline(composite, seg.classes, seg.baselines)
    method, version, notes = "baseline", None, []
    prediction, probability, class_values = baseline, None, None
    if seg.method == "unet":
        try:
            model, normalisation, class_values, meta = load_tile_model(root, dataset.id, str(pick_device(device)))
        except FileNotFoundError as exc:
            notes.append(f"no trained model yet ({exc}); the baseline is the segmentation")
        else:
            from imaging_pipelines.remote_sensing.unet2d import predict_unet2d

            prediction, probability = predict_unet2d(
                model, normalisation, class_values, model_inputs(dataset, composite, stored.get("per_date")),
                seg.training.patch_size,
                seg.overlap, str(pick_device(device)), return_probabilities=True, tta=seg.test_time_augmentation)
            method, version = "unet2d", meta.get("version")
    prediction = np.where(np.isfinite(composite.array).all(axis=0), prediction, 0).astype(np.uint8)
    rows_core, cols_core = tile.core_in_window.slices
    core = prediction[rows_core, cols_core]
    figures = {"method": method, "model_version": version, "split": tile_split(dataset, partition),
               "class_fractions": {n: round(float((core == v).mean()), 4) for n, v in seg.classes.items()}}
    checks = {}
    if seg.labels.source != "none" and reference is None:
        checks["mask_not_empty_where_reference_is"] = CheckOutcome(True, "no reference labels on this tile", {})
    if reference is not None:
        ref_core, valid = reference[rows_core, cols_core], np.isfinite(composite.array[:, rows_core, cols_core]).all(axis=0)
        figures["iou"] = {k: round(v, 4) for k, v in class_iou(core, ref_core, seg.classes, valid).items()}
        figures["baseline_iou"] = {k: round(v, 4) for k, v in
                                   class_iou(baseline[rows_core, cols_core], ref_core, seg.classes, valid).items()}
        checks["mask_not_empty_where_reference_is"] = CheckOutcome(
            not (ref_core.any() and not core.any()), "classes in the reference are found in the tile core",
            {"reference_pixels": int((ref_core > 0).sum()), "predicted_pixels": int((core > 0).sum())})
    layers = {"baseline": baseline.astype(np.uint8)}
    if probability is not None:  # softmax x 255, for blending overlaps when the scene is stitched
        layers["probability"] = (("class", "y", "x"), np.rint(probability * 255).astype(np.uint8))
    if reference is not None:
        layers["reference"] = reference
    out = composite.with_array(prediction[np.newaxis], nodata=None, band_names=["class"])
    store = stage_store(root, dataset.id, TILE_SEGMENTATION, partition)
    attrs = {"figures": figures, "class_values": class_values}
    write_tile_zarr(out, store, tile=tile, scene=scene, layers=layers, attrs=attrs)
    rows = [{"class": n, "value": v, "core_fraction": figures["class_fractions"][n],
             **({"iou": figures["iou"].get(n), "baseline_iou": figures["baseline_iou"].get(n)} if reference is not None else {})}
            for n, v in seg.classes.items()]
    return StageResult(str(store), images=["class"], rows=rows, notes=notes, checks=checks,
                       runtime_s=time.perf_counter() - start, extra=figures)
