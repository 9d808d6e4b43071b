"""Brain-gated and slice-wise (2D) lesion models: the gate keeps lesion voxels only inside the largest brain
component (holes filled), ``predict`` applies it and slices a scan across its thickest axis, and the model
file keeps both settings."""

from __future__ import annotations

import numpy as np
import torch

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.brain_gate import brain_component, gate_to_brain
from imaging_pipelines.medical.segment.unet import (SegmentationModel, plan_dynunet_2d, predict, slice_axis,
                                                     working_spacing)


def head(shape: tuple[int, int, int] = (12, 40, 40)) -> tuple[np.ndarray, np.ndarray]:
    """(class map, expected after the gate): a brain ball (1) holding a lesion (2) and a lesion island in a
    hole (class 0 shell inside the brain), plus a bright 'scalp' lesion blob not touching the brain."""
    z, y, x = np.indices(shape)
    classes = np.zeros(shape, dtype=np.uint8)
    brain = ((y - 20) ** 2 + (x - 18) ** 2 <= 12 ** 2) & (z >= 2) & (z <= 9)
    classes[brain] = 1
    classes[brain & ((y - 20) ** 2 + (x - 14) ** 2 <= 3 ** 2)] = 2
    classes[4:7, 18:23, 24:29] = 0  # a hole in the brain ...
    classes[5, 20, 26] = 2  # ... with a lesion voxel inside it
    expected = classes.copy()
    classes[2:10, 2:6, 34:38] = 2  # scalp fat segmented as lesion, apart from the brain
    return classes, expected


def test_gate_removes_lesions_outside_the_largest_brain_component_and_keeps_holes() -> None:
    classes, expected = head()
    gated = gate_to_brain(classes)
    assert gated.dtype == classes.dtype and np.array_equal(gated, expected)
    assert gated[5, 20, 26] == 2  # the island in a filled hole survives
    assert not brain_component(np.zeros((3, 3, 3), dtype=bool)).any()


