"""Preprocessing recipes: the shipped YAML files, validation errors with file and field, and apply_recipe."""

from __future__ import annotations

import textwrap

import numpy as np
import pytest

from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.medical.preprocess.masks import otsu_foreground
from imaging_pipelines.config.recipes import (
    STEP_MODELS,
    Recipe,
    available_recipes,
    load_recipe,
    recipe_by_name,
    recipe_dir,
)
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.preprocess.recipe import apply_recipe
from tests.conftest import REPO


def head_phantom(shape=(30, 34, 38), spacing=(1.3, 1.2, 1.5), base=100.0, background=5.0, seed=0) -> Volume:
    """An ellipsoid 'head' with an inner blob, stored RAS (direction diag(-1, -1, 1)), with a bias ramp and noise."""
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [(n - 1) / 2 for n in shape]
    r = ((z - c[0]) / (0.4 * shape[0])) ** 2 + ((y - c[1]) / (0.4 * shape[1])) ** 2 + ((x - c[2]) / (0.4 * shape[2])) ** 2
    array = np.where(r < 1, base, background) + np.where(r < 0.2, 0.5 * base, 0.0)
    array *= np.linspace(0.8, 1.2, shape[2], dtype=np.float32)[None, None, :]
    array += np.random.default_rng(seed).normal(0, 0.03 * base, shape)
    return Volume(array.astype(np.float32), spacing=spacing, origin=(40.0, 30.0, -20.0), direction=np.diag([-1.0, -1.0, 1.0]))


def write(tmp_path, name: str, body: str):
    path = tmp_path / f"{name}.yaml"
    path.write_text(textwrap.dedent(body))
    return path


# ---------------------------------------------------------------------------------------------- loading
def test_shipped_recipes_load_and_match_the_registry():
    files = available_recipes()
    assert recipe_dir() == REPO / "data_catalog" / "recipes"
    assert {"brain_mr", "ct_default", "none"} <= set(files)
    brain = load_recipe(files["brain_mr"])
    assert brain.modality == "MR"
    assert [s.name for s in brain.steps] == ["n4", "reorient", "resample", "zscore", "denoise"]
    assert brain.steps[0].param_dict()["iterations"] == [50, 50, 50, 50]
    assert brain.steps[0].param_dict()["shrink_factor"] == 4
    ct = recipe_by_name("ct_default")
    assert [s.name for s in ct.steps] == ["reorient", "resample", "hu_window", "denoise"]
    assert ct.steps[3].param_dict() == {"method": "median", "radius": 1}
    assert recipe_by_name("none").steps == []
    assert Recipe.model_validate(brain.to_mapping()).to_mapping() == brain.to_mapping()


def test_every_error_is_reported_with_file_and_field(tmp_path):
    path = write(
        tmp_path,
        "bad",
        """\
        name: bad
        modality: PET
        steps:
          - n4: {shrink_factor: four, iterations: [50, 50]}
          - sharpen: {amount: 2}
          - resample: {spacing_mm: 1.0, interpolater: linear}
          - denoise: {method: median, radius: 1, sigma: 3}
          - denoise: {method: fourier}
          - zscore: {use_mask: true}
        """,
    )
    with pytest.raises(CatalogError) as info:
        load_recipe(path)
    errors = {(field, msg.split(" ")[0]) for file, field, msg in info.value.errors}
    assert all(file == str(path) for file, _, _ in info.value.errors)
    fields = {field for field, _ in errors}
    assert {
        "modality",
        "steps.0.n4.shrink_factor",
        "steps.1.sharpen",
        "steps.2.resample.interpolater",
        "steps.3.denoise.sigma",
        "steps.4.denoise.method",
    } == fields
    messages = {field: msg for _, field, msg in info.value.errors}
    assert "unknown step 'sharpen'" in messages["steps.1.sharpen"]
    assert "Extra inputs" in messages["steps.2.resample.interpolater"]
    assert "integer" in messages["steps.0.n4.shrink_factor"]
    assert "fourier" in messages["steps.4.denoise.method"]
    assert str(path) in str(info.value)


def test_structural_errors_and_name_mismatch(tmp_path):
    with pytest.raises(CatalogError) as info:
        load_recipe(write(tmp_path, "shape", "name: shape\nsteps:\n  - n4: {}\n    reorient: {}\n  - just_a_string\n"))
    assert [e[1] for e in info.value.errors] == ["steps.0", "steps.1"]
    with pytest.raises(CatalogError) as info:
        load_recipe(write(tmp_path, "other", "name: brain_mr\nsteps: []\n"))
    assert info.value.errors[0][1] == "name"
    with pytest.raises(CatalogError) as info:
        load_recipe(write(tmp_path, "broken", "name: [unclosed\n"))
    assert "YAML" in info.value.errors[0][2]


