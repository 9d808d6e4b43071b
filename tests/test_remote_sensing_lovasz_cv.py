"""The Lovász-softmax loss (``remote_sensing/losses.py``) against a brute-force Lovász extension of the Jaccard
loss, and the column cross-validation of the raster U-Net (``remote_sensing/cross_validation.py``)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
from imaging_pipelines.remote_sensing.cross_validation import column_folds, cross_validate_columns, training_blocks
from imaging_pipelines.remote_sensing.losses import LovaszSoftmaxLoss, lovasz_softmax
from imaging_pipelines.remote_sensing.unet2d import build_loss, train_unet2d


def jaccard_loss_of_set(reference: set[int], mispredicted: set[int]) -> float:
    """1 - IoU of the prediction that is the reference with the pixels of ``mispredicted`` flipped."""
    prediction = reference ^ mispredicted
    union = reference | prediction
    return 1.0 - len(reference & prediction) / len(union) if union else 0.0


def brute_force_lovasz(probabilities: np.ndarray, target: np.ndarray) -> float:
    """Mean over present classes of the Lovász extension as an integral over levels t in [0, 1] of the Jaccard
    loss of the set {i : error_i > t} (piecewise constant: evaluated between consecutive error values)."""
    losses = []
    for c in range(probabilities.shape[1]):
        reference = {i for i in range(len(target)) if target[i] == c}
        if not reference:
            continue
        errors = np.abs((target == c).astype(float) - probabilities[:, c])
        levels = np.unique(np.concatenate([[0.0, 1.0], errors]))
        total = 0.0
        for lo, hi in zip(levels[:-1], levels[1:]):
            t = (lo + hi) / 2
            total += (hi - lo) * jaccard_loss_of_set(reference, {i for i in range(len(target)) if errors[i] > t})
        losses.append(total)
    return float(np.mean(losses))


@pytest.mark.parametrize("seed", range(6))
def test_lovasz_softmax_equals_the_brute_force_lovasz_extension(seed):
    rng = np.random.default_rng(seed)
    n, c = int(rng.integers(2, 9)), int(rng.integers(2, 4))
    probabilities = rng.dirichlet(np.ones(c), n)
    target = rng.integers(0, c, n)
    got = float(lovasz_softmax(torch.tensor(probabilities), torch.tensor(target)))
    assert got == pytest.approx(brute_force_lovasz(probabilities, target), abs=1e-9)


def test_lovasz_softmax_of_hard_predictions_is_one_minus_iou():
    target = np.array([0, 0, 1, 1, 1, 0, 2, 0])
    predicted = np.array([0, 1, 1, 1, 0, 0, 0, 0])  # class 2 missed entirely
    probabilities = np.eye(3)[predicted]
    ious = []
    for c in range(3):
        inter, union = np.sum((target == c) & (predicted == c)), np.sum((target == c) | (predicted == c))
        ious.append(inter / union)
    got = float(lovasz_softmax(torch.tensor(probabilities), torch.tensor(target)))
    assert got == pytest.approx(1 - np.mean(ious))
    assert float(lovasz_softmax(torch.tensor(np.eye(3)[target]), torch.tensor(target))) == 0.0  # perfect
    with pytest.raises(ValueError, match="probabilities"):
        lovasz_softmax(torch.zeros(4, 2), torch.zeros(3))


def test_lovasz_loss_module_and_config_options_train():
    logits = torch.randn(2, 2, 8, 8, requires_grad=True)
    target = (torch.rand(2, 1, 8, 8) > 0.7).long()
    loss = LovaszSoftmaxLoss()(logits, target)
    p = torch.softmax(logits, 1).movedim(1, -1).reshape(-1, 2)
    assert float(loss.detach()) == pytest.approx(float(lovasz_softmax(p.detach(), target.reshape(-1))))
    loss.backward()
    assert logits.grad is not None and float(logits.grad.abs().sum()) > 0
    weight = torch.ones(2)
    for name in ("lovasz", "dice_ce_lovasz"):
        fn = build_loss(RasterTrainingConfig(loss=name), weight)
        assert float(fn(logits.detach(), target)) > 0
    combined = build_loss(RasterTrainingConfig(loss="dice_ce_lovasz"), weight)(logits.detach(), target)
    dice_ce = build_loss(RasterTrainingConfig(loss="dice_ce"), weight)(logits.detach(), target)
    assert float(combined) == pytest.approx(float(dice_ce) + float(LovaszSoftmaxLoss()(logits.detach(), target)),
                                            rel=1e-5)


def test_column_folds_cover_every_column_once():
    assert column_folds(630, 3) == [(0, 210), (210, 420), (420, 630)]
    folds = column_folds(11, 3)
    assert folds == [(0, 4), (4, 8), (8, 11)]
    assert training_blocks(11, (4, 8)) == [(0, 4), (8, 11)]
    assert training_blocks(11, (0, 4)) == [(4, 11)]
    assert training_blocks(11, (8, 11)) == [(0, 8)]
    with pytest.raises(ValueError, match="at least 2"):
        column_folds(10, 1)
    with pytest.raises(ValueError, match="cannot make"):
        column_folds(2, 3)
    with pytest.raises(ValueError, match="not inside"):
        training_blocks(10, (5, 12))


def squares(seed: int, h: int = 32, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    label = np.zeros((h, w), np.uint8)
    for _ in range(6):
        y, x = rng.integers(0, h - 8), rng.integers(0, w - 8)
        label[y:y + 6, x:x + 6] = 1
    image = (label[None] * 0.8 + rng.normal(0, 0.05, (1, h, w))).astype(np.float32)
    return image, label


def test_cross_validation_predicts_each_fold_with_a_model_not_trained_on_it(monkeypatch):
    image, label = squares(0)
    cfg = RasterTrainingConfig(patch_size=16, epochs=3, iterations_per_epoch=2, batch_size=2, base_filters=4,
                               ensemble=2)
    trained_on = []

    def recording_train(images, labels, *args, **kwargs):
        trained_on.append([lab.shape for lab in labels])
        assert kwargs["validation"] is None
        return train_unet2d(images, labels, *args, **kwargs)

    monkeypatch.setattr("imaging_pipelines.remote_sensing.cross_validation.train_unet2d", recording_train)
    finished = []

    def fold_end(f, cols, out):  # called once per fold, its columns final, the later folds' still empty
        finished.append((f, cols))
        np.testing.assert_allclose(out[3][:, :, cols[0]:cols[1]].sum(0), 1.0, atol=1e-5)
        assert not out[3][:, :, cols[1]:].any()

    oof = cross_validate_columns(image, label, {"roof": 1}, cfg, folds=3, snapshots=[1, 3], fold_end=fold_end)
    assert finished == [(0, (0, 16)), (1, (16, 32)), (2, (32, 48))]
    assert trained_on == [[(32, 32)], [(32, 16), (32, 16)], [(32, 32)]]  # the other two folds' columns
    assert sorted(oof) == [1, 3]
    for prob in oof.values():
        assert prob.shape == (2, 32, 48)
        np.testing.assert_allclose(prob.sum(0), 1.0, atol=1e-5)  # every column predicted by exactly one fold
    assert not np.allclose(oof[1], oof[3])  # the snapshots differ
    with pytest.raises(ValueError, match="snapshot epochs"):
        cross_validate_columns(image, label, {"roof": 1}, cfg, folds=3, snapshots=[4])
