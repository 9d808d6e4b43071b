"""Seed ensembles of the raster 2D U-Net (``RasterTrainingConfig.ensemble``): the averaged softmax, seeding of
the members, and the model file holding K state dicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from pydantic import ValidationError

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.config.remote_sensing import RasterSegmentationConfig, RasterTrainingConfig
from imaging_pipelines.remote_sensing.stages.tile_model import LabelledTile, TileModelTask
from imaging_pipelines.remote_sensing.unet2d import (
    Normalisation, SoftmaxEnsemble, build_unet2d, load_unet2d, predict_unet2d, save_unet2d, train_unet2d,
)

CLASSES = {"roof": 1, "road": 2}


def squares(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """Two bands: bright squares (class 1) and a dark horizontal band (class 2) on noise."""
    rng = np.random.default_rng(seed)
    label = np.zeros((size, size), np.uint8)
    for _ in range(3):
        y, x = rng.integers(0, size - 10, 2)
        label[y:y + 8, x:x + 8] = 1
    r = int(rng.integers(0, size - 6))
    label[r:r + 5] = 2
    image = np.stack([np.choose(label, [0.2, 0.9, 0.1]), np.choose(label, [0.5, 0.6, 0.0])]).astype(np.float32)
    image += rng.normal(0, 0.05, image.shape).astype(np.float32)
    return image, label


def random_members(k: int) -> list[torch.nn.Module]:
    nets = []
    for seed in range(k):
        torch.manual_seed(seed)
        nets.append(build_unet2d(2, 3, 4).eval())
    return nets


@pytest.mark.parametrize("tta", [False, True])
def test_ensemble_probability_is_the_mean_of_its_members(tta):
    members = random_members(3)
    ensemble = SoftmaxEnsemble(members)
    norm, values = Normalisation([0.0, 0.0], [1.0, 1.0]), [0, 1, 2]
    image = squares(1, size=32)[0]  # one 32 px window: no blending between windows
    single = [predict_unet2d(m, norm, values, image, 32, return_probabilities=True, tta=tta)[1] for m in members]
    assert not np.allclose(single[0], single[1], atol=1e-3)  # the members differ
    pred, prob = predict_unet2d(ensemble, norm, values, image, 32, return_probabilities=True, tta=tta)
    np.testing.assert_allclose(prob, np.mean(single, axis=0), atol=1e-5)
    np.testing.assert_array_equal(pred, np.asarray(values, np.uint8)[prob.argmax(0)])
    # a larger image (overlapping windows): still a probability per pixel
    _, big = predict_unet2d(ensemble, norm, values, squares(2, size=80)[0], 32, return_probabilities=True)
    np.testing.assert_allclose(big.sum(0), 1.0, atol=1e-5)
    with pytest.raises(ValueError, match="at least one"):
        SoftmaxEnsemble([])


def test_ensemble_members_are_the_seeded_single_models_and_the_file_round_trips(tmp_path):
    tiles = [squares(s) for s in range(2)]
    images, labels = [t[0] for t in tiles], [t[1] for t in tiles]
    cfg = RasterTrainingConfig(patch_size=32, epochs=2, iterations_per_epoch=2, batch_size=2, base_filters=4,
                               seed=5, ensemble=2)
    lines: list[str] = []
    outcome = train_unet2d(images, labels, CLASSES, cfg, validation=([squares(9)[0]], [squares(9)[1]]),
                           log=lines.append)
    assert isinstance(outcome.model, SoftmaxEnsemble) and len(outcome.members) == 2
    assert sum(line.startswith("member 2/2: epoch") for line in lines) == 2 and lines[-1].startswith("ensemble of 2")
    assert set(outcome.validation_iou) == set(CLASSES)
    second = train_unet2d(images, labels, CLASSES, cfg.model_copy(update={"seed": 6, "ensemble": 1}),
                          validation=([squares(9)[0]], [squares(9)[1]]))
    assert outcome.members[1].curve == second.curve  # member k is the single model of seed + k
    assert outcome.members[0].curve != second.curve
    np.testing.assert_allclose(outcome.curve, np.mean([m.curve for m in outcome.members], axis=0))

    path = tmp_path / "ensemble.pt"
    save_unet2d(outcome, path, {"patch_size": 32})
    assert len(torch.load(path, weights_only=True)["members"]) == 2
    model, norm, values, meta = load_unet2d(path)
    assert isinstance(model, SoftmaxEnsemble) and len(model.members) == 2 and not model.training
    assert norm == outcome.normalisation and values == [0, 1, 2] and meta == {"patch_size": 32}
    image = squares(11, size=64)[0]
    a = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, image, 32, return_probabilities=True)
    b = predict_unet2d(model, norm, values, image, 32, return_probabilities=True)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_allclose(a[1], b[1], atol=1e-6)


def test_ensemble_catalog_key_reaches_the_tile_model(tmp_path):
    seg = RasterSegmentationConfig(method="unet", classes={"building": 1}, labels={"source": "geojson"},
                                   training={"ensemble": 3})
    assert seg.training.ensemble == 3 and RasterTrainingConfig().ensemble == 1
    with pytest.raises(ValidationError):
        RasterTrainingConfig(ensemble=0)
    training = {"patch_size": 32, "epochs": 1, "iterations_per_epoch": 2, "batch_size": 2, "base_filters": 4,
                "ensemble": 2}
    dataset = DatasetConfig.model_validate({
        "id": "ens", "domain": "remote_sensing", "inbox": "/nonexistent", "formats": ["geotiff"],
        "partitioning": "tile", "remote_sensing": {
            "bands": [{"name": "red", "index": 1}, {"name": "nir", "index": 2}], "indices": [],
            "cloud_mask": {"source": "none"}, "segmentation": {
                "method": "unet", "classes": CLASSES, "labels": {"source": "raster"}, "training": training}}})
    task = TileModelTask(dataset)
    assert task.params()["training"]["ensemble"] == 2  # part of the model version
    tiles = [LabelledTile(f"t{s}", *squares(s)) for s in range(3)]
    trained = task.train((tiles[:2], tiles[2:]), "v1", "cpu", lambda m: None)
    trained.save(tmp_path / "unet2d-v1.pt")
    model, _, values, meta = task.load(tmp_path / "unet2d-v1.pt", "cpu")
    assert isinstance(model, SoftmaxEnsemble) and len(model.members) == 2 and values == [0, 1, 2]
    assert meta["version"] == "v1" and set(trained.report["validation_iou"]) == set(CLASSES)
