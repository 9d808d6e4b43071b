"""The domain-randomised lesion generator (imaging_pipelines.medical.synth): reproducibility, lesion
sub-regions, label/image alignment, thick-slice geometry in world coordinates, randomised intensities, the
percentile normalisation, resampling models and the versioned model cache. Coarse grids keep it fast."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.synth import anatomy
from imaging_pipelines.medical.synth.acquisition import simulate_acquisition, thick_slice_volume
from imaging_pipelines.medical.synth.generator import N_TISSUES, LesionGenerator, SynthConfig
from imaging_pipelines.medical.synth.intensity import IntensityParams
from imaging_pipelines.medical.synth.lesions import LesionParams

COARSE = SynthConfig(spacing_mm=5.0)


@pytest.fixture(scope="module")
def coarse() -> LesionGenerator:
    return LesionGenerator(COARSE, seed=7)


def test_same_seed_and_index_give_the_same_case(coarse: LesionGenerator) -> None:
    again = LesionGenerator(COARSE, seed=7)
    a, b = coarse.case(3), again.case(3)
    assert np.array_equal(a.image.array, b.image.array) and np.array_equal(a.label.array, b.label.array)
    assert a.draws == b.draws
    other = LesionGenerator(COARSE, seed=8).case(3)
    assert not np.array_equal(a.image.array, other.image.array)
    assert not np.array_equal(a.label.array, coarse.case(4).label.array)


def test_every_lesion_sub_region_is_drawn_inside_the_brain() -> None:
    cfg = dataclasses.replace(COARSE, lesions=LesionParams(count=(2, 2), radius_mm=(15.0, 20.0), core_probability=1.0,
                                                           oedema_probability=1.0, mass_effect_probability=0.0))
    case = LesionGenerator(cfg, seed=1).case(0)
    values = set(np.unique(case.label.array).tolist())
    assert values == {0, 1, 2, 3}  # background, enhancing rim, necrotic core, oedema
    assert case.label.array.dtype == np.uint8
    assert case.draws["n_lesions"] == 2


def test_labels_lie_exactly_on_the_image_grid() -> None:
    """With every blur / noise / bias / gamma / thick-slice draw switched off the image is constant on each label
    region, so lesion voxels have the lesion's own values only: label and image are aligned voxel for voxel."""
    flat = IntensityParams(std=(0.0, 0.0), blur_sigma_vox=(0.0, 0.0), bias_sd=(0.0, 0.0), gamma_log_sd=0.0,
                           noise_sd=(0.0, 0.0))
    cfg = dataclasses.replace(COARSE, intensity=flat, anisotropic_probability=0.0,
                              lesions=LesionParams(count=(1, 1), radius_mm=(15.0, 20.0), core_probability=0.0,
                                                   oedema_probability=0.0, mass_effect_probability=0.0))
    case = LesionGenerator(cfg, seed=2).case(0)
    assert case.image.same_geometry(case.label)
    lesion = case.label.array == 1
    assert lesion.sum() > 10
    assert np.unique(case.image.array[lesion]).size == 1
    assert not np.isin(case.image.array[~lesion], np.unique(case.image.array[lesion])).all()
    brain = case.brain.array > 0  # the brain mask is aligned too: CSF / GM / WM values inside, none outside
    assert case.brain.same_geometry(case.image) and case.brain.array.dtype == np.uint8 and brain[lesion].all()
    tissue_values = np.unique(case.image.array[brain & ~lesion])
    assert tissue_values.size == 3 and not np.isin(case.image.array[~brain], tissue_values).any()


def test_intensities_are_randomised_between_draws(coarse: LesionGenerator) -> None:
    means = []
    for index in range(3):
        case = coarse.case(index)
        brain = case.image.array[case.label.array == 0]
        means.append((float(np.median(brain)), float(np.percentile(brain, 90))))
        assert np.isfinite(case.image.array).all() and case.image.array.dtype == np.float32
    assert len({round(m[0], 3) for m in means}) == 3 and len({round(m[1], 3) for m in means}) == 3


