"""A lesion model's tumour operating point (``SegmentationModel.lesion_threshold``): ``lesion_classes`` reads
tumour where the lesion probability reaches the threshold (inside the network's brain for a brain-gated
model), ``predict`` applies the model's threshold, and the model file keeps it."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.brain_gate import gate_to_brain
from imaging_pipelines.medical.segment.operating_point import lesion_classes, parse_lesion_threshold
from imaging_pipelines.medical.segment.unet import (SegmentationModel, plan_dynunet_2d, predict, predict_probabilities,
                                                     slice_axis)

# one voxel per column: outside, brain, weak tumour, strong tumour, brain leaning to tumour, outside leaning to tumour
GATED = np.array([[0.8, 0.1, 0.1],
                  [0.1, 0.8, 0.1],
                  [0.05, 0.35, 0.6],
                  [0.02, 0.08, 0.9],
                  [0.1, 0.55, 0.35],
                  [0.5, 0.1, 0.4]], dtype=np.float32).T[:, :, None, None]  # [C=3, 6, 1, 1]


def test_no_threshold_is_the_argmax() -> None:
    assert lesion_classes(GATED, True, None).ravel().tolist() == [0, 1, 2, 2, 1, 0]
    assert lesion_classes(torch.from_numpy(GATED), True, None).dtype == np.uint8


def test_a_high_threshold_keeps_only_confident_tumour_as_brain_otherwise() -> None:
    assert lesion_classes(GATED, True, 0.7).ravel().tolist() == [0, 1, 1, 2, 1, 0]


def test_a_low_threshold_adds_tumour_only_inside_the_networks_brain() -> None:
    # the last voxel has p(tumour) 0.4 but the argmax puts it outside the brain: it stays outside
    assert lesion_classes(GATED, True, 0.3).ravel().tolist() == [0, 1, 2, 2, 2, 0]


def test_without_a_gate_the_threshold_splits_lesion_from_background() -> None:
    two = np.stack([1 - np.array([0.1, 0.3, 0.6, 0.9]), np.array([0.1, 0.3, 0.6, 0.9])])[:, :, None, None]
    assert lesion_classes(two, False, 0.25).ravel().tolist() == [0, 1, 1, 1]
    assert lesion_classes(two, False, 0.75).ravel().tolist() == [0, 0, 0, 1]


class _Ramp(torch.nn.Module):
    """A stand-in network: tumour logit rising with the input, brain in the middle, outside at the bottom."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(0.2 - x) * 12, torch.zeros_like(x), (x - 0.6) * 12], dim=1)


def _model(tmp_path, threshold: float | None) -> SegmentationModel:
    plan = plan_dynunet_2d(2.0, (16, 16), base_filters=4, max_filters=8)
    model = SegmentationModel(plan=plan, n_classes=3, label_values=[0, 0, 1], normalization="percentile",
                              spacing_mm=[2.0] * 3, brain_gate=True, lesion_threshold=threshold)
    loaded = SegmentationModel.load(model.save(tmp_path / "model.pt"))
    assert loaded.lesion_threshold == threshold and loaded.config()["lesion_threshold"] == threshold
    loaded.network = _Ramp()
    return loaded


def test_predict_applies_the_models_threshold(tmp_path) -> None:
    z, y, x = np.indices((4, 24, 24))
    image = Volume(array=(1000.0 * np.exp(-((y - 12.0) ** 2 + (x - 12.0) ** 2) / 60.0)).astype(np.float32),
                   spacing=(2.0, 2.0, 2.0))
    sizes = {}
    for t in (None, 0.3, 0.7, 0.9):
        model = _model(tmp_path, t)
        labels = np.asarray(predict(model, image, device="cpu", atlas_gate=False).array)
        probabilities = predict_probabilities(model, image, device="cpu", axis=slice_axis(image.spacing))
        expected = gate_to_brain(lesion_classes(probabilities, True, t)) >= 2
        assert np.array_equal(labels == 1, expected)
        sizes[t] = int(expected.sum())
    assert sizes[0.3] > sizes[None] > sizes[0.7] > sizes[0.9] > 0


def test_the_threshold_is_checked_and_older_files_load_as_argmax(tmp_path) -> None:
    plan = plan_dynunet_2d(2.0, (16, 16), base_filters=4, max_filters=8)
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(ValueError, match="lesion_threshold"):
            SegmentationModel(plan=plan, n_classes=3, brain_gate=True, lesion_threshold=bad)
    path = SegmentationModel(plan=plan, n_classes=3, brain_gate=True).save(tmp_path / "old.pt")
    blob = torch.load(path, weights_only=True)
    del blob["config"]["lesion_threshold"]  # a file written before the field existed
    torch.save(blob, path)
    assert SegmentationModel.load(path).lesion_threshold is None


def test_a_threshold_is_parsed_from_text() -> None:
    assert parse_lesion_threshold("argmax") is None and parse_lesion_threshold("0.7") == 0.7
    for bad, why in (("1.5", "not a probability"), ("0", "not a probability"), ("high", "neither")):
        with pytest.raises(ValueError, match=why):
            parse_lesion_threshold(bad)


def test_a_brain_too_small_to_be_a_whole_brain_is_flagged(tmp_path) -> None:
    from imaging_pipelines.medical.segment.brain_gate import MIN_PLAUSIBLE_BRAIN_ML, brain_volume_warning

    assert brain_volume_warning(MIN_PLAUSIBLE_BRAIN_ML) is None and brain_volume_warning(1400.0) is None
    assert "only 33 mL of brain" in brain_volume_warning(33.0) and "skull-stripped" in brain_volume_warning(33.0)
    z, y, x = np.indices((4, 24, 24))
    image = Volume(array=(1000.0 * np.exp(-((y - 12.0) ** 2 + (x - 12.0) ** 2) / 60.0)).astype(np.float32),
                   spacing=(2.0, 2.0, 2.0))
    labels = predict(_model(tmp_path, None), image, device="cpu", atlas_gate=False)
    probabilities = predict_probabilities(_model(tmp_path, None), image, device="cpu", axis=2)
    brain_voxels = int((gate_to_brain(lesion_classes(probabilities, True, None)) >= 1).sum())
    assert 0 < brain_voxels and labels.attributes["network_brain_ml"] == round(brain_voxels * 8 / 1000.0, 1)
    assert "of brain" in labels.attributes["brain_warning"]  # a few mL: far below a whole brain
    # a bigger image of the same "brain" at 1 cm voxels (125x the volume per voxel) is plausible: no warning
    big = predict(_model(tmp_path, None), Volume(array=image.array, spacing=(10.0, 10.0, 10.0)), device="cpu",
                  atlas_gate=False)
    assert big.attributes["network_brain_ml"] >= MIN_PLAUSIBLE_BRAIN_ML and "brain_warning" not in big.attributes
