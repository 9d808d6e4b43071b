"""Running a preprocessing recipe (:mod:`imaging_pipelines.config.recipes`) on a Volume, step by step.

Steps that need a mask (``n4``, and ``zscore`` / ``percentile_clip`` with ``use_mask``) share one: the mask
given, or the Otsu foreground of the volume computed once when first needed; geometry steps (``reorient``,
``resample``) carry the mask along with nearest-neighbour interpolation so it stays on the volume's grid
(LPS mm geometry is kept by every step).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaging_pipelines.config.recipes import Recipe, RecipeStep
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.preprocess.denoise import denoise
from imaging_pipelines.medical.preprocess.filters import gradient_magnitude, morphology, sigmoid_contrast
from imaging_pipelines.medical.preprocess.masks import otsu_foreground
from imaging_pipelines.medical.preprocess.n4 import n4_bias_correction
from imaging_pipelines.medical.preprocess.normalize import hu_window, percentile_clip, zscore
from imaging_pipelines.medical.preprocess.resample import reorient, resample_like, resample_to_spacing


@dataclass(frozen=True)
class StepReport:
    """What one step did: its parameters, plain-Python metrics and wall time (s)."""

    name: str
    params: dict[str, Any]
    metrics: dict[str, float | int | str]
    runtime_s: float


@dataclass(frozen=True)
class RecipeResult:
    """The preprocessed volume, the mask on its grid (None if no step used one and none was given), step reports."""

    volume: Volume
    mask: Volume | None
    steps: list[StepReport] = field(default_factory=list)


def _needs_mask(step: RecipeStep) -> bool:
    return step.name == "n4" or bool(getattr(step.params, "use_mask", False))


def _plain(value: Any) -> float | int | str:
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float, str)):
        return value
    return str(value)


def _metrics(report: Any, skip: tuple[str, ...] = ()) -> dict[str, float | int | str]:
    return {k: _plain(v) for k, v in vars(report).items() if k not in skip}


def _run_step(step: RecipeStep, volume: Volume, mask: Volume | None) -> tuple[Volume, Volume | None, dict]:
    """One step on (volume, mask); returns the new volume, the mask on its grid, and the step metrics."""
    p = step.params
    if step.name == "n4":
        out, report = n4_bias_correction(
            volume, mask, shrink_factor=p.shrink_factor, iterations=p.iterations, convergence=p.convergence,
            spline_order=p.spline_order,
        )
        return out, mask, _metrics(report)
    if step.name == "reorient":
        before = volume.orientation_code()
        out = reorient(volume, p.orientation)
        new_mask = reorient(mask, p.orientation) if mask is not None else None
        return out, new_mask, {"orientation_before": before, "orientation_after": out.orientation_code()}
    if step.name == "resample":
        out = resample_to_spacing(volume, p.spacing_mm, p.interpolator, p.antialias)
        new_mask = resample_like(mask, out, interpolator="nearest") if mask is not None else None
        return out, new_mask, {
            "shape_before": "x".join(map(str, volume.spatial_shape)),
            "shape_after": "x".join(map(str, out.spatial_shape)),
            "spacing_before_mm": ",".join(f"{s:g}" for s in volume.spacing),
            "spacing_after_mm": ",".join(f"{s:g}" for s in out.spacing),
        }
    if step.name == "zscore":
        out, report = zscore(volume, mask if p.use_mask else _whole(volume))
        return out, mask, _metrics(report)
    if step.name == "percentile_clip":
        out, report = percentile_clip(
            volume, mask if p.use_mask else _whole(volume), p.low, p.high, p.rescale_to
        )
        return out, mask, _metrics(report)
    if step.name == "hu_window":
        out, report = hu_window(volume, p.low, p.high, p.rescale_to)
        return out, mask, _metrics(report)
    if step.name == "denoise":
        kwargs = p.root.model_dump(exclude={"method"})
        out, report = denoise(volume, p.root.method, **kwargs)
        return out, mask, _metrics(report, skip=("params",))
    if step.name in ("gradient_magnitude", "sigmoid", "morphology"):
        filters = {"gradient_magnitude": gradient_magnitude, "sigmoid": sigmoid_contrast, "morphology": morphology}
        out = filters[step.name](volume, **p.model_dump())
        return out, mask, {"min_after": float(out.array.min()), "max_after": float(out.array.max())}
    raise ValueError(f"no runner for step {step.name!r}")  # unreachable: STEP_MODELS is checked on load


def _whole(volume: Volume) -> Volume:
    """An all-ones mask on the volume's grid (statistics over every voxel)."""
    return Volume(np.ones(volume.spatial_shape, np.uint8), volume.spacing, volume.origin, volume.direction)


def apply_recipe(volume: Volume, recipe: Recipe, mask: Volume | None = None) -> RecipeResult:
    """Run ``recipe`` on ``volume``; ``mask`` (0/1 Volume on the volume's grid) is used by mask-based steps.

    Errors of a step are re-raised as ValueError naming the step (``steps.<i>.<name>``) and the recipe.
    """
    if mask is not None and not volume.same_geometry(mask):
        raise ValueError(f"recipe {recipe.name!r}: the mask is not on the volume's grid")
    reports: list[StepReport] = []
    for i, step in enumerate(recipe.steps):
        if mask is None and _needs_mask(step):
            mask = otsu_foreground(volume)
        start = time.perf_counter()
        try:
            volume, mask, metrics = _run_step(step, volume, mask)
        except (ValueError, TypeError) as exc:
            raise ValueError(f"recipe {recipe.name!r}, step steps.{i}.{step.name}: {exc}") from exc
        reports.append(StepReport(step.name, step.param_dict(), metrics, time.perf_counter() - start))
    return RecipeResult(volume=volume, mask=mask, steps=reports)
