"""Issue 18's classification figures, measured on held-out synthetic data with known ground truth:

- radiographs (synthetic chest-radiograph-like images, a planted opacity for the positive class): ROC AUC
  >= 0.95 on held-out images and above a logistic regression on intensity histograms;
- land-cover tiles of the demo scenes (held-out scenes): accuracy >= 0.90 and above the majority predictor;
- Grad-CAM: >= 50 % of the top-decile saliency inside the planted opacity (mean over held-out positives):
  met by the default saliency (LayerCAM, the Grad-CAM variant, with the left-right mirror's map added):
  0.524 on the held-out set (seed 3); plain Grad-CAM 0.479 (not met). Layer and method were chosen on a
  separate selection set (seed 4, 98 positives): layer - Grad-CAM 0.44 at the third ResNet stage (1/8
  resolution) against 0.37 at the second and 0.32 at the fourth; method at the third stage - Grad-CAM 0.441,
  Grad-CAM + mirror 0.453, Grad-CAM++ 0.332, LayerCAM 0.475, LayerCAM + mirror 0.501 (chosen), Grad-CAM
  averaged over noisy copies (SmoothGrad-like, sd 0.1 / 0.2 / 0.4) 0.438 / 0.431 / 0.406, guided Grad-CAM
  0.429, LayerCAM of the second stage 0.380.

CPU-sized: 64-pixel radiographs and 32-pixel tiles, small MONAI ResNets, a few epochs (seeded).
"""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.classify.metrics import evaluate, majority_accuracy
from imaging_pipelines.config.classification import ClassifierTraining

pytestmark = pytest.mark.usefixtures("one_torch_thread")


RADIOGRAPH = ClassifierTraining(input_size=64, base_filters=8, epochs=10, batch_size=16, learning_rate=2e-3,
                                normalise="per_image", augmentation="flip", seed=0)
TILES = ClassifierTraining(input_size=32, base_filters=8, epochs=10, batch_size=16, learning_rate=2e-3,
                           normalise="dataset", augmentation="dihedral", seed=0)


@pytest.fixture(scope="module")
def radiographs():
    """(classifier, held-out test set, train set) of the radiograph task."""
    from imaging_pipelines.classify.train import train_classifier
    from imaging_pipelines.tools.demo.radiographs import synthetic_radiographs

    train = synthetic_radiographs(300, 64, seed=1)
    validation = synthetic_radiographs(60, 64, seed=2)
    test = synthetic_radiographs(200, 64, seed=3)
    clf = train_classifier(train.images[:, None], train.labels, ["normal", "opacity"], RADIOGRAPH,
                           validation=(validation.images[:, None], validation.labels))
    return clf, test, train


def histogram_features(images: np.ndarray, bins: int = 32) -> np.ndarray:
    """Per image: the histogram of its intensities scaled to its 0.5-99.5 percentiles (fractions of pixels)."""
    out = []
    for image in images:
        lo, hi = np.percentile(image, [0.5, 99.5])
        scaled = np.clip((image - lo) / (hi - lo), 0, 1)
        out.append(np.histogram(scaled, bins=bins, range=(0, 1))[0] / image.size)
    return np.asarray(out)


def test_radiograph_classifier_auc_and_histogram_baseline(radiographs):
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    from imaging_pipelines.classify.train import predict_proba

    clf, test, train = radiographs
    ev = evaluate(predict_proba(clf, test.images[:, None]), test.labels, clf.class_names)
    baseline = make_pipeline(StandardScaler(), LogisticRegression(max_iter=5000, class_weight="balanced"))
    baseline.fit(histogram_features(train.images), train.labels)
    baseline_auc = roc_auc_score(test.labels, baseline.predict_proba(histogram_features(test.images))[:, 1])
    print(f"radiographs: held-out ROC AUC {ev['roc_auc']}, accuracy {ev['accuracy']}, ECE "
          f"{ev['calibration']['ece']}; histogram logistic regression AUC {baseline_auc:.4f}")
    assert ev["roc_auc"] >= 0.95
    assert ev["roc_auc"] > baseline_auc
    assert sum(map(sum, ev["confusion"])) == 200


def _opacity_shares(maps: np.ndarray, masks: np.ndarray, what: str) -> np.ndarray:
    from imaging_pipelines.classify.saliency import top_decile_share

    shares = np.asarray([top_decile_share(m, mask) for m, mask in zip(maps, masks)])
    print(f"{what}: mean top-decile share inside the opacity {shares.mean():.3f} (median {np.median(shares):.3f}, "
          f"chance {masks.mean():.3f}) over {len(shares)} held-out positives")
    return shares


def test_saliency_concentrates_on_the_planted_opacity(radiographs):
    from imaging_pipelines.classify.saliency import grad_cam, saliency_map

    clf, test, _ = radiographs
    positives = np.flatnonzero(test.labels == 1)
    images, masks = test.images[positives][:, None], test.masks[positives]
    plain = _opacity_shares(grad_cam(clf, images, class_index=1), masks, "Grad-CAM")  # measured 0.479
    maps = saliency_map(clf, images, class_index=1)  # LayerCAM + mirror, the default
    assert maps.shape == masks.shape and maps.min() >= 0 and maps.max() <= 1
    shares = _opacity_shares(maps, masks, "LayerCAM + mirror (default)")  # measured 0.524
    assert shares.mean() >= 0.5 and shares.mean() > plain.mean()
    with pytest.raises(ValueError, match="unknown saliency method"):
        saliency_map(clf, images[:1], method="occlusion")


def test_land_cover_tiles_of_held_out_demo_scenes():
    from imaging_pipelines.classify.train import predict_proba, train_classifier
    from imaging_pipelines.tools.demo.land_cover_tiles import TILE_CLASSES, scene_tiles

    train, validation, test = scene_tiles([0, 1, 2, 3, 4]), scene_tiles([5]), scene_tiles([6, 7])
    names = list(TILE_CLASSES)  # values 0, 1, 2 = indices
    clf = train_classifier(train.images, train.classes, names, TILES, validation=(validation.images, validation.classes))
    ev = evaluate(predict_proba(clf, test.images), test.classes, names)
    majority = majority_accuracy(train.classes, test.classes)
    print(f"tiles: held-out accuracy {ev['accuracy']} (majority predictor {majority:.4f}), ROC AUC "
          f"{ev['roc_auc']}, confusion {ev['confusion']}")
    assert ev["accuracy"] >= 0.90
    assert ev["accuracy"] > majority
