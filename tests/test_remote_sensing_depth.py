"""The raster U-Net's depth (``RasterTrainingConfig.depth``): more down-sampling levels, the patch-size rule
that follows from them, and the depth kept in the model file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
from imaging_pipelines.remote_sensing.unet2d import (
    Normalisation, build_unet2d, load_unet2d, predict_unet2d, save_unet2d, train_unet2d,
)


def blobs(seed: int, size: int = 64) -> tuple[np.ndarray, np.ndarray]:
    """One band: bright 10 px squares (class 1) on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(4):
        y, x = rng.integers(0, size - 12, 2)
        label[y:y + 10, x:x + 10] = 1
    image = (np.where(label > 0, 0.9, 0.2) + rng.normal(0, 0.05, label.shape)).astype(np.float32)[None]
    return image, label


def test_depth_sets_the_levels_and_the_patch_rule():
    net = build_unet2d(1, 2, 4, depth=4)
    assert tuple(net.channels) == (4, 8, 16, 32, 64) and tuple(net.strides) == (2, 2, 2, 2)
    assert tuple(build_unet2d(1, 2, 4).channels) == (4, 8, 16, 32)  # the default stays 3 levels
    assert net(torch.zeros(1, 1, 48, 48)).shape == (1, 2, 48, 48)
    image, label = blobs(0)
    cfg = RasterTrainingConfig(patch_size=40, epochs=1, iterations_per_epoch=1, depth=4)
    with pytest.raises(ValueError, match="multiple of 16"):  # 40 is a multiple of 8, not of 2**4
        train_unet2d([image], [label], {"roof": 1}, cfg)
    with pytest.raises(ValueError, match="multiple of 16"):
        predict_unet2d(net.eval(), Normalisation([0.0], [1.0]), [0, 1], image, 40)
    with pytest.raises(ValidationError):
        RasterTrainingConfig(depth=1)


def test_deeper_unet_trains_and_round_trips(tmp_path):
    tiles = [blobs(s) for s in range(3)]
    cfg = RasterTrainingConfig(patch_size=32, epochs=12, iterations_per_epoch=6, batch_size=4, base_filters=4,
                               learning_rate=1e-2, depth=4, seed=1)
    torch.set_num_threads(1)
    outcome = train_unet2d([t[0] for t in tiles], [t[1] for t in tiles], {"roof": 1}, cfg)
    assert len(outcome.model.channels) == 5
    image, label = blobs(7)
    pred = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image, 32)
    iou = ((pred == 1) & (label == 1)).sum() / ((pred == 1) | (label == 1)).sum()
    assert iou > 0.5  # it learns the squares
    path = tmp_path / "deep.pt"
    save_unet2d(outcome, path)
    model, norm, values, _ = load_unet2d(path)
    assert len(model.channels) == 5
    np.testing.assert_array_equal(predict_unet2d(model, norm, values, image, 32), pred)
    # a file written before the depth was stored (no "depth" in its hyper-parameters) loads as 3 levels
    blob = torch.load(path, weights_only=True)
    shallow = build_unet2d(1, 2, 4)
    blob["hyper"].pop("depth")
    blob["state_dict"] = shallow.state_dict()
    torch.save(blob, tmp_path / "old.pt")
    assert len(load_unet2d(tmp_path / "old.pt")[0].channels) == 4
