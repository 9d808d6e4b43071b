"""2.5D input of the slice-wise lesion model (imaging_pipelines.medical.segment.slice_context): the stacked
channels are exactly the neighbouring slices, training samples take them one slab thickness apart across a
thick-slice axis, and inference stacks the adjacent slices of the grid it segments (thick-slice scans too)."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.slice_context import neighbour_indices, neighbour_step, stack_context


def test_stacked_channels_equal_the_neighbouring_slices_clamped_at_the_edges() -> None:
    slices = np.random.default_rng(0).normal(size=(7, 5, 4)).astype(np.float32)
    out = stack_context(slices, context=2, step=2)
    assert out.shape == (7, 5, 5, 4)
    for k in range(7):
        for j, offset in enumerate((-4, -2, 0, 2, 4)):
            assert np.array_equal(out[k, j], slices[min(max(k + offset, 0), 6)])
    torch_out = stack_context(torch.from_numpy(slices), context=2, step=2)
    assert np.array_equal(torch_out.numpy(), out)
    assert np.array_equal(stack_context(slices, 0)[:, 0], slices)
    assert neighbour_indices(3, np.array([0, 2]), 1).tolist() == [[0, 0, 1], [1, 2, 2]]
    assert (neighbour_step(6.5, 2.0), neighbour_step(1.0, 2.0), neighbour_step(2.0, 2.0)) == (3, 1, 1)
    with pytest.raises(ValueError):
        neighbour_indices(3, np.array([0]), 1, step=0)


def test_training_slices_carry_their_neighbours_one_slab_apart() -> None:
    """An image whose value is the i index: a sample cut across a 6 mm thick i axis of a 2 mm grid has channels
    i-3, i, i+3 (constant planes); across another axis the neighbours are one grid slice apart; the classes stay
    those of the centre slice."""
    from imaging_pipelines.medical.synth.prefetch import TrainingPair
    from imaging_pipelines.medical.synth.slices import SliceSampler

    image = np.broadcast_to(np.arange(20, dtype=np.float32), (24, 22, 20)).copy()  # value = i index
    target = np.zeros(image.shape, dtype=np.uint8)
    target[3:20, 2:20, 2:18] = 1
    target[10:14, 8:12, 7] = 2  # the lesion in one i-plane only
    rng = np.random.default_rng(0)
    thick = SliceSampler([TrainingPair(image, target, 0, 6.0)], (16, 16), 1.0, 2, rng, 1.0, context=1, spacing_mm=2.0)
    for _ in range(10):
        x, y = thick.sample(force_fg=True)
        assert x.shape == (3, 16, 16) and y.shape == (1, 16, 16) and (y == 2).any()
        assert all(np.ptp(x[c]) < 1e-4 for c in range(3))  # constant i-planes (after the intensity jitter)
        low, mid, high = (float(x[c, 0, 0]) for c in range(3))  # a * (7 + offset) + b, a in 0.9..1.1 (jitter)
        assert high - mid == pytest.approx(mid - low, abs=1e-4) and 0.89 * 3 < mid - low < 1.11 * 3
    random_axis = SliceSampler([TrainingPair(image, target, 0, 6.0)], (16, 16), 1.0, 2, rng, 0.0, context=1)
    for _ in range(20):
        x, _ = random_axis.sample(force_fg=True)
        if np.ptp(x[1]) < 1e-4:  # cut across i: neighbours one grid slice apart, not one slab
            assert 0.89 < float(x[1, 0, 0] - x[0, 0, 0]) < 1.11 and 0.89 < float(x[2, 0, 0] - x[1, 0, 0]) < 1.11
        else:  # cut across j or k: the image does not change along them
            assert np.array_equal(x[0], x[1]) and np.array_equal(x[1], x[2])
    xb, yb = thick.batch(4)
    assert tuple(xb.shape) == (4, 3, 16, 16) and tuple(yb.shape) == (4, 1, 16, 16)


def test_inference_stacks_the_adjacent_slices_of_a_thick_slice_scan(tmp_path) -> None:
    """A 2.5D model survives save/load; on a 6.5 mm scan it segments the slices across the thick axis, each
    with the adjacent 6.5 mm slices as channels, and returns labels on the scan's grid."""
    from imaging_pipelines.medical.segment.unet import SegmentationModel, plan_dynunet_2d, predict

    plan = plan_dynunet_2d(2.0, (16, 16), base_filters=4, max_filters=8)
    model = SegmentationModel(plan=plan, n_classes=3, in_channels=3, slice_context=1, label_values=[0, 0, 1],
                              normalization="percentile", spacing_mm=[2.0, 2.0, 2.0], resample_input=True)
    model = SegmentationModel.load(model.save(tmp_path / "m.pt"))
    assert model.slice_context == 1 and model.in_channels == 3
    seen: list[torch.Tensor] = []
    model.network.register_forward_hook(lambda _m, inputs, _o: seen.append(inputs[0].detach().float()))
    values = np.arange(6, dtype=np.float32)[:, None, None] * 10.0 + np.zeros((6, 40, 40), dtype=np.float32)
    scan = Volume(array=values, spacing=(1.0, 1.0, 6.5), origin=(-20.0, 20.0, -20.0),
                  direction=np.diag([1.0, -1.0, 1.0]))
    labels = predict(model, scan, device="cpu", atlas_gate=False)
    assert labels.same_geometry(scan) and labels.array.dtype == np.uint8
    batch = torch.cat(seen)
    assert batch.shape[1:] == (3, 16, 16)
    levels = batch[:, :, 8, 8]  # every window holds whole k-slices: one value per channel
    centre = levels[:, 1]
    ordered = torch.sort(torch.unique(centre)).values
    assert len(ordered) == 6  # the six 6.5 mm slices, none resampled away
    for row in levels:
        k = int(torch.searchsorted(ordered, row[1]))
        assert row[0] == ordered[max(k - 1, 0)] and row[2] == ordered[min(k + 1, 5)]
    with pytest.raises(ValueError, match="slice_context"):
        SegmentationModel(plan=plan, n_classes=3, in_channels=1, slice_context=1)
