"""Registration stage: each selected preprocessed image aligned to the catalog's atlas (or, longitudinally,
to the patient's first scan), with the atlas brain mask warped into subject space.

Store layout: ``<image>`` (the subject image, with label ``brain_mask`` when an atlas mask was warped),
``<image>_aligned`` (the subject resampled onto the target grid), ``fields/<image>`` (displacement field
on the target grid, (z, y, x, 3) LPS mm, ``target point + d = subject point``) and
``transforms/<image>`` (the SimpleITK transform file as bytes).
"""

from __future__ import annotations

import time

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.medical.io.ome_zarr import read_volume_store, write_volume_store
from imaging_pipelines.core.stage_result import PREPROCESSED, REGISTERED, CheckOutcome, StageResult, image_modality, stage_store
from imaging_pipelines.medical.register.atlas import load_atlas
from imaging_pipelines.medical.stages.quality_checks import BRAIN_MASK_CHECK, mask_checks

FOLDING_LIMIT = 0.01  # share of voxels with det(J) <= 0 above which a registration is flagged
QUALITY_KEYS = ("ncc_before", "ncc_after", "mi_before", "mi_after", "jacobian_min", "jacobian_max",
                "folding_fraction", "runtime_s")


def registration_targets(dataset: DatasetConfig, images: dict) -> tuple[object | None, object | None, list[str], list[str]]:
    """(fixed image, fixed mask, names of moving images, notes) for the dataset's registration target."""
    cfg = dataset.registration
    selected = [n for n, v in images.items() if image_modality(v.attributes) in {m.upper() for m in cfg.modalities}]
    notes = [f"{n}: modality not in registration.modalities {cfg.modalities}" for n in images if n not in selected]
    if cfg.target == "atlas":
        from imaging_pipelines.config.atlases import available_atlases

        atlas_image, atlas_mask = load_atlas(available_atlases()[cfg.atlas])
        return atlas_image, atlas_mask, selected, notes
    if cfg.target == "longitudinal" and selected:
        notes.append(f"longitudinal target: {selected[0]} (the patient's first selected scan)")
        return images[selected[0]], None, selected[1:], notes
    return None, None, [], notes + ["registration target is 'none'"]


def _transform_bytes(transform) -> np.ndarray:
    from imaging_pipelines.medical.register.transform_io import transform_to_bytes

    return np.frombuffer(transform_to_bytes(transform), dtype=np.uint8)


def affine_then_learned(fixed, moving, model):
    """Affine alignment (SimpleITK) then the learned deformable model on the fixed grid; one composite result."""
    import SimpleITK as sitk

    from imaging_pipelines.medical.register.api import register
    from imaging_pipelines.medical.register.learned import register_learned
    from imaging_pipelines.medical.register.warp import displacement_field

    affine = register(fixed, moving, "affine")
    learned = register_learned(fixed, affine.warped, model)
    composite = sitk.CompositeTransform(3)
    composite.AddTransform(affine.transform)
    composite.AddTransform(learned.transform)  # applied first: fixed -> affinely aligned -> moving
    learned.transform = composite
    learned.displacement = displacement_field(composite, fixed)  # the whole mapping, affine included
    learned.stages = affine.stages + learned.stages
    learned.metrics["ncc_before"], learned.metrics["mi_before"] = affine.metrics["ncc_before"], affine.metrics["mi_before"]
    learned.metrics["runtime_s"] += affine.metrics["runtime_s"]
    return learned


def register_partition(dataset: DatasetConfig, partition: str, root: UPath | str) -> StageResult:
    """Register the partition's preprocessed images; write the registered store."""
    from imaging_pipelines.medical.register.api import register
    from imaging_pipelines.medical.register.atlas import Atlas, brain_mask_from_atlas

    start = time.perf_counter()
    cfg = dataset.registration
    images = read_volume_store(stage_store(root, dataset.id, PREPROCESSED, partition))
    fixed, fixed_mask, moving_names, notes = registration_targets(dataset, images)
    learned_model = None
    if cfg.method == "learned" and moving_names:
        from imaging_pipelines.medical.stages.registration_model import load_current_model

        learned_model = load_current_model(root, dataset.id)
    out, labels, arrays, rows = {}, {}, {}, []
    for name in moving_names:
        moving = images[name]
        if cfg.method == "learned":
            result = affine_then_learned(fixed, moving, learned_model)
        else:
            result = register(fixed, moving, cfg.method)
        out[name] = moving
        out[f"{name}_aligned"] = result.warped
        if result.displacement is not None:
            arrays[f"fields/{name}"] = (result.displacement.astype(np.float32),
                                        {"convention": "target point + d = subject point; LPS mm (x, y, z)"})
        if result.transform is not None:
            arrays[f"transforms/{name}"] = (_transform_bytes(result.transform), {"format": "SimpleITK .h5"})
        if fixed_mask is not None and cfg.brain_mask:
            mask, _ = brain_mask_from_atlas(moving, Atlas(image=fixed, mask=fixed_mask), method="affine")
            labels[name] = {"brain_mask": mask}
        rows.append({"image": name, "method": result.method, "stages": "+".join(result.stages),
                     **{k: round(float(result.metrics[k]), 5) for k in QUALITY_KEYS if k in result.metrics}})
    path = stage_store(root, dataset.id, REGISTERED, partition)
    write_volume_store(path, out, {"dataset": dataset.id, "partition": partition, "stage": REGISTERED,
                                   "target": cfg.target, "atlas": cfg.atlas, "method": cfg.method},
                       labels=labels, arrays=arrays)
    checks = {**registration_checks(rows), **mask_checks(labels, "brain_mask", BRAIN_MASK_CHECK)}
    return StageResult(str(path), list(out), rows, notes, checks, time.perf_counter() - start)


def registration_checks(rows: list[dict]) -> dict[str, CheckOutcome]:
    folded = [r["image"] for r in rows if r.get("folding_fraction", 0.0) >= FOLDING_LIMIT]
    # mutual information: the measure that holds across contrasts (a T2 scan against a T1 atlas)
    worse = [r["image"] for r in rows if "mi_after" in r and r["mi_after"] < r["mi_before"]]
    return {
        "folding_below_1_percent": CheckOutcome(
            not folded, "folding fraction (det J <= 0) below 1 %" if not folded else f"folding >= 1 % in {', '.join(folded)}",
            {"max_folding_fraction": max((r.get("folding_fraction", 0.0) for r in rows), default=0.0)},
        ),
        "similarity_improved": CheckOutcome(
            not worse, "mutual information with the target improved" if not worse
            else f"mutual information got worse for {', '.join(worse)}",
            {"images_checked": len(rows)},
        ),
    }
