"""Medical preprocessing: masks, N4 bias correction, reorientation and resampling, intensity normalisation,
denoising, averaging of repeated acquisitions, and YAML recipes that chain them.

Every function takes a :class:`~imaging_pipelines.volume.Volume` and returns a new one (geometry kept or
explicitly changed), most with a small report dataclass of plain-Python metrics. No dagster here.
"""

from imaging_pipelines.preprocess.averaging import AveragingReport, average_acquisitions, psnr
from imaging_pipelines.preprocess.denoise import DENOISE_METHODS, DenoiseReport, denoise
from imaging_pipelines.preprocess.masks import otsu_foreground
from imaging_pipelines.preprocess.n4 import N4Report, n4_bias_correction
from imaging_pipelines.preprocess.normalize import NormalizeReport, hu_window, percentile_clip, zscore
from imaging_pipelines.preprocess.recipe import (
    STEP_MODELS,
    Recipe,
    RecipeResult,
    StepReport,
    apply_recipe,
    available_recipes,
    load_recipe,
    recipe_by_name,
    recipe_dir,
)
from imaging_pipelines.preprocess.resample import reorient, resample_like, resample_to_spacing

__all__ = [
    "DENOISE_METHODS",
    "STEP_MODELS",
    "AveragingReport",
    "DenoiseReport",
    "N4Report",
    "NormalizeReport",
    "Recipe",
    "RecipeResult",
    "StepReport",
    "apply_recipe",
    "available_recipes",
    "average_acquisitions",
    "denoise",
    "hu_window",
    "load_recipe",
    "n4_bias_correction",
    "otsu_foreground",
    "percentile_clip",
    "psnr",
    "recipe_by_name",
    "recipe_dir",
    "reorient",
    "resample_like",
    "resample_to_spacing",
    "zscore",
]
