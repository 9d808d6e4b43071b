"""Land-cover evaluation on held-out tiles: pooled confusion scores (accuracy, mean IoU, IoU per class with
background) next to the majority-class predictor, and scene summaries that never score training tiles."""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.remote_sensing.evaluation import PooledScores, confusion_scores

CLASSES = {"water": 1, "built": 2}


def test_confusion_scores_known_answer():
    ref = np.array([[0, 0, 1, 1], [0, 0, 2, 2]], np.uint8)
    pred = np.array([[0, 1, 1, 1], [0, 0, 2, 0]], np.uint8)
    pool = PooledScores(CLASSES)
    pool.add("test", "unet2d", pred, ref, tile="a")
    r = pool.scores("test", "unet2d")
    # background: tp 3, union 3 + 1 + 1 = 5; water: tp 2, union 3; built: tp 1, union 2
    assert r["iou"] == {"background": 0.6, "water": pytest.approx(0.6667, abs=1e-4), "built": 0.5}
    assert r["accuracy"] == 0.75 and r["pixels"] == 8
    assert r["mean_iou"] == pytest.approx((0.6 + 2 / 3 + 0.5) / 3, abs=1e-4)
    assert pool.iou() == {"test": {"unet2d": {"water": pytest.approx(0.6667, abs=1e-4), "built": 0.5}}}
    # invalid pixels and values outside the classes are not counted; an absent class is not measured
    valid = np.ones_like(ref, bool)
    valid[1] = False
    pool.add("other", "m", np.full_like(ref, 7), ref, valid)
    assert pool.scores("other", "m")["pixels"] == 0
    empty = confusion_scores(np.array([[5, 0], [0, 0]]), ["background", "water"])
    assert empty["iou"] == {"background": 1.0, "water": None} and empty["mean_iou"] == 1.0


def test_majority_class_predictor_uses_the_training_reference():
    pool = PooledScores(CLASSES)
    train_ref = np.zeros((10, 10), np.uint8)
    train_ref[:2] = 1  # training side: 80 % background
    pool.add("train", "unet2d", train_ref, train_ref, tile="t")
    test_ref = np.zeros((10, 10), np.uint8)
    test_ref[:6] = 1  # held out: 60 % water, yet the majority predictor says background (from training)
    pool.add("test", "unet2d", test_ref, test_ref, tile="h")
    majority = pool.majority("test")
    assert majority["class"] == "background" and majority["accuracy"] == 0.4
    assert majority["iou"] == {"background": 0.4, "water": 0.0, "built": None} and majority["mean_iou"] == 0.2
    summary = pool.summary()
    assert summary["test"]["tiles"] == 1 and summary["test"]["methods"]["unet2d"]["accuracy"] == 1.0
    assert pool.majority("test", majority_from="test")["class"] == "water"  # the split's own, on request
    assert pool.majority("nothing") is None


def test_scene_evaluation_scores_only_held_out_tiles(tmp_path):
    from imaging_pipelines.config.catalog import DatasetConfig
    from imaging_pipelines.remote_sensing.stages.scene_mosaic import scene_evaluation

    def dataset(method: str) -> DatasetConfig:
        seg = {"method": method, "classes": CLASSES, "labels": {"source": "raster"}}
        return DatasetConfig.model_validate({
            "id": "ev", "domain": "remote_sensing", "inbox": str(tmp_path), "formats": ["geotiff"],
            "partitioning": "tile", "remote_sensing": {"bands": [{"name": "b", "index": 1}], "indices": [],
                                                       "cloud_mask": {"source": "none"}, "segmentation": seg}})

    ref = np.zeros((8, 8), np.uint8)
    ref[:4] = 1
    pool = PooledScores(CLASSES)
    for split in ("train", "all"):  # a training tile, perfectly segmented (it was trained on)
        pool.add(split, "unet2d", ref, ref, tile="trained")
    for split in ("test", "all"):  # a held-out tile, everything predicted water
        pool.add(split, "unet2d", np.ones_like(ref), ref, tile="held")
    held = scene_evaluation(dataset("unet"), pool)
    assert held["evaluation_split"] == "test" and held["evaluation"]["tiles"] == 1
    assert held["evaluation"]["methods"]["unet2d"]["accuracy"] == 0.5  # not 0.75: the training tile is left out
    assert held["evaluation_iou"]["unet2d"]["water"] == 0.5
    assert held["evaluation"]["majority_class"]["accuracy"] == 0.5
    assert scene_evaluation(dataset("baseline"), pool)["evaluation_split"] == "all"  # the baseline fits on no tile
