"""The NIfTI-1 writer without nibabel writes the same header and voxel bytes as nibabel.save did."""

from __future__ import annotations

import gzip

import nibabel as nib
import numpy as np
import pytest

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.medical.io.nifti_write import RGB24, nifti_chunks


def write_nifti_file(path, data_c, affine, time_step=None, scl=None):
    path.write_bytes(b"".join(nifti_chunks(data_c, affine, time_step, scl, compress=path.name.endswith(".gz"))))


def _nibabel_bytes(tmp_path, data_c, affine, time_step, scl) -> bytes:
    """What image_files.write_nifti wrote before: nibabel image, sform and qform code 1, scl, units."""
    data = np.transpose(data_c, tuple(range(data_c.ndim))[::-1])
    img = nib.Nifti1Image(data, affine)
    img.set_sform(affine, code=1)
    img.set_qform(affine, code=1)
    if scl is not None:
        img.header.set_slope_inter(*scl)
    if time_step and data.ndim == 4:
        img.header.set_xyzt_units("mm", "sec")
        img.header["pixdim"][4] = time_step
    else:
        img.header.set_xyzt_units("mm")
    path = tmp_path / "nib.nii.gz"
    nib.save(img, path)
    return gzip.decompress(path.read_bytes())


def _affines(rng):
    yield np.diag([0.9, 1.1, 3.0, 1.0])  # axial, positive determinant
    yield np.diag([-0.8, -0.8, 2.5, 1.0]) @ np.eye(4)  # LPS-like flips
    flip = np.eye(4)
    flip[2, 2] = -1
    yield flip @ np.diag([1.0, 1.0, 1.0, 1.0])  # negative determinant: qfac -1
    rot = np.linalg.qr(rng.normal(size=(3, 3)))[0]
    yield np.block([[rot @ np.diag([0.7, 0.7, 4.0]), rng.normal(size=(3, 1)) * 100], [np.zeros((1, 3)), np.ones((1, 1))]])
    sheared = np.eye(4)
    sheared[:3, :3] = rng.normal(size=(3, 3))  # not a rotation times zooms: qform from the nearest rotation
    sheared[:3, 3] = [-118.1, 143.3, -17.7]
    yield sheared


@pytest.mark.parametrize("dtype", ["uint8", "int8", "int16", "uint16", "int32", "uint32", "float32", "float64",
                                   "complex64"])
def test_same_bytes_as_nibabel(tmp_path, dtype):
    rng = np.random.default_rng(1)
    for n, affine in enumerate(_affines(rng)):
        for shape, time_step, scl in (((3, 4, 5), None, None), ((2, 3, 4, 5), 2.5, (2.0, -1024.0)),
                                      ((2, 3, 4, 5), None, (0.5, 0.0)), ((4, 5), None, None)):
            data_c = (rng.normal(size=shape) * 40).astype(dtype)
            ours = tmp_path / f"ours{n}.nii.gz"
            write_nifti_file(ours, data_c, affine, time_step, scl)
            assert gzip.decompress(ours.read_bytes()) == _nibabel_bytes(tmp_path, data_c, affine, time_step, scl)
            plain = tmp_path / f"ours{n}.nii"
            write_nifti_file(plain, data_c, affine, time_step, scl)
            assert plain.read_bytes() == gzip.decompress(ours.read_bytes())


def test_rgb24_same_bytes_as_nibabel(tmp_path):
    stored = np.random.default_rng(2).integers(0, 255, size=(3, 4, 5, 3), dtype=np.uint8)  # (z, y, x, RGB)
    data_c = np.ascontiguousarray(stored).view(RGB24)[..., 0]
    affine = np.diag([0.5, 0.5, 2.0, 1.0])
    ours = tmp_path / "rgb.nii.gz"
    write_nifti_file(ours, data_c, affine)
    assert gzip.decompress(ours.read_bytes()) == _nibabel_bytes(tmp_path, data_c, affine, None, None)


