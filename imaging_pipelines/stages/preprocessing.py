"""Preprocessing stage: the dataset's recipe applied to every ingested image of a patient.

Images whose modality the recipe does not cover, and time series, are passed over with a note. The
output store holds the preprocessed images with their foreground mask as an OME-Zarr label image.
"""

from __future__ import annotations

import time

from upath import UPath

from imaging_pipelines.io.ome_zarr import read_volume_store, write_volume_store
from imaging_pipelines.stages.common import INGESTED, PREPROCESSED, CheckOutcome, StageResult, image_modality, stage_store


CV_TOLERANCE = 0.01  # relative; the in-mask CV also holds tissue contrast, which N4 must leave alone


def recipe_applies(recipe, attributes: dict) -> bool:
    return recipe.modality.upper() in ("ANY", image_modality(attributes))


def preprocess_partition(dataset, partition: str, root: UPath | str) -> StageResult:
    """Apply ``dataset.preprocessing_recipe`` to the partition's ingested images; write the preprocessed store."""
    from imaging_pipelines.preprocess.recipe import apply_recipe, available_recipes, load_recipe

    start = time.perf_counter()
    recipe = load_recipe(available_recipes()[dataset.preprocessing_recipe])
    images = read_volume_store(stage_store(root, dataset.id, INGESTED, partition))
    out, labels, rows, notes = {}, {}, [], []
    cv_pairs: list[tuple[str, float, float]] = []
    for name, volume in images.items():
        if not recipe_applies(recipe, volume.attributes):
            notes.append(f"{name}: {image_modality(volume.attributes) or 'unknown'} image not covered by recipe "
                         f"{recipe.name} ({recipe.modality})")
            continue
        if volume.is_timeseries:
            notes.append(f"{name}: time series ({volume.n_timepoints} volumes) not preprocessed")
            continue
        result = apply_recipe(volume, recipe)
        out[name] = result.volume
        if result.mask is not None:
            labels[name] = {"foreground": result.mask}
        for step in result.steps:
            rows.append({"image": name, "step": step.name, "runtime_s": round(step.runtime_s, 3), **step.metrics})
            if step.name == "n4" and "cv_before" in step.metrics:
                cv_pairs.append((name, float(step.metrics["cv_before"]), float(step.metrics["cv_after"])))
    path = stage_store(root, dataset.id, PREPROCESSED, partition)
    write_volume_store(path, out, {"dataset": dataset.id, "partition": partition, "stage": PREPROCESSED,
                                   "recipe": recipe.name}, labels=labels)
    worse = [n for n, before, after in cv_pairs if after > before * (1.0 + CV_TOLERANCE)]
    checks = {
        "n4_cv_not_increased": CheckOutcome(
            passed=not worse,
            description=("in-mask coefficient of variation did not increase under N4 (1 % tolerance)"
                         if not worse else f"N4 increased the in-mask CV of {', '.join(worse)}"),
            metadata={"images_checked": len(cv_pairs)},
        )
    }
    return StageResult(str(path), list(out), rows, notes, checks, time.perf_counter() - start)
