"""Preprocessing stage: the dataset's recipe applied to every ingested image of a patient.

Images whose modality the recipe does not cover, and time series, are passed over with a note. The
output store holds the preprocessed images with their foreground mask as an OME-Zarr label image.
"""

from __future__ import annotations

import time

from upath import UPath

from imaging_pipelines.medical.io.ome_zarr import read_volume_store, write_volume_store
from imaging_pipelines.core.stage_result import INGESTED, PREPROCESSED, CheckOutcome, StageResult, image_modality, stage_store
from imaging_pipelines.medical.stages.quality_checks import FOREGROUND_MASK_CHECK, mask_checks


CV_TOLERANCE = 0.01  # relative; the in-mask CV also holds tissue contrast, which N4 must leave alone


def recipe_applies(recipe, attributes: dict) -> bool:
    return recipe.modality.upper() in ("ANY", image_modality(attributes))


def uses_mask(step) -> bool:
    """True for a recipe step that works inside the foreground mask (N4, masked normalisations)."""
    return step.name == "n4" or bool(getattr(step.params, "use_mask", False))


def recipe_foreground(volume, recipe):
    """The Otsu foreground mask of ``volume`` when a step of the recipe needs a mask, else None. Computed
    once per image: the stage checks that it is not empty and, when the recipe's first step uses it (the
    volume is then still this one), hands it to the recipe instead of letting the recipe compute it again."""
    from imaging_pipelines.medical.preprocess.masks import otsu_foreground

    return otsu_foreground(volume) if any(uses_mask(s) for s in recipe.steps) else None


def preprocess_partition(dataset, partition: str, root: UPath | str) -> StageResult:
    """Apply ``dataset.preprocessing_recipe`` to the partition's ingested images; write the preprocessed store."""
    from imaging_pipelines.config.recipes import available_recipes, load_recipe
    from imaging_pipelines.medical.preprocess.recipe import apply_recipe

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
        mask = recipe_foreground(volume, recipe)
        if mask is not None and not mask.array.any():
            # kept as it is, with its empty mask: the blocking mask check stops the partition
            out[name], labels[name] = volume, {"foreground": mask}
            notes.append(f"{name}: empty foreground mask (constant image); recipe {recipe.name} not applied")
            continue
        result = apply_recipe(volume, recipe, mask=mask if mask is not None and uses_mask(recipe.steps[0]) else None)
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
        ),
        **mask_checks(labels, "foreground", FOREGROUND_MASK_CHECK),  # blocking: an empty mask stops the partition
    }
    return StageResult(str(path), list(out), rows, notes, checks, time.perf_counter() - start)