def test_write_nifti_round_trip_through_nibabel(tmp_path):
    array = np.arange(2 * 3 * 4 * 5, dtype=np.int16).reshape(2, 3, 4, 5)  # (t, z, y, x)
    volume = Volume(array=array, spacing=(0.8, 0.9, 2.5), origin=(-10.0, 20.0, 30.0), direction=np.eye(3),
                    time_step=2.0)
    path = write_nifti(volume, tmp_path / "v.nii.gz", stored=array, scl=(2.0, -5.0))
    img = nib.load(path)
    np.testing.assert_allclose(img.affine, volume.to_nifti_affine(), atol=1e-5)
    np.testing.assert_array_equal(np.asanyarray(img.dataobj.get_unscaled()), volume.nifti_data())
    assert (img.dataobj.slope, img.dataobj.inter) == (2.0, -5.0)
    assert float(img.header["pixdim"][4]) == 2.0 and img.header.get_xyzt_units() == ("mm", "sec")
    bool_volume = Volume(array=np.ones((2, 3, 4), dtype=np.int64), spacing=(1.0, 1.0, 1.0), origin=(0.0, 0.0, 0.0),
                         direction=np.eye(3))
    with pytest.raises(ValueError):  # 64-bit integers: nibabel's refusal, as before
        write_nifti(bool_volume, tmp_path / "i64.nii.gz")


def test_small_volume_compressed_in_pieces_same_stream(tmp_path):
    """Volumes compressed in this thread are fed to zlib in pieces and streamed: the same deflate stream as one
    call per block, and no piece near the size of a compressed block."""
    from imaging_pipelines.medical.io import nifti_write

    rng = np.random.default_rng(3)
    data_c = (rng.normal(size=(10, 15, 64, 64)) * 300).astype(np.int16)  # 1.2 MiB: two blocks, no thread pool
    affine = np.diag([-3.75, -3.75, 5.0, 1.0])
    pieces = list(nifti_chunks(data_c, affine, 2.0))
    payload = memoryview(data_c).cast("B")
    blocks = [nifti_write.header_bytes(data_c.shape[::-1], data_c.dtype, affine, 2.0)]
    blocks += [payload[s:s + nifti_write.GZIP_BLOCK] for s in range(0, len(payload), nifti_write.GZIP_BLOCK)]
    whole = b"".join(nifti_write._deflate_block(b, n == len(blocks) - 1) for n, b in enumerate(blocks))
    assert b"".join(pieces[1:-1]) == whole
    assert max(len(p) for p in pieces) <= 2 * nifti_write.DEFLATE_PIECE < nifti_write.GZIP_BLOCK // 8
    path = tmp_path / "x.nii.gz"
    path.write_bytes(b"".join(pieces))
    assert gzip.decompress(path.read_bytes())[352:] == data_c.tobytes()


CORPUS = ("dcm_qa_nih/In/20180918GE/mr_0004", "dcm_qa_more/dcm_qa_sag", "dcm_qa_more/dcm_qa_xa30i",
          "dcm_qa_more/dcm_qa_xa60", "dcm_qa_more/dcm_qa_frag", "dcm_qa_more/dcm_qa_canon_61",
          "dcm_qa_more/dcm_qa_mosaic", "dcm_qa_more/dcm_qa_asl", "dcm_qa_more/dcm_qa_ge", "dcm_qa_more/dcm_qa_12bit")


def test_corpus_series_headers_same_bytes_as_nibabel(shared_data, tmp_path):
    """Real scanners' geometry (axial, sagittal, coronal, oblique, mosaic; qfac +1 and -1): the whole header of
    each series' affine equals nibabel's, the qform computed without LAPACK where the affine allows it."""
    from imaging_pipelines.medical.io.dicom import read_dicom_folder

    data_c = np.zeros((2, 2, 2), dtype=np.int16)
    checked = 0
    for rel in CORPUS:
        folder = shared_data / "medical" / rel
        if not folder.is_dir():
            continue
        for series in read_dicom_folder(folder).series:
            affine = series.volume.to_nifti_affine()
            ours = tmp_path / "ours.nii"
            write_nifti_file(ours, data_c, affine, None, (2.0, -1024.0))
            assert ours.read_bytes() == _nibabel_bytes(tmp_path, data_c, affine, None, (2.0, -1024.0)), rel
            checked += 1
    if not checked:
        pytest.skip("DICOM corpus not found")
    assert checked >= 10
