"""Preprocessing core: N4 against a known bias field, resampling geometry, reorientation, normalisation,
denoising and averaging of repeated acquisitions, on MNI152 (../shared/data) and on generated phantoms."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from imaging_pipelines.medical.preprocess.averaging import align_to_first, average_acquisitions, combine, psnr
from imaging_pipelines.medical.preprocess.denoise import DENOISE_METHODS, denoise, denoise_array, estimate_noise_sigma
from imaging_pipelines.medical.preprocess.masks import otsu_foreground
from imaging_pipelines.medical.preprocess.n4 import coefficient_of_variation, n4_bias_correction
from imaging_pipelines.medical.preprocess.normalize import hu_window, percentile_clip, zscore
from imaging_pipelines.medical.preprocess.resample import (
    antialias_sigmas_mm,
    reorient,
    resample_like,
    resample_to_spacing,
)
from imaging_pipelines.core.volume import Volume

MNI_T1 = "medical/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_MASK = "medical/mni152/mni152_brain_mask_t1gt0.2.nii.gz"



def _rotation(axis, degrees: float) -> np.ndarray:
    """Rotation matrix (Rodrigues) about ``axis``; used as an oblique direction matrix."""
    a = np.asarray(axis, float) / np.linalg.norm(axis)
    k = np.array([[0, -a[2], a[1]], [a[2], 0, -a[0]], [-a[1], a[0], 0]])
    t = np.radians(degrees)
    return np.eye(3) + np.sin(t) * k + (1 - np.cos(t)) * k @ k


OBLIQUE = _rotation((1.0, 2.0, 3.0), 17.0)  # columns = directions of index axes i, j, k


def sphere_phantom(shape=(48, 48, 48), spacing=(1.0, 1.0, 1.0), noise=0.0, seed=0) -> Volume:
    """Bright sphere (100) with a brighter inner blob (150) on a dark background (10); Gaussian noise sd ``noise``."""
    z, y, x = np.indices(shape, dtype=np.float32)
    c = [(n - 1) / 2 for n in shape]
    r = ((z - c[0]) ** 2 + (y - c[1]) ** 2 + (x - c[2]) ** 2) ** 0.5
    array = np.where(r < min(shape) * 0.35, 100.0, 10.0) + np.where(
        ((z - c[0]) ** 2 + (y - c[1] - 5) ** 2 + (x - c[2] + 4) ** 2) ** 0.5 < min(shape) * 0.12, 50.0, 0.0
    )
    array = array + np.random.default_rng(seed).normal(0, noise, shape) if noise else array
    return Volume(array.astype(np.float32), spacing=spacing, origin=(-20.0, 15.0, 3.0))


@pytest.fixture(scope="module")
def mni(shared_data):
    from imaging_pipelines.medical.io.image_files import read_image_file

    t1, mask = shared_data / MNI_T1, shared_data / MNI_MASK
    if not (t1.exists() and mask.exists()):
        pytest.skip(f"MNI152 files not found under {shared_data / 'medical/mni152'}")
    return read_image_file(t1), read_image_file(mask)


# ---------------------------------------------------------------------------------------------- N4
def smooth_bias(volume: Volume) -> np.ndarray:
    """A known multiplicative field: exp of a quadratic polynomial in LPS world mm (about -30 % .. +20 % in the brain)."""
    k, j, i = np.indices(volume.spatial_shape, dtype=np.float64)
    m = volume.index_to_world_lps()
    x, y, z = (m[r, 0] * i + m[r, 1] * j + m[r, 2] * k + m[r, 3] for r in range(3))
    x, y, z = x / 80.0, y / 80.0, z / 80.0
    return np.exp(0.18 * x - 0.12 * y + 0.15 * z + 0.10 * x * y - 0.08 * z * z)


def check_n4_recovers_cv(t1: Volume, brain: Volume) -> None:
    in_brain = brain.array > 0
    clean = t1.array.astype(np.float32)
    bias = smooth_bias(t1)
    assert 0.6 < bias[in_brain].min() < 0.8 and 1.15 < bias[in_brain].max() < 1.35
    biased = t1.with_array((clean * bias).astype(np.float32))
    cv_true = coefficient_of_variation(clean, in_brain)
    cv_biased = coefficient_of_variation(biased.array, in_brain)

    corrected, report = n4_bias_correction(biased, brain, shrink_factor=4, iterations=(50, 50, 50, 50))

    assert corrected.array.dtype == np.float32 and corrected.same_geometry(t1)
    assert report.cv_before == pytest.approx(cv_biased)
    assert report.cv_after < cv_biased
    assert abs(report.cv_after - cv_true) / cv_true <= 0.10, (report, cv_true)
    # the estimated field (biased / corrected) follows the true one up to a global scale
    nonzero = in_brain & (clean > 0)
    ratio = biased.array[nonzero] / corrected.array[nonzero] / bias[nonzero]
    assert np.std(ratio) / np.mean(ratio) < 0.08


def test_n4_removes_known_bias_mni152_2mm(mni):
    t1, brain = mni
    check_n4_recovers_cv(resample_to_spacing(t1, 2.0), resample_to_spacing(brain, 2.0, "nearest"))


@pytest.mark.slow
def test_n4_removes_known_bias_mni152_1mm(mni):
    check_n4_recovers_cv(*mni)


def test_n4_defaults_to_otsu_mask_and_rejects_4d():
    v = sphere_phantom((32, 32, 32), noise=1.0)
    x = np.linspace(0.7, 1.3, 32, dtype=np.float32)
    biased = v.with_array(v.array * x[None, None, :])
    out, report = n4_bias_correction(biased, iterations=(20, 20))
    assert report.iterations == (20, 20) and report.mask_voxels > 0 and report.cv_after < report.cv_before
    with pytest.raises(ValueError, match="4D"):
        n4_bias_correction(Volume(np.stack([v.array, v.array]), time_step=2.0))
    with pytest.raises(ValueError, match="fitting_levels"):
        n4_bias_correction(v, iterations=(10, 10), fitting_levels=3)


def test_otsu_foreground_finds_the_sphere():
    v = sphere_phantom(noise=5.0)
    mask = otsu_foreground(v)
    truth = sphere_phantom().array > 50  # the noiseless sphere
    dice = 2 * np.sum((mask.array > 0) & truth) / (np.sum(mask.array > 0) + np.sum(truth))
    assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
    assert dice > 0.97 and mask.same_geometry(v)


# ---------------------------------------------------------------------------------------------- resampling
def world_of(volume: Volume, ijk: np.ndarray) -> np.ndarray:
    m = volume.index_to_world_lps()
    return (m[:3, :3] @ ijk.T).T + m[:3, 3]


def test_resample_keeps_extent_geometry_and_world_positions():
    shape, spacing = (30, 36, 40), (0.8, 0.9, 1.25)
    v = Volume(np.zeros(shape, np.float32), spacing=spacing, origin=(12.0, -40.0, 7.5), direction=OBLIQUE)
    k, j, i = np.indices(shape)
    world = world_of(v, np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    ramp = (0.5 * world[:, 0] - 0.3 * world[:, 1] + 0.2 * world[:, 2]).reshape(shape)  # linear in world mm
    v = v.with_array(ramp.astype(np.float32))

    out = resample_to_spacing(v, (2.0, 1.5, 1.0))

    expected_size = [round(n * s / t) for n, s, t in zip(shape[::-1], spacing, (2.0, 1.5, 1.0))]
    assert out.spatial_shape[::-1] == tuple(expected_size) and out.spacing == (2.0, 1.5, 1.0)
    assert out.origin == v.origin and np.allclose(out.direction, v.direction)
    extent_old = np.array(shape[::-1]) * np.array(spacing)
    extent_new = np.array(out.spatial_shape[::-1]) * np.array(out.spacing)
    assert np.all(np.abs(extent_new - extent_old) <= np.array(out.spacing) / 2 + 1e-9)
    # the first voxel centre stays put; the far corner of the field of view moves by < half a new voxel per axis
    assert np.allclose(world_of(out, np.zeros((1, 3))), world_of(v, np.zeros((1, 3))))
    far_old = world_of(v, np.array([np.array(shape[::-1]) - 0.5]))[0]
    far_new = world_of(out, np.array([np.array(out.spatial_shape[::-1]) - 0.5]))[0]
    assert np.linalg.norm(far_new - far_old) <= np.linalg.norm(np.array(out.spacing) / 2) + 1e-6
    # voxel values follow world positions: a linear ramp resamples exactly (anti-aliasing keeps linear functions)
    k, j, i = np.indices(out.spatial_shape)
    new_world = world_of(out, np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float))
    expected = (0.5 * new_world[:, 0] - 0.3 * new_world[:, 1] + 0.2 * new_world[:, 2]).reshape(out.spatial_shape)
    inner = (slice(3, -3),) * 3
    assert np.max(np.abs(out.array[inner] - expected[inner])) < 1e-3


def test_resample_nearest_keeps_labels_and_dtype():
    labels = np.zeros((40, 40, 40), np.uint16)
    labels[5:20, 5:30, 8:35] = 3
    labels[22:35, 10:25, 10:20] = 7
    labels[25:30, 28:38, 25:38] = 1000
    v = Volume(labels, spacing=(1.0, 1.0, 1.0), direction=OBLIQUE)
    for spacing in ((2.5, 2.5, 2.5), (0.7, 1.3, 2.0)):
        out = resample_to_spacing(v, spacing, "nearest")
        assert out.array.dtype == np.uint16
        assert set(np.unique(out.array)) == {0, 3, 7, 1000}
    back = resample_like(resample_to_spacing(v, 0.5, "nearest"), v, interpolator="nearest")
    assert np.array_equal(back.array, labels)


def test_antialias_reduces_aliasing_on_a_checkerboard():
    k, j, i = np.indices((40, 40, 40))
    board = Volume((((i + j + k) % 2) * 100.0).astype(np.float32))  # Nyquist-frequency pattern, mean 50
    plain = resample_to_spacing(board, 2.6, antialias=False).array
    smooth = resample_to_spacing(board, 2.6, antialias=True).array
    inner = (slice(2, -2),) * 3
    aliasing_plain = np.var(plain[inner])
    aliasing_smooth = np.var(smooth[inner])
    assert aliasing_plain > 100
    assert aliasing_smooth < 0.1 * aliasing_plain
    assert np.mean(smooth[inner]) == pytest.approx(50, abs=2)
    assert antialias_sigmas_mm((1.0, 1.0, 2.0), (2.0, 2.0, 1.0)) == pytest.approx((3**0.5 / 2.3548, 3**0.5 / 2.3548, 0.0), rel=1e-3)


def test_reorient_ras_nifti_to_lps_keeps_world_positions(tmp_path):
    import nibabel as nib

    from imaging_pipelines.medical.io.image_files import read_image_file

    rng = np.random.default_rng(3)
    data = rng.integers(0, 1000, size=(7, 9, 11)).astype(np.int16)  # NIfTI order [i, j, k]
    affine = np.diag([1.0, 2.0, 3.0, 1.0])
    affine[:3, 3] = (-10.0, 20.0, 5.0)  # RAS+ world: index axes i, j, k point toward R, A, S
    nib.save(nib.Nifti1Image(data, affine), str(tmp_path / "ras.nii.gz"))
    v = read_image_file(tmp_path / "ras.nii.gz")
    assert v.orientation_code() == "RAS" and np.allclose(v.direction, np.diag([-1.0, -1.0, 1.0]))

    out = reorient(v, "LPS")

    assert out.orientation_code() == "LPS" and np.allclose(out.direction, np.eye(3))
    assert np.array_equal(out.array.shape, v.array.shape) and out.array.dtype == v.array.dtype
    # every voxel keeps its world position: map out's voxel centres back into v's index space
    k, j, i = np.indices(out.spatial_shape)
    ijk = np.stack([i.ravel(), j.ravel(), k.ravel()], 1).astype(float)
    world = world_of(out, ijk)
    back = np.linalg.solve(v.index_to_world_lps()[:3, :3], (world - v.index_to_world_lps()[:3, 3]).T).T
    back_idx = np.rint(back).astype(int)
    assert np.allclose(back, back_idx, atol=1e-6)
    assert np.array_equal(v.array[back_idx[:, 2], back_idx[:, 1], back_idx[:, 0]], out.array.ravel())
    again = reorient(out, "ras")
    assert np.array_equal(again.array, v.array) and again.same_geometry(v)
    with pytest.raises(ValueError):
        reorient(v, "LPL")


def test_reorient_and_resample_process_every_timepoint():
    series = Volume(np.random.default_rng(0).random((3, 10, 12, 14)).astype(np.float32), direction=np.diag([-1.0, -1, 1]),
                    time_step=2.5)
    out = reorient(series, "LPS")
    assert out.is_timeseries and out.time_step == 2.5 and np.array_equal(out.array[1], reorient(series.timepoint(1)).array)
    down = resample_to_spacing(series, 2.0)
    assert down.array.shape == (3, 5, 6, 7) and down.time_step == 2.5


# ---------------------------------------------------------------------------------------------- normalisation
def test_zscore_and_percentile_clip_use_in_mask_statistics():
    v = sphere_phantom(noise=4.0)
    mask = otsu_foreground(v)
    z, report = zscore(v, mask)
    inside = z.array[mask.array > 0]
    assert z.array.dtype == np.float32
    assert inside.mean() == pytest.approx(0.0, abs=1e-4) and inside.std() == pytest.approx(1.0, abs=1e-4)
    assert report.mask_voxels == int(mask.array.sum())
    z_default, _ = zscore(v)  # Otsu mask by default
    assert np.allclose(z_default.array, z.array, atol=1e-3)

    clipped, report = percentile_clip(v, mask, 1.0, 99.0)
    values = v.array[mask.array > 0]
    assert report.low == pytest.approx(np.percentile(values, 1.0)) and report.high == pytest.approx(np.percentile(values, 99.0))
    assert clipped.array.min() == 0.0 and clipped.array.max() == pytest.approx(1.0)
    only_clip, _ = percentile_clip(v, mask, rescale_to=None)
    assert only_clip.array.max() <= np.percentile(values, 99.5) + 1e-3


def test_hu_window_range():
    hu = Volume(np.linspace(-2000, 3000, 8000, dtype=np.float32).reshape(20, 20, 20))
    out, _ = hu_window(hu, -1000, 1000, (0.0, 1.0))
    assert out.array.min() == 0.0 and out.array.max() == 1.0 and out.array.dtype == np.float32
    assert np.allclose(out.array[(hu.array > -1000) & (hu.array < 1000)],
                       (hu.array[(hu.array > -1000) & (hu.array < 1000)] + 1000) / 2000, atol=1e-6)
    raw, _ = hu_window(hu, -160, 240, None)
    assert raw.array.min() == -160 and raw.array.max() == 240


# ---------------------------------------------------------------------------------------------- denoising
@pytest.fixture(scope="module")
def noisy_phantom() -> Volume:
    return sphere_phantom((40, 40, 40), spacing=(1.0, 1.0, 1.2), noise=10.0)


@pytest.mark.parametrize("method", DENOISE_METHODS)
def test_each_denoise_method_reduces_noise(method, noisy_phantom):
    if method == "wavelet":
        pytest.importorskip("pywt", reason="denoise_wavelet needs PyWavelets")
    clean = sphere_phantom((40, 40, 40), spacing=(1.0, 1.0, 1.2))
    out, report = denoise(noisy_phantom, method)
    assert out.array.dtype == np.float32 and out.same_geometry(noisy_phantom)
    assert report.method == method and report.runtime_s > 0
    assert report.sigma_before == pytest.approx(10.0, rel=0.15)
    assert report.sigma_after < 0.6 * report.sigma_before
    assert psnr(out, clean) > psnr(noisy_phantom, clean) + 3.0
    assert all(isinstance(v, (int, float, str, bool, type(None))) for v in report.params.values())


@pytest.mark.parametrize("method", ["nl_means", "tv_chambolle", "median"])
def test_denoise_2d_arrays(method):
    rng = np.random.default_rng(1)
    image = np.where(np.add.outer(np.arange(64), np.arange(64)) > 64, 80.0, 20.0) + rng.normal(0, 8, (64, 64))
    out, report = denoise_array(image, method)
    assert out.shape == image.shape and report.sigma_after < report.sigma_before


def test_denoise_rejects_unknown_method_and_parameter(noisy_phantom):
    with pytest.raises(ValueError, match="unknown denoise method"):
        denoise(noisy_phantom, "gaussian")
    with pytest.raises(TypeError, match="median"):
        denoise(noisy_phantom, "median", radiuss=2)


def test_noise_estimate_matches_white_noise():
    rng = np.random.default_rng(2)
    assert estimate_noise_sigma(rng.normal(5, 3.0, (30, 40, 50)) + np.linspace(0, 50, 50)) == pytest.approx(3.0, rel=0.05)


# ---------------------------------------------------------------------------------------------- averaging
def test_averaging_aligned_copies_raises_psnr_with_n(mni):
    t1 = resample_to_spacing(mni[0], 4.0)
    clean = t1.array
    rng = np.random.default_rng(0)
    copies = [t1.with_array((clean + rng.normal(0, 12, clean.shape)).astype(np.float32))]
    for _ in range(7):  # shifted by 1-2 voxels in the array (same geometry), so only registration can undo it
        shift = rng.uniform(1.0, 2.0, 3) * rng.choice([-1, 1], 3)
        moved = ndimage.shift(clean, shift, order=1, mode="nearest")
        copies.append(t1.with_array((moved + rng.normal(0, 12, clean.shape)).astype(np.float32)))

    aligned, rigid = align_to_first(copies)
    for method in ("mean", "median"):
        scores = [psnr(combine(aligned[:n], method), clean) for n in (1, 2, 4, 8)]
        assert all(b > a + 0.3 for a, b in zip(scores, scores[1:])), (method, scores)
    assert psnr(combine(aligned, "mean"), clean) > psnr(copies[0], clean) + 5.0
    assert all(1.0 * 4 <= np.linalg.norm(r.translation_mm) <= 3.5 * 4 for r in rigid[1:])

    averaged, report = average_acquisitions(copies[:4], "median")  # (multi-threaded metric: not bit-identical)
    assert psnr(averaged, clean) == pytest.approx(psnr(combine(aligned[:4], "median"), clean), abs=0.3)
    assert report.n_inputs == 4 and report.aligned and len(report.translations_mm) == 4
    unaligned, _ = average_acquisitions(copies, "mean", align=False)
    assert psnr(unaligned, clean) < psnr(combine(aligned, "mean"), clean) - 2.0


def test_psnr():
    ref = np.zeros((4, 4, 4))
    ref[0, 0, 0] = 10.0
    assert psnr(ref + 1.0, ref) == pytest.approx(20.0)
    assert psnr(ref, ref) == float("inf")
