"""CT reconstruction: FBP / SART on the Shepp-Logan phantom against scikit-image, geometry of the written
NIfTI, sidecar errors."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from skimage.data import shepp_logan_phantom
from skimage.metrics import peak_signal_noise_ratio
from skimage.transform import iradon, radon, rescale
from typer.testing import CliRunner

from imaging_pipelines.cli import app
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.recon.fbp import FBP_FILTERS, fbp_slice
from imaging_pipelines.medical.recon.reconstruct import reconstruct
from imaging_pipelines.medical.recon.sinogram_io import SinogramStack, load_sinogram, read_sidecar


@pytest.fixture(scope="module")
def phantom() -> np.ndarray:
    return rescale(shepp_logan_phantom(), 0.32, anti_aliasing=True)  # 128 x 128, inside the circle


def _psnr(truth: np.ndarray, image: np.ndarray) -> float:
    return float(peak_signal_noise_ratio(truth, image, data_range=float(truth.max() - truth.min())))


@pytest.mark.parametrize("filter_name", FBP_FILTERS)
def test_fbp_180_angles_matches_skimage_iradon(phantom, filter_name):
    angles = np.linspace(0.0, 180.0, 180, endpoint=False)
    sino = radon(phantom, angles, circle=True)  # [detector, angle]
    ours = _psnr(phantom, fbp_slice(sino.T, angles, filter_name))
    peer = _psnr(phantom, iradon(sino, angles, filter_name=filter_name, circle=True))
    print(f"{filter_name}: ours {ours:.2f} dB, skimage {peer:.2f} dB")
    assert abs(ours - peer) <= 0.1
    if filter_name == "ramp":
        assert ours >= 25.0


def test_sart_beats_fbp_with_45_angles(phantom):
    angles = np.linspace(0.0, 180.0, 45, endpoint=False)
    stack = SinogramStack(array=radon(phantom, angles, circle=True).T[None], angles_deg=angles)
    fbp = _psnr(phantom, reconstruct(stack, "fbp").array[0])
    sart = _psnr(phantom, reconstruct(stack, "sart", sart_iterations=3).array[0])
    print(f"45 angles: FBP {fbp:.2f} dB, SART(3) {sart:.2f} dB")
    assert sart > fbp


def _point_sinogram(n_det: int, angles: np.ndarray, row: int, col: int) -> np.ndarray:
    image = np.zeros((n_det, n_det))
    image[row, col] = 1.0
    return radon(image, angles, circle=True).T  # [angle, detector]


def test_cli_writes_nifti_with_declared_world_geometry(tmp_path):
    """A bright point at pixel (row 20, col 40) of a 64^2 plane, slice 1 of 3, lands at the declared world
    position: default geometry puts the rotation axis (pixel 32, 32) and the middle slice at LPS (0, 0, 0)."""
    angles = np.linspace(0.0, 180.0, 90, endpoint=False)
    planes = [np.zeros((90, 64)), _point_sinogram(64, angles, 20, 40), np.zeros((90, 64))]
    sino_path = tmp_path / "scan.npy"
    np.save(sino_path, np.stack(planes))
    sino_path.with_suffix(".json").write_text(json.dumps(
        {"angles_deg": {"start": 0, "stop": 180, "count": 90}, "pixel_size_mm": 0.5, "slice_spacing_mm": 2.0}))
    out = tmp_path / "recon.nii.gz"
    result = CliRunner().invoke(app, ["reconstruct", str(sino_path), str(out), "--filter", "hann"])
    assert result.exit_code == 0, result.output
    img = nib.load(out)
    data = np.asarray(img.dataobj)  # [i, j, k]
    i, j, k = np.unravel_index(np.argmax(data), data.shape)
    assert (i, j, k) == (40, 20, 1)
    ras = img.affine @ np.array([i, j, k, 1.0])
    lps = ras[:3] * np.array([-1, -1, 1])
    np.testing.assert_allclose(lps, [(40 - 32) * 0.5, (20 - 32) * 0.5, 0.0], atol=1e-5)
    np.testing.assert_allclose(img.header.get_zooms(), (0.5, 0.5, 2.0))


def test_declared_origin_and_direction_and_pixel_override(tmp_path):
    angles = np.linspace(0.0, 180.0, 30, endpoint=False)
    sino_path = tmp_path / "s.npy"
    np.save(sino_path, _point_sinogram(32, angles, 16, 16))
    direction = [[0, 1, 0], [1, 0, 0], [0, 0, -1]]
    (tmp_path / "s.json").write_text(json.dumps({"angles_deg": angles.tolist(), "origin_mm": [10, -5, 3],
                                                 "direction": direction}))
    volume = reconstruct(load_sinogram(sino_path), pixel_size_mm=0.25)
    assert volume.spacing == (0.25, 0.25, 1.0)
    assert volume.origin == (10.0, -5.0, 3.0)
    np.testing.assert_array_equal(volume.direction, np.array(direction, float))
    world = volume.index_to_world_lps() @ np.array([16, 16, 0, 1.0])
    np.testing.assert_allclose(world[:3], [10 + 16 * 0.25, -5 + 16 * 0.25, 3.0])


@pytest.mark.parametrize(("sidecar", "message"), [
    ({"angles_deg": {"start": 0, "stop": 180}}, "needs exactly start, stop, count"),
    ({"angles_deg": [0, 1, 2]}, "3 angles declared but the sinogram has 10 projections"),
    ({"angles_deg": {"start": 0, "stop": 180, "count": 10}, "pixel_size_mm": -1}, "pixel_size_mm must be a positive"),
    ({"angles": [0]}, "unknown sidecar field"),
])
def test_bad_sidecar_names_file_and_problem(tmp_path, sidecar, message):
    sino_path = tmp_path / "bad.npy"
    np.save(sino_path, np.zeros((10, 16)))
    (tmp_path / "bad.json").write_text(json.dumps(sidecar))
    with pytest.raises(ImagingInputError, match="bad") as info:
        load_sinogram(sino_path)
    assert message in str(info.value)
    result = CliRunner().invoke(app, ["reconstruct", str(sino_path), str(tmp_path / "o.nii.gz")])
    assert result.exit_code == 1 and message in result.output


def test_unreadable_json_and_missing_angles(tmp_path):
    side = tmp_path / "x.json"
    side.write_text("{not json")
    with pytest.raises(ImagingInputError, match="x.json: sidecar is not valid JSON"):
        read_sidecar(side)
    np.save(tmp_path / "y.npy", np.zeros((4, 8)))
    with pytest.raises(ImagingInputError, match="no angles"):
        load_sinogram(tmp_path / "y.npy")


def test_tiff_with_angles_spec(tmp_path):
    import tifffile

    angles = np.linspace(0.0, 180.0, 20, endpoint=False)
    tifffile.imwrite(tmp_path / "t.tif", _point_sinogram(16, angles, 8, 8).astype(np.float32))
    stack = load_sinogram(tmp_path / "t.tif", angles="0:180:20")
    np.testing.assert_allclose(stack.angles_deg, angles)
    assert reconstruct(stack).array.shape == (1, 16, 16)
