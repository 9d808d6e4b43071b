"""Lesion mimics of the synthetic generator (imaging_pipelines.medical.synth.mimics): thin curves inside the
allowed region covering the drawn share of it, painted brighter than the brain, never lesion."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from imaging_pipelines.medical.synth import intensity, mimics
from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig


def test_curves_are_thin_and_cover_the_drawn_share_of_the_region():
    region = np.zeros((60, 64, 56), bool)
    region[5:55, 6:58, 4:52] = True
    params = mimics.MimicParams(probability=1.0, bend_mm=(8.0, 8.0), share=(0.01, 0.01))
    curves = mimics.curve_mask(np.random.default_rng(1), region, 2.0, params)
    assert not (curves & ~region).any()
    assert curves.sum() == pytest.approx(0.01 * region.sum(), rel=0.02)
    # curves, not blobs: a 3x3x3 erosion removes (nearly) all of them; a ball of the same volume keeps most
    assert ndimage.binary_erosion(curves, np.ones((3, 3, 3))).sum() < 0.02 * curves.sum()
    # and not isolated dots: most curve voxels have curve neighbours
    neighbours = ndimage.convolve(curves.astype(np.int32), np.ones((3, 3, 3), np.int32), mode="constant") - 1
    assert np.mean(neighbours[curves] >= 2) > 0.8
    assert not mimics.curve_mask(np.random.default_rng(1), np.zeros((8, 8, 8), bool), 2.0, params).any()


@pytest.fixture(scope="module")
def pair():
    """The same case without and with mimics, with no within-label spread, blur, bias, gamma or noise: each
    image is its label map's means over one scale factor, so the mimic voxels are where the two differ."""
    flat = intensity.IntensityParams(std=(0.0, 0.0), blur_sigma_vox=(0.0, 0.0), bias_sd=(0.0, 0.0),
                                     gamma_log_sd=0.0, noise_sd=(0.0, 0.0))
    plain = SynthConfig(spacing_mm=4.0, anisotropic_probability=0.0, intensity=flat)
    with_mimics = dataclasses.replace(plain, mimics=mimics.MimicParams(probability=1.0, share=(0.02, 0.02)))
    return LesionGenerator(plain, seed=5).case(0), LesionGenerator(with_mimics, seed=5).case(0)


def test_mimics_leave_the_lesion_and_brain_unchanged_and_are_bright(pair):
    plain, mimicked = pair
    assert plain.draws["mimic_ml"] == 0.0 and mimicked.draws["mimic_ml"] > 0
    np.testing.assert_array_equal(plain.label.array, mimicked.label.array)  # mimics are never lesion
    np.testing.assert_array_equal(plain.brain.array, mimicked.brain.array)
    a, b = plain.image.array, mimicked.image.array
    scale = np.median(b[a > 0.05] / a[a > 0.05])
    changed = ~np.isclose(b, a * scale, rtol=1e-4, atol=1e-6)
    assert changed.sum() * 4.0 ** 3 / 1000 == pytest.approx(mimicked.draws["mimic_ml"], rel=0.05)
    assert not (changed & (plain.label.array > 0)).any()
    assert (plain.brain.array[changed] > 0).all()
    brain = (plain.brain.array > 0) & (plain.label.array == 0) & ~changed
    assert b[changed].min() > np.percentile(b[brain], 99)  # brighter than grey and white matter
