"""Classical segmentation baselines and segmentation metrics on spheres and the brain phantom (known truth)."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imaging_pipelines.tools.demo.phantom import BRAIN_GM, BRAIN_LESION, brain_like_phantom
from imaging_pipelines.medical.segment.classical import (
    connected_components,
    fast_marching_segmentation,
    lesion_baseline,
    threshold_segmentation,
    watershed_segmentation,
)
from imaging_pipelines.medical.segment.evaluate import cohort_summary, segmentation_metrics
from imaging_pipelines.core.volume import Volume


def sphere(shape_zyx, spacing_ijk, centre_ijk, radius_mm) -> np.ndarray:
    """Boolean [z, y, x] ball of ``radius_mm`` around the voxel position ``centre_ijk`` (may be fractional)."""
    k, j, i = np.indices(shape_zyx, dtype=float)
    d2 = sum(((idx - c) * s) ** 2 for idx, c, s in zip((i, j, k), centre_ijk, spacing_ijk))
    return d2 <= radius_mm**2


def label_volume(mask: np.ndarray, spacing=(1.0, 1.0, 1.0), value: int = 1) -> Volume:
    return Volume(array=(mask.astype(np.uint8) * value), spacing=spacing)


def noisy_image(mask: np.ndarray, spacing, seed: int = 0, fg: float = 200.0, bg: float = 50.0, sigma: float = 15.0):
    rng = np.random.default_rng(seed)
    image = np.where(mask, fg, bg) + rng.normal(0.0, sigma, size=mask.shape)
    return Volume(array=image.astype(np.float32), spacing=spacing)


def dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * np.count_nonzero(a & b) / (np.count_nonzero(a) + np.count_nonzero(b))


# ----------------------------------------------------------------------------- metrics
def test_dice_iou_of_offset_spheres_match_the_analytic_overlap():
    radius, offset = 10.0, 6.0
    a = sphere((40, 40, 48), (1, 1, 1), (21, 20, 20), radius)
    b = sphere((40, 40, 48), (1, 1, 1), (21 + offset, 20, 20), radius)
    m = segmentation_metrics(label_volume(a), label_volume(b))[1]
    # Lens volume of two equal balls over the volume of one ball.
    expected = (math.pi * (4 * radius + offset) * (2 * radius - offset) ** 2 / 12) / (4 / 3 * math.pi * radius**3)
    assert m["dice"] == pytest.approx(expected, abs=0.02)
    assert m["iou"] == pytest.approx(expected / (2 - expected), abs=0.02)
    assert m["volume_pred_ml"] == pytest.approx(4 / 3 * math.pi * radius**3 / 1000, rel=0.03)
    assert m["volume_difference_ml"] == pytest.approx(m["volume_pred_ml"] - m["volume_ref_ml"])


@pytest.mark.parametrize(
    "spacing, shift_ijk",
    [((2.0, 2.0, 2.0), (3, 0, 0)), ((1.0, 1.0, 3.0), (0, 0, 2)), ((1.0, 1.0, 3.0), (6, 0, 0))],
)
def test_hd95_of_a_shifted_sphere_is_about_the_shift_in_mm(spacing, shift_ijk):
    shape = (24, 40, 40) if spacing[2] == 3.0 else (32, 32, 32)
    centre = tuple((n - 1) / 2 for n in shape[::-1])
    a = sphere(shape, spacing, centre, 18.0 if spacing[2] == 3.0 else 16.0)
    b = np.roll(a, shift=shift_ijk[::-1], axis=(0, 1, 2))
    shift_mm = float(np.linalg.norm(np.multiply(shift_ijk, spacing)))
    m = segmentation_metrics(label_volume(a, spacing), label_volume(b, spacing))[1]
    # Surface points at angle theta from the shift lie ~shift*|cos theta| away: the 95th percentile is ~0.95 shift.
    assert abs(m["hd95_mm"] - shift_mm) <= max(spacing)
    assert m["volume_difference_pct"] == pytest.approx(0.0, abs=1e-9)


@pytest.mark.filterwarnings("ignore:.*always_return_as_numpy")
def test_hd95_agrees_with_monai_on_an_anisotropic_grid():
    monai_metrics = pytest.importorskip("monai.metrics")
    torch = pytest.importorskip("torch")
    spacing = (0.8, 1.0, 2.5)
    a = sphere((20, 40, 40), spacing, (19.5, 19.5, 9.5), 12.0)
    b = sphere((20, 40, 40), spacing, (23.0, 17.0, 10.5), 10.0)
    ours = segmentation_metrics(label_volume(a, spacing), label_volume(b, spacing))[1]["hd95_mm"]
    as_tensor = lambda m: torch.from_numpy(m[None, None].astype(np.float32))  # noqa: E731
    theirs = monai_metrics.compute_hausdorff_distance(
        as_tensor(a), as_tensor(b), percentile=95, spacing=list(spacing[::-1])
    ).item()
    assert ours == pytest.approx(theirs, abs=0.5)


def test_empty_prediction_and_reference_follow_the_documented_conventions():
    full = sphere((16, 16, 16), (1, 1, 1), (8, 8, 8), 4.0)
    empty = np.zeros_like(full)
    both_empty = segmentation_metrics(label_volume(empty), label_volume(empty), labels=[1])[1]
    assert both_empty["dice"] == 1.0 and both_empty["iou"] == 1.0 and math.isnan(both_empty["hd95_mm"])
    assert both_empty["volume_pred_ml"] == 0.0 and math.isnan(both_empty["volume_difference_pct"])
    missed = segmentation_metrics(label_volume(empty), label_volume(full))[1]
    assert missed["dice"] == 0.0 and math.isinf(missed["hd95_mm"]) and missed["volume_difference_pct"] == -100.0
    spurious = segmentation_metrics(label_volume(full), label_volume(empty))[1]
    assert spurious["dice"] == 0.0 and math.isinf(spurious["hd95_mm"]) and math.isnan(spurious["volume_difference_pct"])


def test_metrics_refuse_volumes_on_different_grids():
    mask = sphere((16, 16, 16), (1, 1, 1), (8, 8, 8), 4.0)
    with pytest.raises(ValueError, match="not on the grid"):
        segmentation_metrics(label_volume(mask, (1, 1, 1)), label_volume(mask, (1, 1, 2)))
    shifted = Volume(array=mask.astype(np.uint8), origin=(5.0, 0.0, 0.0))
    with pytest.raises(ValueError, match="not on the grid"):
        segmentation_metrics(label_volume(mask), shifted)


def test_cohort_summary_gives_mean_median_std_per_label_and_metric():
    ref = sphere((24, 24, 24), (1, 1, 1), (12, 12, 12), 6.0)
    cases = {
        f"case{d}": segmentation_metrics(
            label_volume(sphere((24, 24, 24), (1, 1, 1), (12 + d, 12, 12), 6.0)), label_volume(ref)
        )
        for d in (0, 1, 2)
    }
    summary = cohort_summary(cases)
    dices = [cases[c][1]["dice"] for c in cases]
    assert summary[1]["dice"]["mean"] == pytest.approx(np.mean(dices))
    assert summary[1]["dice"]["median"] == pytest.approx(np.median(dices))
    assert summary[1]["dice"]["std"] == pytest.approx(np.std(dices))
    assert summary[1]["hd95_mm"]["n"] == 3


# ----------------------------------------------------------------------------- classical baselines
@pytest.mark.parametrize("method", ["otsu", "max_entropy", "li", "triangle"])
def test_threshold_segmentation_recovers_a_bright_sphere(method):
    spacing = (1.5, 1.5, 2.0)
    truth = sphere((24, 32, 32), spacing, (15.5, 15.5, 11.5), 14.0)
    seg, report = threshold_segmentation(noisy_image(truth, spacing), method=method)
    assert seg.same_geometry(noisy_image(truth, spacing)) and seg.array.dtype == np.uint8
    assert dice(seg.array > 0, truth) > 0.95, (method, report)
    assert report["n_components"] == 1 and 50.0 < report["threshold"] < 200.0


def test_threshold_segmentation_with_a_mask_stays_inside_it():
    spacing = (1.0, 1.0, 1.0)
    truth = sphere((24, 24, 24), spacing, (12, 12, 12), 8.0)
    half = np.zeros_like(truth)
    half[:, :, :12] = True
    seg, _ = threshold_segmentation(noisy_image(truth, spacing), mask=label_volume(half), min_size_vox=0)
    assert not (seg.array[~half]).any()
    assert dice(seg.array > 0, truth & half) > 0.9


def test_connected_components_counts_known_spheres_and_their_volumes_in_ml():
    spacing = (1.5, 1.5, 2.5)
    shape = (24, 48, 48)
    balls = [((12, 12, 10), 10.0), ((34, 14, 12), 8.0), ((22, 34, 11), 12.0)]
    mask = np.zeros(shape, dtype=bool)
    for centre, radius in balls:
        mask |= sphere(shape, spacing, centre, radius)
    mask[0, 0, 0] = True  # a one-voxel speck, dropped by min_size_vox
    image = noisy_image(mask, spacing, sigma=0.0)
    labels, stats = connected_components(label_volume(mask, spacing), min_size_vox=5, image=image)
    assert len(stats) == 3 and int(labels.array.max()) == 3
    expected = sorted(4 / 3 * math.pi * r**3 / 1000 for _, r in balls)[::-1]  # numbered by decreasing size
    for s, ml in zip(stats, expected):
        assert s.volume_ml == pytest.approx(ml, rel=0.05)
        assert s.mean_intensity == pytest.approx(200.0) and s.max_intensity == pytest.approx(200.0)
        assert s.elongation == pytest.approx(1.0, abs=0.1)
    biggest = balls[2]
    assert np.allclose(stats[0].centroid_lps_mm, np.multiply(biggest[0], spacing), atol=0.2)
    # A label map keeps its labels.
    two = label_volume(sphere(shape, spacing, (12, 12, 10), 6.0), spacing, value=7)
    _, stats7 = connected_components(two)
    assert [s.label for s in stats7] == [7]


def test_watershed_on_the_distance_map_splits_two_touching_blobs():
    spacing = (1.0, 1.0, 1.0)
    truth = sphere((24, 24, 40), spacing, (12, 12, 12), 8.0) | sphere((24, 24, 40), spacing, (26, 12, 12), 8.0)
    image = noisy_image(truth, spacing, sigma=5.0)
    mask, _ = threshold_segmentation(image)
    assert connected_components(mask)[1].__len__() == 1  # one touching object before the split
    labels, report = watershed_segmentation(image, mask=mask, landscape="distance")
    assert report["n_labels"] == 2
    left, right = labels.array[12, 12, 10], labels.array[12, 12, 28]
    assert left != right and left > 0 and right > 0
    assert not labels.array[~(mask.array > 0)].any()


def test_watershed_on_the_gradient_with_given_markers():
    spacing = (1.0, 1.0, 1.0)
    truth = sphere((24, 24, 24), spacing, (12, 12, 12), 7.0)
    image = noisy_image(truth, spacing, sigma=5.0)
    markers = np.zeros(truth.shape, dtype=np.uint8)
    markers[12, 12, 12] = 1
    markers[2, 2, 2] = 2
    labels, report = watershed_segmentation(image, markers=Volume(markers), sigma_mm=1.0)
    assert report["n_labels"] == 2
    assert dice(labels.array == labels.array[12, 12, 12], truth) > 0.9


def test_fast_marching_from_a_seed_recovers_a_sphere():
    spacing = (1.5, 1.5, 1.5)
    truth = sphere((32, 32, 32), spacing, (15.5, 15.5, 15.5), 15.0)
    seg, report = fast_marching_segmentation(
        noisy_image(truth, spacing, sigma=5.0), seeds_ijk=[(16, 16, 16)], stopping_time=40.0, sigma_mm=1.5
    )
    assert dice(seg.array > 0, truth) > 0.9, report


def test_lesion_baseline_finds_the_phantom_lesions():
    shape, spacing = (32, 48, 48), (4.0, 4.0, 4.0)
    dices = {}
    for seed in (0, 2, 4, 7):  # seeds whose phantom has lesions at this grid
        for contrast in ("T1", "T2"):
            image, truth = brain_like_phantom(shape, spacing, seed=seed, contrast=contrast)
            assert (truth == BRAIN_LESION).any()
            volume = Volume(array=image, spacing=spacing)
            brain = volume.with_array((truth >= BRAIN_GM).astype(np.uint8))  # parenchyma: GM, WM, lesion
            lesions, report = lesion_baseline(volume, brain_mask=brain)
            reference = volume.with_array((truth == BRAIN_LESION).astype(np.uint8))
            dices[(seed, contrast)] = segmentation_metrics(lesions, reference, labels=[1])[1]["dice"]
            assert report["n_lesions"] >= 1
    print("lesion baseline Dice:", {k: round(v, 3) for k, v in dices.items()})
    assert min(dices.values()) > 0.5, dices