def test_every_tumour_is_drawn_visible_against_grey_and_white_matter() -> None:
    """The rim / solid tumour mean lies at least ``lesion_contrast[0]`` beyond both grey and white matter
    (above the brighter or below the darker), hyper- and hypo-intense both drawn. Drawn relative to their mean
    (the former rule) it fell between them, or within 0.1 of one, in 45 % of 2000 draws: invisible lesions."""
    from imaging_pipelines.medical.synth.intensity import label_means

    params = IntensityParams()
    hyper = 0
    for seed in range(500):
        means, _ = label_means(np.random.default_rng(seed), 14, (1, 2, 3), (11, 12, 13), params)
        gm, wm, rim = means[2], means[3], means[11]
        assert min(abs(rim - gm), abs(rim - wm)) >= params.lesion_contrast[0] - 1e-9
        assert not min(gm, wm) < rim < max(gm, wm)
        hyper += rim > max(gm, wm)
    assert 150 < hyper < 450


def test_generated_grid_is_lps_millimetres_on_the_template_brain(coarse: LesionGenerator) -> None:
    case = coarse.case(0)
    assert np.allclose(case.image.direction, np.eye(3)) and case.image.spacing == (5.0, 5.0, 5.0)
    centre = case.image.index_to_world_lps() @ np.array([*(np.array(case.image.spatial_shape[::-1]) - 1) / 2, 1.0])
    assert np.allclose(centre[:3], coarse.centre_mm, atol=2.5)
    assert N_TISSUES == len(anatomy.TISSUES)


def test_thick_slice_acquisition_keeps_world_geometry() -> None:
    """A bright plane at a known world position stays there after a 6 mm acquisition along each index axis of an
    oblique (LAS-like) grid; the thick volume keeps origin and direction and has the thickness as spacing."""
    direction = np.diag([1.0, -1.0, 1.0])
    shape = (30, 32, 34)
    base = Volume(array=np.zeros(shape, dtype=np.float32), spacing=(1.0, 1.5, 2.0), origin=(10.0, -5.0, 3.0),
                  direction=direction)
    for axis in range(3):
        array = np.zeros(shape, dtype=np.float32)
        index = [slice(None)] * 3
        index[2 - axis] = slice(12, 15)  # a 3-voxel slab across index axis `axis`
        array[tuple(index)] = 100.0
        vol = base.with_array(array)
        low, back = simulate_acquisition(vol, axis, 6.0)
        assert low.origin == vol.origin and np.allclose(low.direction, direction)
        assert low.spacing[axis] == pytest.approx(6.0)
        assert low.spacing[(axis + 1) % 3] == vol.spacing[(axis + 1) % 3]
        extent = np.array(vol.spatial_shape[::-1]) * np.array(vol.spacing)
        assert abs(np.array(low.spatial_shape[::-1])[axis] * 6.0 - extent[axis]) <= 3.0
        assert back.same_geometry(vol)

        def world_centroid(v: Volume) -> float:
            profile = np.asarray(v.array).sum(axis=tuple(a for a in range(3) if a != 2 - axis))
            idx = (profile * np.arange(profile.size)).sum() / profile.sum()
            return float((v.index_to_world_lps() @ np.array([*(idx if a == axis else 0 for a in range(3)), 1.0]))[axis])

        assert world_centroid(back) == pytest.approx(world_centroid(vol), abs=0.6 * 6.0 / 2)
        assert np.asarray(back.array).max() < 100.0  # the slab was blurred by the thick slices
    with pytest.raises(ValueError, match="axis"):
        thick_slice_volume(base, 3, 5.0)


def test_anatomy_from_nilearn_when_shared_data_is_absent(tmp_path, monkeypatch) -> None:
    pytest.importorskip("nilearn")
    shared = anatomy.load_anatomy()
    monkeypatch.setenv("IMAGING_SHARED_DATA", str(tmp_path))
    anatomy.load_anatomy.cache_clear()
    try:
        fallback = anatomy.load_anatomy()
        assert fallback.source == "nilearn"
        assert fallback.labels.same_geometry(shared.labels)
        assert set(np.unique(fallback.labels.array).tolist()) == {0, 1, 2, 3}
        agree = np.mean(fallback.labels.array == shared.labels.array)
        assert agree > 0.99
    finally:
        anatomy.load_anatomy.cache_clear()


