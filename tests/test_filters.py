"""Filter recipe steps with known answers: gradient of a ramp, sigmoid at its centre, top-hat / opening."""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.config.recipes import parse_recipe
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.preprocess.filters import (
    gradient_magnitude,
    morphology,
    radius_in_voxels,
    sigmoid_contrast,
)
from imaging_pipelines.medical.preprocess.recipe import apply_recipe


def _ramp(spacing=(0.5, 2.0, 3.0), slope_per_mm=4.0) -> Volume:
    """Intensity = slope * x_mm along the i axis (x = i * spacing[0])."""
    k, j, i = np.meshgrid(np.arange(6), np.arange(8), np.arange(20), indexing="ij")
    return Volume((slope_per_mm * i * spacing[0]).astype(np.float32), spacing=spacing, origin=(3, -2, 7))


def test_gradient_of_linear_ramp_is_its_slope_in_mm():
    volume = _ramp()
    out = gradient_magnitude(volume)
    interior = out.array[1:-1, 1:-1, 1:-1]
    np.testing.assert_allclose(interior, 4.0, rtol=1e-5)
    assert out.same_geometry(volume)
    smooth = gradient_magnitude(volume, sigma_mm=1.0).array[2:-2, 2:-2, 4:-4]
    np.testing.assert_allclose(smooth, 4.0, rtol=0.02)


def test_sigmoid_centre_and_tails():
    array = np.array([-100.0, 10.0, 120.0], np.float32).reshape(1, 1, 3)
    out = sigmoid_contrast(Volume(array), alpha=5.0, beta=10.0, output_min=0.0, output_max=2.0).array.ravel()
    np.testing.assert_allclose(out, [0.0, 1.0, 2.0], atol=1e-4)
    expected = 2.0 / (1.0 + np.exp(-(13.0 - 10.0) / 5.0))
    one = sigmoid_contrast(Volume(np.full((1, 1, 1), 13.0, np.float32)), 5.0, 10.0, 0.0, 2.0).array.item()
    assert one == pytest.approx(expected, rel=1e-5)


def _plateau_and_dot() -> Volume:
    array = np.zeros((20, 20, 20), np.float32)
    array[2:18, 2:18, 2:18] = 100.0  # a 16 mm plateau
    array[10, 10, 10] = 150.0  # one bright voxel on it
    return Volume(array, spacing=(1.0, 1.0, 1.0))


def test_white_tophat_removes_plateau_keeps_dot():
    out = morphology(_plateau_and_dot(), "white_tophat", radius_mm=2.0, kernel="box").array
    assert out[10, 10, 10] == pytest.approx(50.0)
    out[10, 10, 10] = 0.0
    assert np.abs(out).max() == 0.0
    # a ball cannot reach into the cube's corners, so only they (and the dot) survive its top-hat
    ball = morphology(_plateau_and_dot(), "white_tophat", radius_mm=2.0).array
    assert ball[10, 10, 10] == pytest.approx(50.0)
    assert ball[4:16, 4:16, 4:16].sum() == pytest.approx(50.0) and ball[2, 2, 2] == pytest.approx(100.0)


def test_open_removes_dot_close_fills_hole():
    opened = morphology(_plateau_and_dot(), "open", radius_mm=2.0).array
    assert opened[10, 10, 10] == pytest.approx(100.0) and opened[5, 5, 5] == pytest.approx(100.0)
    holed = _plateau_and_dot().array.copy()
    holed[10, 10, 10] = 0.0
    closed = morphology(Volume(holed), "close", radius_mm=1.0).array
    assert closed[10, 10, 10] == pytest.approx(100.0)
    black = morphology(Volume(holed), "black_tophat", radius_mm=1.0).array
    assert black[10, 10, 10] == pytest.approx(100.0) and black[5, 5, 5] == 0.0


def test_radius_mm_rounds_per_axis():
    assert radius_in_voxels(Volume(np.zeros((2, 2, 2)), spacing=(0.5, 1.0, 4.0)), 2.0) == [4, 2, 1]


def test_filter_steps_in_a_recipe():
    recipe = parse_recipe({"name": "f", "steps": [
        {"morphology": {"operation": "white_tophat", "radius_mm": 2.0}},
        {"sigmoid": {"alpha": 10.0, "beta": 25.0}},
    ]})
    result = apply_recipe(_plateau_and_dot(), recipe)
    assert result.volume.array[10, 10, 10] > 0.9 and result.volume.array[5, 5, 5] < 0.1
    assert [s.name for s in result.steps] == ["morphology", "sigmoid"]
    assert result.steps[0].params == {"operation": "white_tophat", "radius_mm": 2.0, "kernel": "ball"}
    grad = apply_recipe(_ramp(), parse_recipe({"name": "g", "steps": [{"gradient_magnitude": {}}]}))
    assert grad.volume.array[3, 4, 10] == pytest.approx(4.0, rel=1e-5)


@pytest.mark.parametrize(("step", "where"), [
    ({"morphology": {"operation": "erode", "radius_mm": 1}}, "steps.0.morphology.operation"),
    ({"morphology": {"operation": "open", "radius_mm": 0}}, "steps.0.morphology.radius_mm"),
    ({"sigmoid": {"alpha": 0, "beta": 1}}, "steps.0.sigmoid.alpha"),
    ({"gradient_magnitude": {"sigma": 1}}, "steps.0.gradient_magnitude.sigma"),
])
def test_bad_filter_parameters_are_reported(step, where):
    with pytest.raises(CatalogError) as info:
        parse_recipe({"name": "bad", "steps": [step]}, "bad.yaml")
    assert any(w == where for _, w, _ in info.value.errors), info.value.errors
