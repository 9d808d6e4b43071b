"""Graph-cut segmentation (medical/segment/graph_cut.py) and its lesion baseline (baselines.py ``graph_cut``)."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.register.metrics import dice
from imaging_pipelines.medical.segment import classical
from imaging_pipelines.medical.segment.baselines import BASELINES, run_baseline
from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom

pytest.importorskip("maxflow")
from imaging_pipelines.medical.segment.graph_cut import graph_cut_segmentation  # noqa: E402

SPACING = (1.0, 1.2, 2.0)  # mm along i, j, k


def _two_regions(noise_sd: float, seed: int = 0) -> tuple[Volume, np.ndarray]:
    """A bright ellipsoid (200 a.u.) in a darker box (100 a.u.) with Gaussian noise; the truth mask."""
    shape = (24, 40, 48)
    k, j, i = np.meshgrid(*[np.arange(n) for n in shape], indexing="ij")
    x, y, z = (i - 23.5) * SPACING[0], (j - 19.5) * SPACING[1], (k - 11.5) * SPACING[2]
    truth = (x / 16) ** 2 + (y / 14) ** 2 + (z / 14) ** 2 <= 1.0
    rng = np.random.default_rng(seed)
    image = np.where(truth, 200.0, 100.0) + rng.normal(0, noise_sd, shape)
    return Volume(image.astype(np.float32), spacing=SPACING), truth


def _two_region_dices(noise_sd: float) -> tuple[float, float, dict]:
    image, truth = _two_regions(noise_sd)
    mask, report = graph_cut_segmentation(image)  # default parameters; models from an initial Otsu split
    assert mask.array.dtype == np.uint8 and mask.spacing == image.spacing
    cut_dice = dice(mask.array > 0, truth)
    threshold_dice = dice(image.array > report["otsu_threshold"], truth)
    print(f"two-region phantom, contrast 100, noise sd {noise_sd}: graph cut Dice {cut_dice:.4f}, "
          f"Otsu threshold {threshold_dice:.4f}")
    return cut_dice, threshold_dice, report


@pytest.mark.parametrize("noise_sd", [20.0, 30.0])
def test_two_region_phantom_better_than_a_threshold(noise_sd):
    cut_dice, threshold_dice, report = _two_region_dices(noise_sd)
    assert cut_dice > threshold_dice
    assert abs(report["foreground_model"][0][0] - 200) < 10 and abs(report["background_model"][0][0] - 100) < 10
    if noise_sd == 20.0:
        assert cut_dice >= 0.98  # measured 0.998


def test_two_region_phantom_dice_goal_at_heavy_noise():
    """Issue 18's goal, Dice >= 0.98, at default parameters (measured 0.992; 0.991 on noise seeds 1-3)."""
    cut_dice, _, report = _two_region_dices(30.0)
    assert cut_dice >= 0.98
    assert report["data_scale"] > 0 and report["sigma"] > 30.0  # sqrt(2) x the noise sd: a difference's spread


def test_absolute_n_link_weights_on_request():
    """``data_scale=1`` gives absolute n-link weights (the behaviour before the data-term scaling): at
    smoothness 1 they are too weak against the data term of this high-contrast image and leave noise."""
    image, truth = _two_regions(noise_sd=30.0)
    relative, report = graph_cut_segmentation(image)
    absolute, absolute_report = graph_cut_segmentation(image, data_scale=1.0)
    assert absolute_report["data_scale"] == 1.0 and report["data_scale"] > 2.0
    assert dice(absolute.array > 0, truth) < dice(relative.array > 0, truth)


def test_seeds_are_hard_constraints_and_region_limits_the_cut():
    image, truth = _two_regions(noise_sd=20.0, seed=1)
    fg = np.zeros_like(truth)
    fg[11:13, 18:22, 22:26] = True
    bg = np.zeros_like(truth)
    bg[:, :3, :] = True
    bg[10:14, 19:21, 23:25] = True  # contradicts the intensity; the seed must win
    fg &= ~bg
    mask, _ = graph_cut_segmentation(image, foreground_seeds=fg, background_seeds=bg)
    assert mask.array[fg].all() and not mask.array[bg].any()
    assert dice(mask.array > 0, truth & ~bg) > 0.97
    region = np.zeros_like(truth)
    region[:, :, :24] = True
    limited, _ = graph_cut_segmentation(image, region=region)
    assert not limited.array[:, :, 24:].any() and dice(limited.array > 0, truth & region) > 0.97


def test_bad_input_names_the_problem():
    image, truth = _two_regions(noise_sd=10.0)
    with pytest.raises(ValueError, match="region shape"):
        graph_cut_segmentation(image, region=truth[:-1])
    with pytest.raises(ValueError, match="region is empty"):
        graph_cut_segmentation(image, region=np.zeros_like(truth))
    with pytest.raises(ValueError, match="3D volume"):
        graph_cut_segmentation(Volume(np.zeros((2, 4, 4, 4), np.float32)))


def _demo_lesion_dices(contrast: str = "T1") -> dict[str, float]:
    image, labels = brain_like_phantom(seed=0, contrast=contrast, min_lesions=1)  # (48, 64, 64), 3 x 3 x 3.5 mm
    volume = Volume(image, spacing=(3.0, 3.0, 3.5))
    truth = labels == BRAIN_LESION
    out = {name: dice(run_baseline(name, volume)[0].array > 0, truth) for name in ("otsu", "max_entropy", "graph_cut")}
    print(f"demo lesion phantom (seed 0, {contrast}) lesion Dice:", {k: round(v, 3) for k, v in out.items()})
    return out


def test_graph_cut_is_a_baseline_with_a_lesion_mask():
    assert "graph_cut" in BASELINES
    dices = _demo_lesion_dices()
    assert dices["graph_cut"] > 0.3  # it finds the lesion (measured 0.624)


@pytest.mark.parametrize("contrast", ["T1", "T2"])
def test_graph_cut_beats_threshold_baselines_on_demo_lesions(contrast):
    """Issue 18's goal. T1 measured 0.624 > otsu 0.613 > max_entropy 0.000: the margin is the outer-CSF voxels
    the eroded brain region cuts through (four 4-voxel objects on its edge, dropped); the two ventricles
    (328 CSF voxels, 150 a.u. against the lesion's 260) stay, as in the Otsu mask. T2 measured 0.356 >
    otsu 0.000 = max_entropy 0.000 (Otsu finds no candidate, max-entropy's are CSF: together with the cut's
    lesion model they reach the lesion)."""
    dices = _demo_lesion_dices(contrast)
    assert dices["graph_cut"] > dices["otsu"] and dices["graph_cut"] > dices["max_entropy"]


def test_graph_cut_baseline_drops_objects_cut_by_the_region_edge():
    image, labels = brain_like_phantom(seed=0, contrast="T1", min_lesions=1)
    volume = Volume(image, spacing=(3.0, 3.0, 3.5))
    mask, report = run_baseline("graph_cut", volume)
    region = classical.eroded_head(volume)
    edge = region & ~ndimage.binary_erosion(region)
    assert report["dropped_at_region_border"] == 4 and not (mask.array.astype(bool) & edge).any()
    assert (mask.array.astype(bool) & (labels == BRAIN_LESION)).any()
