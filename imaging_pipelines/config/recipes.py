"""Preprocessing recipes: named, validated lists of steps, stored as YAML in ``data_catalog/recipes/``.

A recipe file::

    name: brain_mr
    description: N4, LPS, 1 mm isotropic, z-score in the brain, light denoising
    modality: MR            # MR | CT | any
    steps:
      - n4: {shrink_factor: 4, iterations: [50, 50, 50, 50]}
      - reorient: {orientation: LPS}
      - resample: {spacing_mm: [1.0, 1.0, 1.0], interpolator: linear, antialias: true}
      - zscore: {}
      - denoise: {method: curvature_anisotropic, iterations: 3, conductance: 2.0}

Filter steps (:mod:`imaging_pipelines.medical.preprocess.filters`): ``gradient_magnitude: {sigma_mm}``,
``sigmoid: {alpha, beta, output_min, output_max}``, ``morphology: {operation, radius_mm, kernel}``.

Every step is a one-key mapping ``{step_name: {params}}``; the parameters of each step are a pydantic
model (``extra="forbid"``) in :data:`STEP_MODELS`, so unknown steps, unknown parameters and wrong types
are errors. :func:`load_recipe` reports all of them at once as a :class:`CatalogError` with
``(file, "steps.<i>.<step>.<param>", message)`` triples.

:func:`imaging_pipelines.medical.preprocess.recipe.apply_recipe` runs the steps in order. Steps that need a mask (``n4``, and ``zscore`` /
``percentile_clip`` with ``use_mask``) share one: the mask given, or the Otsu foreground of the volume
computed once when first needed; geometry steps (``reorient``, ``resample``) carry the mask along with
nearest-neighbour interpolation so it always lies on the volume's grid.

Time series (4D): ``reorient``, ``resample`` and ``denoise`` run on every time point; ``zscore``,
``percentile_clip`` and ``hu_window`` use statistics pooled over all time points (one 3D mask, computed
on the temporal mean); ``n4`` raises ValueError naming the step.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated, Any, Literal, Union

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    SerializeAsAny,
    ValidationError,
    field_validator,
)

from imaging_pipelines.config.paths import PROJECT_ROOT
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.core.orientation import validate_orientation

RECIPES_ENV = "IMAGING_PIPELINES_RECIPES"

PositiveFloat = Annotated[float, Field(gt=0)]


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------------------- step parameters
class N4Params(_Params):
    """N4 bias-field correction (MR), fitted on the shared mask; see :func:`n4_bias_correction`."""

    shrink_factor: int = Field(4, ge=1, le=16)
    iterations: list[Annotated[int, Field(ge=1)]] = Field(default_factory=lambda: [50, 50, 50, 50], min_length=1)
    convergence: float = Field(1e-3, gt=0)
    spline_order: int = Field(3, ge=1, le=5)


class ReorientParams(_Params):
    """Exact axis permutation/flip; orientation letters = where index axes (i, j, k) point toward."""

    orientation: str = "LPS"

    @field_validator("orientation")
    @classmethod
    def _valid(cls, value: str) -> str:
        return validate_orientation(value)


class ResampleParams(_Params):
    """New voxel size over the same field of view; one number = isotropic."""

    spacing_mm: PositiveFloat | tuple[PositiveFloat, PositiveFloat, PositiveFloat]
    interpolator: Literal["linear", "nearest", "bspline"] = "linear"
    antialias: bool = True


class ZScoreParams(_Params):
    """(x - mean) / std with statistics inside the mask (``use_mask``) or over the whole volume."""

    use_mask: bool = True


class PercentileClipParams(_Params):
    """Clip to in-mask percentiles and rescale; ``rescale_to: null`` only clips."""

    low: float = Field(0.5, ge=0, le=100)
    high: float = Field(99.5, ge=0, le=100)
    rescale_to: tuple[float, float] | None = (0.0, 1.0)
    use_mask: bool = True


class HUWindowParams(_Params):
    """CT window in Hounsfield units, rescaled to ``rescale_to`` (``null`` = keep HU)."""

    low: float = -1000.0
    high: float = 1000.0
    rescale_to: tuple[float, float] | None = (0.0, 1.0)


class CurvatureAnisotropicParams(_Params):
    method: Literal["curvature_anisotropic"]
    time_step: PositiveFloat | None = None
    iterations: int = Field(5, ge=1, le=100)
    conductance: PositiveFloat = 2.0


class BilateralParams(_Params):
    method: Literal["bilateral"]
    domain_sigma_mm: PositiveFloat = 1.0
    range_sigma: PositiveFloat | None = None


class MedianParams(_Params):
    method: Literal["median"]
    radius: int = Field(1, ge=1, le=10)


class NLMeansParams(_Params):
    method: Literal["nl_means"]
    patch_size: int = Field(3, ge=1, le=15)
    patch_distance: int = Field(3, ge=1, le=25)
    h_factor: PositiveFloat = 0.8
    fast_mode: bool = True


class TVChambolleParams(_Params):
    method: Literal["tv_chambolle"]
    weight: PositiveFloat | None = None
    max_num_iter: int = Field(100, ge=1)


class WaveletParams(_Params):
    method: Literal["wavelet"]
    wavelet: str = "db2"
    mode: Literal["soft", "hard"] = "soft"


DenoiseMethodParams = Annotated[
    Union[
        CurvatureAnisotropicParams, BilateralParams, MedianParams, NLMeansParams, TVChambolleParams, WaveletParams
    ],
    Field(discriminator="method"),
]


class DenoiseParams(RootModel[DenoiseMethodParams]):
    """``method`` (one of :data:`imaging_pipelines.medical.preprocess.denoise.DENOISE_METHODS`) plus that method's parameters."""


