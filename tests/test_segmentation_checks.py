"""Method isolation and absolute check floors (issue: segmentation with the models people use, item 5).

- A baseline that fails on a case is noted and skipped; the method's mask and the other baselines survive.
- Cohort checks judge against absolute floors from the catalog and need a minimum number of scored cases;
  "the model beats the baselines" alone no longer passes with Dice 0.0011 vs 0.0009.
"""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.config.segmentation import EvaluationConfig, SegmentationConfig
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.stages.segmentation import baseline_masks
from imaging_pipelines.medical.stages.segmentation_data import SegmentationInput
from imaging_pipelines.medical.stages.segmentation_eval import cohort_checks
from imaging_pipelines.tools.demo.phantom import brain_like_phantom


def summary_rows(model_dice: float, baseline_dice: float, n: int, classes=("lesion",)) -> list[dict]:
    rows = []
    for name in classes:
        rows.append({"method": "model", "class": name, "split": "test", "n": n, "n_scored": n,
                     "dice_mean": model_dice})
        rows.append({"method": "baseline_otsu", "class": name, "split": "test", "n": n, "n_scored": n,
                     "dice_mean": baseline_dice})
    return rows


def test_beating_failing_baselines_is_not_enough():
    checks = cohort_checks(summary_rows(0.0011, 0.0009, n=6), EvaluationConfig(min_test_dice=0.5))
    assert not checks["test_dice_above_floor"].passed
    assert not checks["model_beats_baselines_on_test_split"].passed
    assert all(c.severity == "error" for c in checks.values())
    assert "0.0011 < floor 0.5" in checks["test_dice_above_floor"].description


def test_good_model_passes_both_checks():
    checks = cohort_checks(summary_rows(0.82, 0.40, n=6), EvaluationConfig(min_test_dice=0.5))
    assert all(c.passed for c in checks.values())


def test_model_below_a_baseline_fails_even_above_the_floor():
    checks = cohort_checks(summary_rows(0.6, 0.7, n=6), EvaluationConfig(min_test_dice=0.5))
    assert checks["test_dice_above_floor"].passed
    assert not checks["model_beats_baselines_on_test_split"].passed
    assert "baseline_otsu 0.7" in checks["model_beats_baselines_on_test_split"].description


def test_too_few_cases_warns_instead_of_judging():
    checks = cohort_checks(summary_rows(0.95, 0.1, n=2), EvaluationConfig(min_evaluable_cases=3))
    for check in checks.values():
        assert not check.passed and check.severity == "warn"
        assert "not judged" in check.description and check.metadata["scored_cases"] == {"lesion": 2}
    nothing = cohort_checks([], EvaluationConfig())
    assert all(not c.passed and c.severity == "warn" for c in nothing.values())


def test_floors_come_from_the_catalog():
    cfg = SegmentationConfig.model_validate({"method": "otsu", "evaluation": {"min_test_dice": 0.7,
                                                                               "min_evaluable_cases": 5}})
    assert cfg.evaluation.min_test_dice == 0.7 and cfg.evaluation.min_evaluable_cases == 5
    with pytest.raises(ValueError, match="min_test_dice"):
        SegmentationConfig.model_validate({"method": "otsu", "evaluation": {"min_test_dice": 1.5}})


def test_a_failing_baseline_is_skipped_and_noted():
    """A 10 mm cube: the Otsu baselines erode the head mask by 12 mm, so their brain mask is empty and they
    raise; the isolation keeps going and names the case, the baseline and the reason."""
    rng = np.random.default_rng(0)
    small = Volume(rng.normal(100, 5, (10, 10, 10)).astype(np.float32), spacing=(1.0, 1.0, 1.0))
    notes: list[str] = []
    masks = baseline_masks(SegmentationInput("p1", "t1w", small, None), ["otsu", "max_entropy"], 5, notes)
    assert masks == {}
    assert len(notes) == 2 and all("t1w: baseline" in n and "brain mask is empty" in n for n in notes)


def test_working_baselines_survive_a_failing_one():
    """The demo's head phantom with a lesion: Otsu finds it; an unknown baseline name fails alone."""
    array, truth = brain_like_phantom((48, 64, 64), (3.0, 3.0, 3.0), seed=3, min_lesions=1)
    image = Volume(array, spacing=(3.0, 3.0, 3.0))
    notes: list[str] = []
    masks = baseline_masks(SegmentationInput("p1", "t1w", image, None), ["otsu", "no_such_method"], 5, notes)
    assert list(masks) == ["baseline_otsu"]
    found = masks["baseline_otsu"].array
    assert set(np.unique(found)) == {0, 5}
    assert (found[truth == 5] == 5).mean() > 0.9  # the planted lesion (label 5) is found
    assert len(notes) == 1 and "no_such_method" in notes[0]
