"""Siemens CSA headers read without nibabel (imaging_pipelines.medical.io.siemens_csa) equal nibabel's csareader,
from pydicom datasets and from the raw header scan."""

from __future__ import annotations

import warnings

import pydicom
import pytest

from imaging_pipelines.medical.io import dicom_raw
from imaging_pipelines.medical.io.dicom_files import DETAIL_TAG_SET, READ_TAG_SET
from imaging_pipelines.medical.io.siemens_csa import csa_image_header, csa_scalar, csa_vector, read_csa

SIEMENS = ["medical/dcm_qa_nih/In/20180918Si/mr_0003", "medical/dcm_qa_nih/In/20180918Si/mr_0004",
           "medical/ct_totalseg/example_ct_dicom"]


def _nibabel_csa(ds):
    """nibabel's header, None where nibabel cannot read it (the reader then used no CSA value)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from nibabel.nicom import csareader
    try:
        return csareader.get_csa_header(ds, "image")
    except Exception:
        return None


@pytest.mark.parametrize("folder", SIEMENS)
def test_same_headers_as_nibabel(shared_data, folder):
    paths = sorted(p for p in (shared_data / folder).iterdir() if p.suffix != ".txt")[:6]
    assert paths
    for path in paths:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        reference = _nibabel_csa(ds)
        if "dcm_qa_nih" in folder:  # MR: readable headers (the CT's holds a CSA1 block nibabel rejects)
            assert reference is not None and reference["tags"], path
        assert repr(csa_image_header(ds)) == repr(reference)
        buf = path.read_bytes()
        for tags in (READ_TAG_SET, DETAIL_TAG_SET):
            raw = dicom_raw.parse(buf, tags)
            if raw is not None:
                assert repr(csa_image_header(raw)) == repr(reference)


def test_mosaic_values_and_bad_headers(shared_data):
    path = sorted((shared_data / SIEMENS[1]).glob("*.dcm"))[0]
    csa = csa_image_header(pydicom.dcmread(path, stop_before_pixels=True))
    assert csa is not None
    n = csa_scalar(csa, "NumberOfImagesInMosaic")
    normal = csa_vector(csa, "SliceNormalVector", 3)
    assert n is None or n > 1
    assert normal is None or abs(sum(float(v) ** 2 for v in normal) - 1) < 1e-3
    with pytest.raises(Exception):
        read_csa(b"SV10\x04\x03\x02\x01" + b"\x00" * 8)  # zero tags
    ds = pydicom.dcmread(path, stop_before_pixels=True)
    ds[0x00291010].value = b"SV10\x04\x03\x02\x01\x05\x00\x00\x00M\x00\x00\x00"  # truncated: no values, no error
    assert csa_image_header(ds) is None