class GradientMagnitudeParams(_Params):
    """|grad I| in intensity units per mm; ``sigma_mm`` (mm) smooths with a Gaussian derivative first."""

    sigma_mm: PositiveFloat | None = None


class SigmoidParams(_Params):
    """Sigmoid contrast ``min + (max - min) / (1 + exp(-(I - beta) / alpha))``; alpha, beta in intensity units."""

    alpha: float
    beta: float
    output_min: float = 0.0
    output_max: float = 1.0

    @field_validator("alpha")
    @classmethod
    def _nonzero(cls, value: float) -> float:
        if value == 0:
            raise ValueError("alpha must not be 0 (negative inverts the mapping)")
        return value


class MorphologyParams(_Params):
    """Grey-level open / close / white_tophat / black_tophat, structuring element of ``radius_mm`` (mm)."""

    operation: Literal["open", "close", "white_tophat", "black_tophat"]
    radius_mm: PositiveFloat
    kernel: Literal["ball", "box"] = "ball"


STEP_MODELS: dict[str, type[BaseModel]] = {
    "n4": N4Params,
    "reorient": ReorientParams,
    "resample": ResampleParams,
    "zscore": ZScoreParams,
    "percentile_clip": PercentileClipParams,
    "hu_window": HUWindowParams,
    "denoise": DenoiseParams,
    "gradient_magnitude": GradientMagnitudeParams,
    "sigmoid": SigmoidParams,
    "morphology": MorphologyParams,
}


# ----------------------------------------------------------------------------------- the recipe
class RecipeStep(BaseModel):
    """One validated step: its name (a key of :data:`STEP_MODELS`) and its parameter model."""

    model_config = ConfigDict(extra="forbid")

    name: str
    params: SerializeAsAny[BaseModel]

    def param_dict(self) -> dict[str, Any]:
        """Parameters as plain Python (defaults filled in), e.g. for run metadata."""
        return self.params.model_dump(mode="json")


