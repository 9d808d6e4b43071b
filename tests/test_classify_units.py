"""Image classification building blocks: metrics against hand-computed values, save / load, Grad-CAM
orientation, inputs of both domains, the patient label table and the catalog block."""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.classify.metrics import calibration, confusion, evaluate, majority_accuracy, roc_auc
from imaging_pipelines.config.classification import ClassificationConfig, ClassifierTraining
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.volume import Volume


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_metrics_match_hand_computed_values():
    p = np.array([[0.9, 0.1], [0.6, 0.4], [0.3, 0.7], [0.2, 0.8], [0.55, 0.45]])
    y = np.array([0, 1, 1, 0, 1])
    # positives score 0.4, 0.7, 0.45; negatives 0.1, 0.8: each positive beats 0.1 only -> 3 of 6 pairs
    assert roc_auc(p, y) == pytest.approx(0.5)
    assert confusion(y, p.argmax(1), 2) == [[1, 1], [2, 1]]
    cal = calibration(p, y, bins=10)
    # confidences 0.9 (right), 0.6 (wrong), 0.7 (right), 0.8 (wrong), 0.55 (wrong)
    expected = (abs(1 - 0.9) + abs(0 - 0.6) + abs(1 - 0.7) + abs(0 - 0.8) + abs(0 - 0.55)) / 5
    assert cal["ece"] == pytest.approx(expected, abs=1e-4)
    assert sum(b["count"] for b in cal["bins"]) == 5
    ev = evaluate(p, y, ["a", "b"])
    assert ev["accuracy"] == pytest.approx(0.4) and ev["n"] == 5
    assert majority_accuracy(np.array([1, 1, 0]), y) == pytest.approx(0.6)


def test_multiclass_auc_is_one_vs_rest_macro_and_undefined_for_one_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 60)
    p = rng.dirichlet(np.ones(3), 60)
    from sklearn.metrics import roc_auc_score

    assert roc_auc(p, y) == pytest.approx(np.mean([roc_auc_score(y == c, p[:, c]) for c in range(3)]))
    assert roc_auc(p, np.zeros(60, int)) is None
    assert evaluate(p[:0], y[:0], ["a", "b", "c"])["accuracy"] is None


def _tiny_training(**kw) -> ClassifierTraining:
    return ClassifierTraining(epochs=kw.pop("epochs", 3), base_filters=4, batch_size=8, input_size=16, **kw)


def _bright_square_data(n: int, seed: int):
    """Class 1: a bright 4x4 square somewhere in noise; its mask; class 0: noise only."""
    rng = np.random.default_rng(seed)
    images = rng.normal(0, 1, (n, 1, 16, 16)).astype(np.float32)
    labels = np.arange(n) % 2
    masks = np.zeros((n, 16, 16), bool)
    for i in np.flatnonzero(labels):
        r, c = rng.integers(0, 12, 2)
        images[i, 0, r:r + 4, c:c + 4] += 4.0
        masks[i, r:r + 4, c:c + 4] = True
    return images, labels, masks


def test_training_learns_a_planted_square_and_save_load_gives_the_same_probabilities(tmp_path):
    from imaging_pipelines.classify.train import load_classifier, predict_proba, save_classifier, train_classifier

    x, y, _ = _bright_square_data(64, 0)
    clf = train_classifier(x, y, ["empty", "square"], _tiny_training(epochs=6), validation=(x[:16], y[:16]))
    assert len(clf.curve) == 6 and "validation_loss" in clf.curve[0]
    xt, yt, _ = _bright_square_data(32, 1)
    p = predict_proba(clf, xt)
    assert p.shape == (32, 2) and np.allclose(p.sum(1), 1, atol=1e-5)
    assert (p.argmax(1) == yt).mean() >= 0.8
    save_classifier(clf, tmp_path / "m.pt")
    again = load_classifier(tmp_path / "m.pt")
    assert again.class_names == ["empty", "square"]
    assert np.allclose(predict_proba(again, xt), p, atol=1e-6)


def test_grad_cam_is_high_on_the_evidence_not_flipped():
    """MONAI's default CAM normaliser maps the maximum to 0; ours keeps high = salient (Grad-CAM and the
    default LayerCAM + mirror saliency, for a given class and for each image's predicted class)."""
    from imaging_pipelines.classify.saliency import grad_cam, saliency_map, top_decile_share
    from imaging_pipelines.classify.train import train_classifier

    x, y, masks = _bright_square_data(96, 2)
    clf = train_classifier(x, y, ["empty", "square"], _tiny_training(epochs=8, architecture="resnet"))
    pos = np.flatnonzero(y)[:16]
    for maps in (grad_cam(clf, x[pos], class_index=1), saliency_map(clf, x[pos], class_index=1),
                 saliency_map(clf, x[pos])):
        assert maps.shape == (16, 16, 16) and maps.min() >= 0 and maps.max() <= 1 + 1e-6
        inside = [float(m[k].mean()) for m, k in zip(maps, masks[pos])]
        outside = [float(m[~k].mean()) for m, k in zip(maps, masks[pos])]
        assert np.mean(inside) > np.mean(outside)
    assert top_decile_share(np.eye(4), np.eye(4, dtype=bool)) == 1.0


