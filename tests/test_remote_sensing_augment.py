"""Patch augmentation (random scale, intensity jitter) and class-map clean-up of the raster U-Net."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
from imaging_pipelines.remote_sensing.augment import intensity_jitter, resize_patch, scaled_crop_size
from imaging_pipelines.remote_sensing.postprocess import choose_clean_up, clean_class_map
from imaging_pipelines.remote_sensing.unet2d import predict_unet2d, train_unet2d


def test_scale_and_resize_keep_classes_and_grid():
    rng = np.random.default_rng(0)
    sizes = {scaled_crop_size(64, 0.3, rng) for _ in range(50)}
    assert min(sizes) >= int(64 / np.exp(0.3)) and max(sizes) <= int(np.ceil(64 * np.exp(0.3)))
    assert len(sizes) > 5 and scaled_crop_size(64, 0.0, rng) == 64
    image = rng.normal(size=(2, 80, 80)).astype(np.float32)
    label = np.zeros((80, 80), np.int64)
    label[20:60, 20:60] = 2
    x, y = resize_patch(image, label, 64)
    assert x.shape == (2, 64, 64) and y.shape == (64, 64) and y.dtype == np.int64
    assert set(np.unique(y)) == {0, 2}  # nearest: no in-between class at the square's edge
    assert abs(y.mean() / 2 - label.mean() / 2) < 0.02  # the square keeps its area share


def test_intensity_jitter_changes_levels_not_structure():
    rng = np.random.default_rng(1)
    x = np.linspace(-2, 2, 32 * 32, dtype=np.float32).reshape(1, 32, 32)
    assert intensity_jitter(x, 0.0, rng) is x
    out = [intensity_jitter(x, 0.3, rng) for _ in range(20)]
    means = [float(o.mean()) for o in out]
    assert np.std(means) > 0.05  # brightness varies between draws
    for o in out:  # a monotone transform (gamma, a > 0) plus weak noise keeps the ordering of distant pixels
        assert np.corrcoef(o.ravel(), x.ravel())[0, 1] > 0.9


def test_clean_class_map_drops_small_objects_and_fills_holes():
    m = np.zeros((40, 40), np.uint8)
    m[2:12, 2:12] = 1
    m[5:8, 5:8] = 0  # a hole
    m[30:32, 30:32] = 1  # 4 px speck
    m[20:30, 2:12] = 3
    out = clean_class_map(m, min_pixels=10, fill_holes=True)
    assert out[6, 6] == 1 and out[30, 30] == 0 and out[25, 5] == 3
    assert (clean_class_map(m) == m).all()
    valid = np.ones_like(m, bool)
    valid[:, :4] = False
    assert clean_class_map(m, valid=valid)[:, :4].max() == 0
    with pytest.raises(ValueError):
        clean_class_map(m[None])


def test_choose_clean_up_finds_the_setting_that_removes_false_specks():
    ref = np.zeros((50, 50), bool)
    ref[10:30, 10:30] = True
    prob = np.where(ref, 0.8, 0.1).astype(np.float32)
    prob[40:42, 40:42] = 0.9  # a small false positive
    valid = np.ones_like(ref)
    th, min_px, fill, iou = choose_clean_up(prob, ref, valid, [0.5, 0.85], [0, 8])
    assert (th, min_px, fill) == (0.5, 8, False) and iou == 1.0


def test_training_with_every_augmentation_and_cosine_schedule_learns_a_bright_square():
    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    image = rng.normal(0, 0.3, (1, 64, 64)).astype(np.float32)
    label = np.zeros((64, 64), np.uint8)
    for y0, x0 in ((8, 8), (36, 40), (10, 44), (44, 10)):
        label[y0:y0 + 12, x0:x0 + 12] = 1
    image[0][label == 1] += 2.0
    cfg = RasterTrainingConfig(patch_size=32, epochs=6, iterations_per_epoch=10, batch_size=4, learning_rate=1e-2,
                               base_filters=8, schedule="cosine", foreground_fraction=0.5, scale_augmentation=0.2,
                               intensity_augmentation=0.2, average_last_epochs=3)
    out = train_unet2d([image], [label], {"building": 1}, cfg)
    pred = predict_unet2d(out.model, out.normalisation, out.class_values, image, 32)
    inter, union = ((pred == 1) & (label == 1)).sum(), ((pred == 1) | (label == 1)).sum()
    assert inter / union > 0.5
