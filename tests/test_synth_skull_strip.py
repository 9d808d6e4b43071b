"""BraTS-style skull stripping in the lesion generator (imaging_pipelines.medical.synth.skull_strip): the
extraction mask's margin, and a stripped case being the same case with zeros outside the kept brain."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig
from imaging_pipelines.medical.synth.skull_strip import strip_mask

COARSE = SynthConfig(spacing_mm=4.0, anisotropic_probability=0.0)


def _ball(shape: int = 21, radius: float = 6.0) -> np.ndarray:
    z, y, x = np.mgrid[:shape, :shape, :shape] - shape // 2
    return (z * z + y * y + x * x) <= radius * radius


def test_margin_grows_and_shrinks_the_brain_mask_in_mm() -> None:
    brain = _ball()
    assert np.array_equal(strip_mask(brain, (1.0, 1.0, 1.0), 0.0), brain)
    grown, shrunk = strip_mask(brain, (1.0, 1.0, 1.0), 2.0), strip_mask(brain, (1.0, 1.0, 1.0), -2.0)
    assert (grown >= brain).all() and (shrunk <= brain).all()
    assert shrunk.sum() < brain.sum() < grown.sum()
    # the same 2 mm on voxels twice as large reaches one voxel, not two
    assert strip_mask(brain, (2.0, 2.0, 2.0), 2.0).sum() < grown.sum()
    # a radius-6 ball grown by 2 mm lies between radius-7 and radius-8.6 balls (voxel centres on a 1 mm grid)
    assert (_ball(radius=7.0) <= grown).all() and (grown <= _ball(radius=8.6)).all()
    assert (_ball(radius=3.0) <= shrunk).all() and (shrunk <= _ball(radius=4.6)).all()


@pytest.mark.parametrize("index", [0, 1])
def test_a_stripped_case_is_the_same_case_with_zeros_outside_the_kept_brain(index: int) -> None:
    plain = LesionGenerator(COARSE, seed=3).case(index)
    stripped = LesionGenerator(dataclasses.replace(COARSE, skull_strip_probability=1.0), seed=3).case(index)
    margin = stripped.draws.pop("skull_strip_margin_mm")
    assert -4.0 <= margin <= 4.0 and "skull_strip_margin_mm" not in plain.draws
    assert stripped.draws == plain.draws
    kept = strip_mask(plain.brain.array > 0, (4.0, 4.0, 4.0), margin)
    image = stripped.image.array
    assert (image[~kept] == 0).all()
    assert np.array_equal(image[kept], plain.image.array[kept])
    assert np.array_equal(stripped.label.array, np.where(kept, plain.label.array, 0))
    assert np.array_equal(stripped.brain.array, (plain.brain.array > 0) & kept)
    # the head outside the brain (skull, scalp, clutter) is gone: a plain case has signal there
    assert np.abs(plain.image.array[~kept]).max() > 0.05


def test_the_default_generator_never_strips() -> None:
    case = LesionGenerator(COARSE, seed=3).case(0)
    assert "skull_strip_margin_mm" not in case.draws
    assert (case.image.array[case.brain.array == 0] != 0).mean() > 0.5