def test_class_weights_are_inverse_frequency_with_mean_one():
    from imaging_pipelines.classify.train import class_weights

    w = class_weights(np.array([0, 0, 0, 1]), 3, "inverse_frequency").numpy()
    assert w[2] == 0 and w[1] == pytest.approx(3 * w[0]) and w[:2].mean() == pytest.approx(1.0)
    assert class_weights(np.array([0, 1]), 2, "none").tolist() == [1.0, 1.0]


def test_radiograph_input_resizes_a_planar_volume_and_refuses_a_3d_scan():
    from imaging_pipelines.medical.classify import radiograph_input

    plane = np.zeros((1, 200, 160), np.float32)
    plane[0, 50:150, 40:120] = 100.0
    x = radiograph_input(Volume(plane), 32)
    assert x.shape == (1, 32, 32) and x.min() == 0.0 and x.max() == 1.0
    assert x[0, 16, 16] == 1.0 and x[0, 1, 1] == 0.0
    with pytest.raises(ValueError, match="3 slices"):
        radiograph_input(Volume(np.zeros((3, 8, 8), np.float32)), 32)


def test_tile_class_takes_the_dominant_class_or_none_for_mixed_tiles():
    from imaging_pipelines.remote_sensing.tile_classify import tile_class, tile_input

    ref = np.zeros((10, 10), np.uint8)
    ref[:6] = 1
    assert tile_class(ref, [0, 1, 2], 0.5) == 1
    assert tile_class(ref, [0, 1, 2], 0.7) is None
    assert tile_class(ref, [0, 2], 0.5) is None  # 1 is not a class: 40 % background only
    valid = np.zeros((10, 10), bool)
    valid[6:] = True
    assert tile_class(ref, [0, 1], 0.5, valid) == 0
    img = np.ones((2, 20, 20), np.float32)
    img[:, :10, :10] = np.nan
    out = tile_input(img, 10)
    assert out.shape == (2, 10, 10) and np.isnan(out[:, :5, :5]).all() and np.allclose(out[:, 5:, 5:], 1)


def test_label_table_maps_identifiers_to_pseudonyms_and_names_the_file_on_errors(tmp_path):
    from imaging_pipelines.core.privacy import pseudonymise
    from imaging_pipelines.medical.classify import read_label_table

    classes = {"normal": 0, "pneumonia": 1}
    good = tmp_path / "labels.csv"
    good.write_text("patient_id,finding\nP-001,pneumonia\nP-002,0\n\n")
    table = read_label_table(str(good), "patient_id", "finding", classes)
    assert table[pseudonymise("P-001", "dicom-patient-id")] == 1 and table[pseudonymise("P-002", "inbox-subject")] == 0
    assert len(table) == 6  # each identifier under the three ways the inbox scan names partitions
    bad = tmp_path / "bad.csv"
    bad.write_text("patient_id,finding\nP-001,covid\n")
    with pytest.raises(ImagingInputError, match="bad.csv.*row 2.*'covid'"):
        read_label_table(str(bad), "patient_id", "finding", classes)
    with pytest.raises(ImagingInputError, match="missing"):
        read_label_table(str(good), "patient_id", "label", classes)
    twice = tmp_path / "twice.csv"
    twice.write_text("patient_id,finding\nP-9,normal\nP-9,pneumonia\n")
    with pytest.raises(ImagingInputError, match="twice") as info:
        read_label_table(str(twice), "patient_id", "finding", classes)
    assert "P-9" not in str(info.value)


def test_classification_block_is_off_by_default_and_validated():
    assert ClassificationConfig().enabled is False
    cfg = ClassificationConfig(enabled=True, classes={"b": 2, "a": 0}, labels={"source": "tile_reference"})
    assert cfg.class_names == ["a", "b"]
    with pytest.raises(ValueError, match="two classes"):
        ClassificationConfig(enabled=True, classes={"a": 0}, labels={"source": "tile_reference"})
    with pytest.raises(ValueError, match="needs 'file'"):
        ClassificationConfig(enabled=True, classes={"a": 0, "b": 1})


def test_strided_upsampler_puts_a_cell_on_the_pixel_it_is_centred_on():
    """A stride-8 cell j is centred on input pixel 8 j; MONAI's default upsampling puts it 3.5 px further."""
    import torch

    from imaging_pipelines.classify.saliency import strided_upsampler

    cells = torch.zeros(1, 1, 8, 8)
    cells[0, 0, 3, 5] = 1.0
    up = strided_upsampler(8)((64, 64))(cells)[0, 0].numpy()
    assert np.unravel_index(up.argmax(), up.shape) == (24, 40) and up.max() == pytest.approx(1.0)
    default = strided_upsampler(None)((64, 64))(cells)[0, 0].numpy()
    peak = np.argwhere(default == default.max()).mean(axis=0)
    assert peak == pytest.approx((27.5, 43.5))


def test_reliability_diagram_draws_each_split():
    """The cohort evaluation's calibration figure renders (it once called a renamed helper and failed)."""
    import io

    from PIL import Image

    from imaging_pipelines.report.figures import reliability_diagram

    bins = [{"count": 10, "mean_confidence": 0.3, "accuracy": 0.2}, {"count": 0, "mean_confidence": 0.5, "accuracy": 0.0},
            {"count": 12, "mean_confidence": 0.8, "accuracy": 0.75}]
    png = reliability_diagram({"validation": {"calibration": {"bins": bins, "ece": 0.07}},
                               "test": {"calibration": {"bins": bins[:1], "ece": 0.1}}})
    image = Image.open(io.BytesIO(png))
    assert image.format == "PNG" and image.width > 100 and image.height > 100