class _ByIntensity(torch.nn.Module):
    """A stand-in network: class 0 below 0.25, 1 (brain) up to 0.7, 2 (lesion) above, from the input."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([(0.25 - x) * 10, -(x - 0.25) * (x - 0.7) * 40, (x - 0.7) * 10], dim=1)


def _gated_model(tmp_path, spacing: float = 2.0) -> SegmentationModel:
    plan = plan_dynunet_2d(spacing, (16, 16), base_filters=4, max_filters=8)
    model = SegmentationModel(plan=plan, n_classes=3, label_values=[0, 0, 7], normalization="percentile",
                              spacing_mm=[spacing] * 3, resample_input=True, brain_gate=True)
    model = SegmentationModel.load(model.save(tmp_path / "gated.pt"))
    assert model.brain_gate and model.plan.spatial_dims == 2 and model.label_values == [0, 0, 7]
    model.network = _ByIntensity()
    return model


def test_predict_of_a_gated_2d_model_keeps_only_the_lesion_inside_the_brain(tmp_path) -> None:
    classes, expected = head()
    image = np.choose(classes, [0.0, 500.0, 1000.0]).astype(np.float32)  # percentile-normalised: 0, 0.5, 1
    scan = Volume(array=image, spacing=(2.0, 2.0, 6.0), origin=(-40.0, 40.0, -30.0), direction=np.diag([1.0, -1.0, 1.0]))
    labels = predict(_gated_model(tmp_path), scan, device="cpu")
    assert labels.same_geometry(scan) and labels.array.dtype == np.uint8
    assert np.array_equal(labels.array, np.where(expected == 2, 7, 0))
    ungated = _gated_model(tmp_path)
    ungated.brain_gate = False
    assert (predict(ungated, scan, device="cpu").array == 7).sum() > (labels.array == 7).sum()


def test_2d_models_slice_across_the_thickest_axis_and_resample_only_in_plane(tmp_path) -> None:
    assert slice_axis((0.78, 0.78, 6.5)) == 2 and slice_axis((5.0, 1.0, 1.0)) == 0 and slice_axis((1.0, 1.0, 1.0)) == 2
    model = _gated_model(tmp_path)
    thick = Volume(array=np.zeros((25, 64, 64), dtype=np.float32), spacing=(0.78, 0.78, 6.5))
    assert working_spacing(model, thick, slice_axis(thick.spacing)) == [2.0, 2.0, 6.5]
    sagittal = Volume(array=np.zeros((30, 30, 9), dtype=np.float32), spacing=(5.0, 1.0, 1.0))
    assert working_spacing(model, sagittal, slice_axis(sagittal.spacing)) == [5.0, 2.0, 2.0]
    classes, expected = (a.transpose(2, 1, 0).copy() for a in head())  # slices along x: the slice axis is i
    image = np.choose(classes, [0.0, 500.0, 1000.0]).astype(np.float32)
    scan = Volume(array=image, spacing=(6.0, 2.0, 2.0))
    labels = predict(model, scan, device="cpu")
    assert labels.same_geometry(scan) and np.array_equal(labels.array, np.where(expected == 2, 7, 0))


def test_gate_with_a_prior_drops_brain_the_prior_rules_out() -> None:
    classes, expected = head()
    neck = np.zeros(classes.shape, dtype=bool)
    neck[:, 26:, :] = True  # the prior rules out the lower part of every slice ...
    gated = gate_to_brain(classes, prior=~neck)
    assert not gated[neck].any()  # ... so nothing is kept there, lesion or brain
    assert np.array_equal(gated[~neck], gate_to_brain(classes)[~neck])  # and the rest is gated as before


def test_atlas_brain_registers_onto_a_generated_head_and_rules_out_the_neck() -> None:
    """A domain-randomised case (deformed MNI152 anatomy, random contrast, 3 mm): the registered template
    brain matches the case's own brain mask, and a stand-in network that also calls a neck slab brain (with
    lesion) below it loses that slab, not the lesion inside the brain."""
    import dataclasses

    from imaging_pipelines.medical.segment.atlas_brain import agreement, atlas_brain_mask, trusted_atlas_brain
    from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig

    case = LesionGenerator(dataclasses.replace(SynthConfig(spacing_mm=3.0)), seed=11).case(0)
    brain = case.brain.array > 0
    atlas = atlas_brain_mask(case.image)
    assert atlas.mask.shape == brain.shape and agreement(atlas.mask, brain) >= 0.85
    assert 0.7 * brain.sum() < atlas.mask.sum() < 1.3 * brain.sum()

    classes = brain.astype(np.uint8)
    classes[case.label.array > 0] = 2
    lowest = int(np.nonzero(brain.any(axis=(1, 2)))[0].min())  # z = i axis of the LPS grid: S is up (z grows)
    slab = np.zeros(brain.shape, dtype=bool)
    slab[max(lowest - 6, 0):lowest + 2, 10:-10, 10:-10] = True  # a neck cross-section joined to the brain
    classes[slab & ~brain] = 1
    classes[slab & ~brain & (np.indices(brain.shape)[1] % 4 == 0)] = 2
    prior, note = trusted_atlas_brain(case.image, classes >= 1)
    assert prior is not None and "registered MNI152 brain" in note
    gated = gate_to_brain(classes, prior)
    lesion_in_slab = (gated == 2) & slab & ~brain
    assert lesion_in_slab.sum() < 0.1 * ((classes == 2) & slab & ~brain).sum()
    inside = (case.label.array > 0) & atlas.mask
    assert (gated[inside] == 2).mean() > 0.95  # the lesion inside the brain is kept


def test_untrusted_atlas_registration_falls_back_to_the_network_brain() -> None:
    from imaging_pipelines.medical.segment.atlas_brain import trusted_atlas_brain

    noise = Volume(array=np.random.default_rng(0).random((20, 40, 40), dtype=np.float32), spacing=(3.0, 3.0, 3.0))
    network = np.zeros(noise.spatial_shape, dtype=bool)
    network[2:4, 2:6, 2:6] = True  # a tiny 'brain' nowhere near a head's
    prior, note = trusted_atlas_brain(noise, network)
    assert prior is None and note.startswith("network brain only")