def test_percentile_normalisation_ignores_contrast_scale_and_offset() -> None:
    from imaging_pipelines.medical.segment.unet import normalize_intensity

    rng = np.random.default_rng(0)
    image = np.zeros((20, 20, 20), dtype=np.float32)
    image[5:15, 5:15, 5:15] = rng.uniform(100, 300, (10, 10, 10))
    a = normalize_intensity(image, "percentile")
    b = normalize_intensity(image * 7.5 + 40.0, "percentile")
    assert np.allclose(a, b, atol=1e-5)
    assert a.min() >= -0.5 and a.max() <= 2.0 and abs(float(np.percentile(a[image > 0], 99.5)) - 1.0) < 1e-3


def test_resampling_model_segments_a_thick_slice_scan_on_its_own_grid(tmp_path) -> None:
    """A model with ``resample_input`` survives save/load and returns labels on the scan's grid (spacing, origin,
    direction), whatever its own spacing."""
    from imaging_pipelines.medical.segment.unet import SegmentationModel, plan_dynunet, predict

    model = SegmentationModel(plan=plan_dynunet((4.0,) * 3, (16, 16, 16), base_filters=4, max_filters=8), n_classes=2,
                              normalization="percentile", spacing_mm=[4.0, 4.0, 4.0], resample_input=True)
    model = SegmentationModel.load(model.save(tmp_path / "m.pt"))
    assert model.resample_input and model.normalization == "percentile"
    scan = Volume(array=np.random.default_rng(1).uniform(0, 100, (6, 40, 40)).astype(np.float32),
                  spacing=(2.0, 2.0, 6.5), origin=(-40.0, 40.0, -20.0), direction=np.diag([1.0, -1.0, 1.0]))
    labels = predict(model, scan, device="cpu")
    assert labels.same_geometry(scan) and labels.array.dtype == np.uint8
    assert set(np.unique(labels.array).tolist()) <= {0, 1}


@pytest.mark.slow
def test_tiny_synthetic_training_is_cached_by_version_and_segments_a_thick_slice_scan(tmp_path) -> None:
    """Train 3 iterations on 8 mm cases (a smoke test of the loop, not of accuracy), reuse it from the cache,
    load it as a normal project model file and segment an anisotropic scan back on the scan's own grid."""
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict
    from imaging_pipelines.medical.synth.model_cache import synthetic_model
    from imaging_pipelines.medical.synth.train import SynthTrainingConfig, synth_version

    synth = dataclasses.replace(COARSE, spacing_mm=8.0)
    tiny = SynthTrainingConfig(patch_size=(32, 32), iterations=3, batch_size=2, base_filters=4, max_filters=16,
                               pool_size=1, refresh_every=2)
    import torch

    threads = torch.get_num_threads()
    path, report, trained = synthetic_model(synth, tiny, cache=tmp_path, device="cpu", log=lambda _m: None)
    assert trained and path.is_file() and report["cases_generated"] == 2 and len(report["curve"]) == 1
    assert torch.get_num_threads() == threads  # training on cpu_threads=1 restores the caller's setting
    assert path.name == f"synth_lesion-{synth_version(synth, tiny, 0)}.pt"
    again, _, trained_again = synthetic_model(synth, tiny, cache=tmp_path, device="cpu", log=lambda _m: None)
    assert again == path and not trained_again
    assert synth_version(synth, dataclasses.replace(tiny, iterations=4), 0) != synth_version(synth, tiny, 0)
    assert synth_version(dataclasses.replace(synth, elastic_mm=3.0), tiny, 0) != synth_version(synth, tiny, 0)
    model = SegmentationModel.load(path)
    assert model.resample_input and model.spacing_mm == [8.0, 8.0, 8.0] and model.normalization == "percentile"
    assert model.brain_gate and model.n_classes == 3 and model.label_values == [0, 0, 1]
    assert model.plan.spatial_dims == 2 and model.plan.patch_size == [32, 32]
    scan = Volume(array=np.random.default_rng(1).uniform(0, 100, (6, 40, 40)).astype(np.float32),
                  spacing=(2.0, 2.0, 6.5), origin=(-40.0, 40.0, -20.0), direction=np.diag([1.0, -1.0, 1.0]))
    labels = predict(model, scan, device="cpu")
    assert labels.same_geometry(scan) and labels.array.dtype == np.uint8
    assert set(np.unique(labels.array).tolist()) <= {0, 1}