class Recipe(BaseModel):
    """A validated preprocessing recipe. Build it with :func:`load_recipe` or :func:`parse_recipe`."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1)
    description: str = ""
    modality: Literal["MR", "CT", "any"] = "any"
    steps: list[RecipeStep] = Field(default_factory=list)
    source_file: str = Field("", exclude=True)

    @field_validator("steps", mode="before")
    @classmethod
    def _parse_steps(cls, value: Any) -> Any:
        """Accept the YAML form (a list of ``{step_name: {params}}``) as well as RecipeStep objects."""
        steps, errors = parse_steps(value)
        if errors:
            raise ValueError("; ".join(f"{where}: {msg}" for where, msg in errors))
        return steps

    def to_mapping(self) -> dict[str, Any]:
        """The YAML form of the recipe (parameters with defaults filled in)."""
        return {
            "name": self.name,
            "description": self.description,
            "modality": self.modality,
            "steps": [{s.name: s.param_dict()} for s in self.steps],
        }


def _loc(parts: tuple[Any, ...]) -> str:
    return ".".join(str(p) for p in parts)


def parse_steps(raw: Any) -> tuple[list[RecipeStep], list[tuple[str, str]]]:
    """Validate the YAML ``steps`` list; returns (steps, errors as ("steps.<i>.<step>.<param>", message))."""
    if raw is None:
        return [], []
    if not isinstance(raw, list):
        return [], [("steps", "must be a list of one-key mappings {step_name: {params}}")]
    steps: list[RecipeStep] = []
    errors: list[tuple[str, str]] = []
    for i, item in enumerate(raw):
        if isinstance(item, RecipeStep):
            steps.append(item)
            continue
        if not isinstance(item, dict) or len(item) != 1:
            errors.append((f"steps.{i}", "must be a one-key mapping {step_name: {params}}"))
            continue
        name, params = next(iter(item.items()))
        if name not in STEP_MODELS:
            errors.append((f"steps.{i}.{name}", f"unknown step {name!r}; known: {sorted(STEP_MODELS)}"))
            continue
        try:
            model = STEP_MODELS[name].model_validate(params if params is not None else {})
        except ValidationError as exc:
            for e in exc.errors():
                loc = tuple(e["loc"])
                if name == "denoise" and loc and isinstance(params, dict) and loc[0] == params.get("method"):
                    loc = loc[1:]  # drop the discriminator tag pydantic puts first
                if e["type"] in ("union_tag_invalid", "union_tag_not_found"):
                    loc = ("method",)
                errors.append((_loc((f"steps.{i}.{name}", *loc)), e["msg"]))
            continue
        steps.append(RecipeStep(name=name, params=model))
    return steps, errors


def parse_recipe(raw: Any, source: str = "<recipe>") -> Recipe:
    """Validate a recipe mapping (the parsed YAML); raises :class:`CatalogError` listing every problem."""
    if not isinstance(raw, dict):
        raise CatalogError([(source, "-", "a recipe must be a mapping with name, description, modality, steps")])
    errors: list[tuple[str, str, str]] = []
    steps, step_errors = parse_steps(raw.get("steps"))
    errors += [(source, where, msg) for where, msg in step_errors]
    try:
        top = Recipe.model_validate({**{k: v for k, v in raw.items() if k != "steps"}, "source_file": source})
    except ValidationError as exc:
        errors += [(source, _loc(tuple(e["loc"])) or "-", e["msg"]) for e in exc.errors()]
        top = None
    if errors or top is None:
        raise CatalogError(errors)
    return top.model_copy(update={"steps": steps})


def load_recipe(path: str | os.PathLike) -> Recipe:
    """Read and validate a recipe YAML file; raises :class:`CatalogError` with (file, field, message) triples."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise CatalogError([(str(path), "-", f"cannot read recipe: {exc}")]) from None
    except yaml.YAMLError as exc:
        raise CatalogError([(str(path), "-", f"not valid YAML: {exc}")]) from None
    recipe = parse_recipe(raw, str(path))
    if recipe.name != path.stem:
        raise CatalogError([(str(path), "name", f"recipe name {recipe.name!r} must equal the file name {path.stem!r}")])
    return recipe


def recipe_dir() -> Path:
    """Folder of the recipe files: ``$IMAGING_PIPELINES_RECIPES`` or ``<project>/data_catalog/recipes``."""
    env = os.environ.get(RECIPES_ENV)
    return Path(env).expanduser() if env else PROJECT_ROOT / "data_catalog" / "recipes"


def available_recipes() -> dict[str, Path]:
    """Recipe name (file stem) -> file, for every ``*.yaml`` / ``*.yml`` in :func:`recipe_dir`."""
    folder = recipe_dir()
    if not folder.is_dir():
        return {}
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix in (".yaml", ".yml")}


def recipe_by_name(name: str) -> Recipe:
    """Load the recipe called ``name`` from :func:`recipe_dir`; raises :class:`CatalogError` if there is none."""
    files = available_recipes()
    if name not in files:
        raise CatalogError([(str(recipe_dir()), "-", f"no recipe named {name!r}; available: {sorted(files)}")])
    return load_recipe(files[name])
