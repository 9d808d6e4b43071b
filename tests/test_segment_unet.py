"""DynUNet segmentation core: nnU-Net planning, save/load, and lesion accuracy on brain phantoms (CPU)."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch

from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom
from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
from imaging_pipelines.medical.segment.unet import SegmentationModel, plan_dynunet, predict
from imaging_pipelines.medical.segment.unet_train import train_segmentation
from imaging_pipelines.core.volume import Volume

SPACING = (4.0, 4.0, 4.0)
SHAPE = (32, 48, 48)
TRAIN_SEEDS = [0, 2, 4, 5, 7, 9, 10, 13]  # all have lesions (seeds 11 and 14 have none)
TEST_SEEDS = [15, 17]  # held out, with lesions


def _case(seed: int) -> tuple[Volume, Volume]:
    image, labels = brain_like_phantom(SHAPE, SPACING, seed=seed, noise_sigma=15.0, with_bias=True)
    assert np.any(labels == BRAIN_LESION)
    return Volume(image, spacing=SPACING), Volume(labels, spacing=SPACING)


def test_plan_isotropic_pools_five_times():
    plan = plan_dynunet((1.0, 1.0, 1.0), (128, 128, 128))
    assert plan.strides == [[1, 1, 1]] + [[2, 2, 2]] * 5
    assert plan.kernel_sizes == [[3, 3, 3]] * 6
    assert plan.patch_size == [128, 128, 128]
    assert len(plan.filters) == 6 and plan.filters[0] == 32 and max(plan.filters) == 320


def test_plan_anisotropic_does_not_pool_thick_axis_first():
    # spacing in ITK order (x, y, z): 5 mm slices; patch and plan in array order (z, y, x)
    plan = plan_dynunet((0.8, 0.8, 5.0), (32, 128, 128))
    assert plan.kernel_sizes[0] == [1, 3, 3]
    assert plan.strides[1] == [1, 2, 2] and plan.strides[2] == [1, 2, 2]
    assert all(s[1] == s[2] == 2 for s in plan.strides[1:])
    assert plan.n_pool_per_axis[0] < plan.n_pool_per_axis[1] == 5
    # in-plane spacing 0.8 -> 1.6 -> 3.2 (within 2x of 5) after two pools: z kernel becomes 3 from level 2
    assert plan.kernel_sizes[2] == [3, 3, 3] and plan.kernel_sizes[-1] == [3, 3, 3]
    # min_feature_size stops pooling z at 16 -> 8 -> 4; y/x then pool once more, after which they are 2x
    # coarser than z and stop too (nnU-Net's rule)
    small = plan_dynunet((1.0, 1.0, 1.0), (16, 64, 64))
    assert small.n_pool_per_axis == [2, 3, 3]


def test_save_load_roundtrip_identical_predictions(tmp_path):
    cases = [_case(s) for s in (0, 2, 4)]
    model, report = train_segmentation(
        [c[0] for c in cases], [c[1] for c in cases], n_classes=2, label_values=[0, BRAIN_LESION],
        patch_size=(16, 32, 32), epochs=1, iterations_per_epoch=2, base_filters=4, optimizer="sgd",
        deep_supervision=True, device="cpu", val_fraction=0.34,
    )
    assert len(report.curve) == 1 and report.n_val == 1 and len(model.version) == 64
    path = model.save(tmp_path / "unet.pt")
    blob = torch.load(path, weights_only=True)
    assert blob["config"]["label_values"] == [0, BRAIN_LESION]
    loaded = SegmentationModel.load(path)
    assert loaded.version == model.version and loaded.plan == model.plan
    image = cases[0][0]
    a = predict(model, image, device="cpu")
    b = predict(loaded, image, device="cpu")
    assert a.array.dtype == np.uint8 and a.spatial_shape == image.spatial_shape
    assert a.spacing == image.spacing and a.origin == image.origin
    np.testing.assert_array_equal(a.array, b.array)
    assert set(np.unique(a.array)) <= {0, BRAIN_LESION}


@pytest.mark.slow  # ~2 min; held-out Dice of the trained model is also checked through Dagster (test_segmentation_pipeline)
def test_lesion_dice_on_held_out_phantoms():
    train = [_case(s) for s in TRAIN_SEEDS]
    t0 = time.perf_counter()
    model, report = train_segmentation(
        [c[0] for c in train], [c[1] for c in train], n_classes=2, label_values=[0, BRAIN_LESION],
        patch_size=(32, 32, 32), epochs=12, iterations_per_epoch=25, batch_size=2, optimizer="adam", lr=1e-2,
        base_filters=16, foreground_oversampling=0.5, seed=0, device="cpu", val_fraction=0.2,
    )
    seconds = time.perf_counter() - t0
    dices = []
    for seed in TEST_SEEDS:
        image, reference = _case(seed)
        pred = predict(model, image, device="cpu")
        dices.append(segmentation_metrics(pred, reference, labels=[BRAIN_LESION])[BRAIN_LESION]["dice"])
    print(
        f"\nDynUNet lesion Dice held-out { {s: round(float(d), 3) for s, d in zip(TEST_SEEDS, dices)} } mean {np.mean(dices):.3f}; "
        f"best val {report.best_val_dice:.3f} (epoch {report.best_epoch}); "
        f"{report.seconds_per_epoch:.1f} s/epoch, {seconds:.0f} s total"
    )
    assert len(report.curve) == 12
    assert report.curve[-1].train_loss < report.curve[0].train_loss
    assert report.best_val_dice >= 0.7
    assert np.mean(dices) >= 0.75 and min(dices) >= 0.6


@pytest.mark.parametrize("dims", [2, 3])
def test_flip_tta_averages_the_softmax_over_every_distinct_mirroring(dims):
    """nnU-Net's mirroring: the mean softmax over the input flipped along each subset of the axes, flipped
    back; for a 2D model the flips across the slices are left out, as they change nothing."""
    import torch

    from imaging_pipelines.core.volume import Volume
    from imaging_pipelines.medical.segment.unet import Plan, SegmentationModel, predict_probabilities

    torch.manual_seed(0)
    k = [3] * dims
    plan = Plan([k] * 3, [[1] * dims, [2] * dims, [2] * dims], [4, 8, 16], [8] * dims)
    model = SegmentationModel(plan=plan, n_classes=3, version="t")
    image = Volume(array=np.random.default_rng(1).normal(size=(6, 10, 12)).astype(np.float32),
                   spacing=(1.0, 1.0, 3.0))  # slices across k (z) for the 2D model
    plain = predict_probabilities(model, image, device="cpu")
    mirrored = predict_probabilities(model, image, device="cpu", flip_tta=True)
    x = Volume(array=np.ascontiguousarray(image.array), spacing=image.spacing)
    expected = torch.zeros_like(plain)
    for mask in range(8):  # all 8 mirrorings of the three axes, each predicted as a plain image
        axes = [a for a in range(3) if mask >> a & 1]
        flipped = x.with_array(np.ascontiguousarray(np.flip(x.array, axes)) if axes else x.array)
        expected += predict_probabilities(model, flipped, device="cpu").flip([a + 1 for a in axes]) if axes \
            else predict_probabilities(model, flipped, device="cpu")
    expected /= 8
    torch.testing.assert_close(mirrored, expected, rtol=0, atol=1e-5)
    assert (mirrored - plain).abs().max() > 1e-4  # the mirrored passes differ from the plain one