def test_recipe_dir_is_overridable(tmp_path, monkeypatch):
    write(tmp_path, "mine", "name: mine\nmodality: CT\nsteps:\n  - hu_window: {low: -200, high: 300}\n")
    monkeypatch.setenv("IMAGING_PIPELINES_RECIPES", str(tmp_path))
    assert recipe_dir() == tmp_path and set(available_recipes()) == {"mine"}
    assert recipe_by_name("mine").steps[0].param_dict()["high"] == 300
    with pytest.raises(CatalogError, match="no recipe named 'brain_mr'"):
        recipe_by_name("brain_mr")


def test_step_models_forbid_extra_parameters():
    for name, model in STEP_MODELS.items():
        if name == "denoise":
            continue
        assert model.model_config.get("extra") == "forbid", name


# ---------------------------------------------------------------------------------------------- applying
def test_apply_brain_mr_runs_every_step_with_reports():
    volume = head_phantom()
    result = apply_recipe(volume, recipe_by_name("brain_mr"))

    assert [s.name for s in result.steps] == ["n4", "reorient", "resample", "zscore", "denoise"]
    out = result.volume
    assert out.orientation_code() == "LPS" and np.allclose(out.direction, np.eye(3))
    assert out.spacing == (1.0, 1.0, 1.0) and out.array.dtype == np.float32
    assert result.mask is not None and result.mask.same_geometry(out)
    inside = out.array[result.mask.array > 0]
    assert abs(inside.mean()) < 0.1 and 0.8 < inside.std() < 1.05  # z-scored, then lightly smoothed
    n4 = result.steps[0].metrics
    assert n4["cv_after"] < n4["cv_before"]
    assert result.steps[1].metrics == {"orientation_before": "RAS", "orientation_after": "LPS"}
    assert result.steps[4].metrics["sigma_after"] < result.steps[4].metrics["sigma_before"]
    for step in result.steps:
        assert step.runtime_s >= 0 and step.params
        assert all(isinstance(v, (int, float, str)) for v in step.metrics.values()), step


def test_apply_ct_default_runs_every_step_with_reports():
    ct = head_phantom(base=400.0, background=-1000.0)
    ct = ct.with_array(np.where(ct.array > 300, 1500.0, ct.array).astype(np.float32))  # some bone above the window
    result = apply_recipe(ct, recipe_by_name("ct_default"))

    assert [s.name for s in result.steps] == ["reorient", "resample", "hu_window", "denoise"]
    assert result.mask is None  # no step needs one
    out = result.volume
    assert out.spacing == (1.5, 1.5, 1.5) and out.orientation_code() == "LPS"
    assert out.array.min() >= 0.0 and out.array.max() <= 1.0
    assert result.steps[2].metrics["output_max"] == 1.0
    assert result.steps[1].metrics["spacing_after_mm"] == "1.5,1.5,1.5"


def test_given_mask_is_carried_onto_the_new_grid():
    volume = head_phantom()
    mask = otsu_foreground(volume)
    recipe = Recipe.model_validate(
        {"name": "t", "steps": [{"reorient": {}}, {"resample": {"spacing_mm": 2.0}}, {"zscore": {}}]}
    )
    result = apply_recipe(volume, recipe, mask=mask)
    assert result.mask.same_geometry(result.volume) and result.mask.array.dtype == np.uint8
    assert set(np.unique(result.mask.array)) == {0, 1}
    inside = result.volume.array[result.mask.array > 0]
    assert inside.mean() == pytest.approx(0.0, abs=1e-3) and inside.std() == pytest.approx(1.0, abs=1e-3)
    with pytest.raises(ValueError, match="not on the volume's grid"):
        apply_recipe(volume, recipe, mask=result.mask)


def test_time_series_policy():
    frames = np.stack([head_phantom(seed=s).array for s in range(3)])
    series = Volume(frames, spacing=(1.3, 1.2, 1.5), direction=np.diag([-1.0, -1.0, 1.0]), time_step=2.0)
    result = apply_recipe(series, recipe_by_name("ct_default"))
    assert result.volume.is_timeseries and result.volume.n_timepoints == 3 and result.volume.time_step == 2.0
    with pytest.raises(ValueError, match=r"steps\.0\.n4.*4D"):
        apply_recipe(series, recipe_by_name("brain_mr"))