def test_cases_made_ahead_in_a_worker_equal_cases_made_inline() -> None:
    """The training feed's worker process (forked) makes exactly the arrays the calling process would."""
    from imaging_pipelines.medical.synth.prefetch import CaseFeed, training_pair

    gen = LesionGenerator(dataclasses.replace(COARSE, spacing_mm=8.0), seed=3)
    with CaseFeed(gen, (1, 2), workers=1, ahead=1) as feed:
        ahead = [feed.get(i) for i in (0, 1)]
    for index, (image, target, thick_axis, thickness_mm) in enumerate(ahead):
        inline = training_pair(gen, index, (1, 2))
        assert np.array_equal(image, inline.image) and np.array_equal(target, inline.target)
        assert thick_axis == inline.thick_axis == gen.case(index).draws.get("thick_axis", -1)
        assert thickness_mm == inline.thickness_mm == gen.case(index).draws.get("thickness_mm", 0.0)
        assert target.dtype == np.uint8 and set(np.unique(target).tolist()) <= {0, 1}
    with CaseFeed(gen, (1, 2), workers=1, ahead=0, brain_classes=True) as feed:
        gated = feed.get(0)
    assert np.array_equal(gated.target, training_pair(gen, 0, (1, 2), brain_classes=True).target)
    assert set(np.unique(gated.target).tolist()) == {0, 1, 2}
    with pytest.raises(ValueError, match="workers"):
        CaseFeed(gen, (1, 2), workers=2)


def test_slice_sampler_cuts_across_the_thick_axis_and_through_the_lesion() -> None:
    """Slices of a case acquired thick along index axis i are constant when the image encodes the i index, vary
    when cut across k; forced samples pass through the lesion class; patches are (h, w) with the class map."""
    from imaging_pipelines.medical.synth.prefetch import TrainingPair
    from imaging_pipelines.medical.synth.slices import SliceSampler

    image = np.broadcast_to(np.arange(20, dtype=np.float32), (24, 22, 20)).copy()  # value = i index
    target = np.zeros(image.shape, dtype=np.uint8)
    target[3:20, 2:20, 2:18] = 1
    target[10:14, 8:12, 6:9] = 2
    rng = np.random.default_rng(0)
    across_i = SliceSampler([TrainingPair(image, target, 0)], (16, 16), 1.0, 2, rng, thick_axis_share=1.0)
    across_k = SliceSampler([TrainingPair(image, target, 2)], (16, 16), 1.0, 2, rng, thick_axis_share=1.0)
    for _ in range(10):
        x, y = across_i.sample(force_fg=True)
        assert x.shape == y.shape == (1, 16, 16) and x.dtype == np.float32 and y.dtype == np.int64
        assert np.ptp(x) < 1e-4 and (y == 2).any()
        xk, yk = across_k.sample(force_fg=True)
        assert np.ptp(xk) > 1.0 and (yk == 2).any()
    xb, yb = across_i.batch(4)
    assert tuple(xb.shape) == tuple(yb.shape) == (4, 1, 16, 16)
    mixed = SliceSampler([TrainingPair(image, target, 0)], (16, 16), 0.0, 2, rng, thick_axis_share=0.5)
    constant = [np.ptp(mixed.sample(force_fg=False)[0]) < 1e-4 for _ in range(60)]
    assert 15 < sum(constant) < 55  # half across i, the rest across a random axis (a third of them i again)


def test_the_head_below_the_brain_is_filled_with_random_tissue() -> None:
    """neck_zone: below the level and inside the elliptic cylinder only; with neck_probability 1 and the grid
    shifted down, the lowest grid slab (no brain there) is not all air."""
    points = np.array([[0.0, 0.0, 60.0, 0.0], [0.0, 0.0, 0.0, 80.0], [-30.0, 10.0, -30.0, -30.0]])[:, :, None, None]
    inside = anatomy.neck_zone(points, (0.0, 0.0, 0.0), 20.0, (50.0, 70.0))[:, 0, 0]
    assert inside.tolist() == [True, False, False, False]  # above the level; outside in L; outside in P
    plain = dataclasses.replace(COARSE, grid_shift_mm=(0.0, 0.0, -30.0), clutter_probability=0.0)
    flat = IntensityParams(std=(0.0, 0.0), blur_sigma_vox=(0.0, 0.0), bias_sd=(0.0, 0.0), noise_sd=(0.0, 0.0))
    no_neck = LesionGenerator(dataclasses.replace(plain, intensity=flat, anisotropic_probability=0.0), seed=4).case(0)
    neck = LesionGenerator(dataclasses.replace(plain, intensity=flat, anisotropic_probability=0.0, neck_probability=1.0),
                           seed=4).case(0)
    assert np.unique(no_neck.image.array[0]).size == 1  # the lowest slab: air only
    assert np.unique(neck.image.array[0]).size > 1 and not (neck.brain.array[0] > 0).any()


@pytest.mark.parametrize("coarse_shape, shape", [((7, 8, 7), (88, 104, 88)), ((3, 5, 2), (20, 33, 17))])
def test_separable_cubic_upsampling_equals_scipy_zoom(coarse_shape, shape) -> None:
    """The generator's smooth fields (elastic displacement, bias) use the separable form of the cubic zoom."""
    from scipy import ndimage

    from imaging_pipelines.medical.synth.deform import upsample_cubic

    field = np.random.default_rng(3).normal(size=coarse_shape)
    zoom = [s / c for s, c in zip(shape, coarse_shape)]
    expected = ndimage.zoom(field, zoom, order=3, mode="nearest", grid_mode=True)[: shape[0], : shape[1], : shape[2]]
    got = upsample_cubic(field, shape)
    assert got.shape == tuple(shape)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-10)
    assert np.ptp(got) > 0.5  # a real field, not a constant


def test_slab_footprint_grows_the_lesion_along_the_thick_axis_only() -> None:
    """The thick-slice training target: what shows on a slab is outlined, so the lesion grows along the
    slab axis (k) by the partial-volume margin, not in-plane; share 1 adds nothing beyond the lesion."""
    from imaging_pipelines.medical.synth.acquisition import slab_footprint

    z, y, x = np.mgrid[0:40, 0:40, 0:40]
    sphere = ((((x - 20) ** 2 + (y - 20) ** 2 + (z - 20) ** 2) * 4.0) <= 10.0**2).astype(np.uint8)  # r 10 mm
    mask = Volume(array=sphere, spacing=(2.0, 2.0, 2.0))
    grown = slab_footprint(mask, axis=2, thickness_mm=7.0, share=0.25)
    assert grown[sphere > 0].all() and grown.sum() > 1.1 * sphere.sum()
    extent = lambda m, a: int(np.ptp(np.nonzero(m.any(axis=tuple(d for d in range(3) if d != a)))[0]))  # noqa: E731
    assert extent(grown, 0) > extent(sphere > 0, 0)  # array axis 0 = index k: the slab axis
    assert extent(grown, 2) == extent(sphere > 0, 2)  # in-plane (i) unchanged
    assert np.array_equal(slab_footprint(mask, axis=2, thickness_mm=7.0, share=1.0), sphere > 0)
    with pytest.raises(ValueError, match="share"):
        slab_footprint(mask, axis=2, thickness_mm=7.0, share=0.0)


def test_separable_linear_resampling_equals_map_coordinates() -> None:
    """The demo head's smooth fields go from the coarse to the patient grid by the separable form of trilinear
    interpolation; it equals sampling at the world points, ``outside`` included."""
    from imaging_pipelines.medical.synth.deform import Grid, resample_linear, sample_on_grid

    coarse = Grid(shape=(6, 7, 5), spacing_mm=(8.0, 8.0, 8.0), origin_mm=(-16.0, -24.0, -20.0))
    fine = Grid(shape=(27, 31, 23), spacing_mm=(2.0, 2.0, 2.0), origin_mm=(-23.0, -31.0, -27.0))  # wider than coarse
    values = np.random.default_rng(5).normal(size=coarse.shape).astype(np.float32)
    expected = sample_on_grid(coarse.volume(values), fine.world_points(), order=1, cval=-9.0)
    got = resample_linear(values, coarse, fine, -9.0)
    assert got.shape == fine.shape and got.dtype == np.float32
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    assert 0 < np.count_nonzero(got == -9.0) < got.size  # both inside and outside voxels were compared
