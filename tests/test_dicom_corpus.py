"""dcm2niix reference corpus (dcm_qa_more, 57 Ref NIfTIs from 46 series of the dcm_qa_* suites).

Each row of ``series.tsv`` is converted with ``imaging-pipelines convert`` (in process) and must reproduce its
Ref NIfTI: same voxels after closest-canonical reorientation and every volume corner within 1e-3 mm (any output
of the folder may match). The whole corpus takes a few seconds, so it runs in the default suite.
Data: $IMAGING_SHARED_DATA or <repo>/../shared/data.
"""

from __future__ import annotations

import hashlib
import re
import os
from pathlib import Path

import pytest

from tests.dcm_corpus import corpus_rows, match_reference

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPUS = SHARED / "medical" / "dcm_qa_more"
ROWS = corpus_rows(CORPUS)


@pytest.fixture(scope="module")
def out_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dcm_qa_more")


@pytest.mark.parametrize("row", ROWS or [None], ids=lambda r: r["ref_nifti"].split("/", 1)[0] + ":" +
                         Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_reference_reproduced(row, out_root):
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS} (set IMAGING_SHARED_DATA)")
    folder = CORPUS / row["input_dir"]
    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(folder, CORPUS / row["ref_nifti"], out)
    assert name is not None, f"{row['ref_nifti']} ({row['feature']}) not reproduced: {why}"


DWI_ROWS = [r for r in ROWS if (CORPUS / r["ref_nifti"].replace(".nii.gz", ".bvec")).exists()]


@pytest.mark.parametrize("row", DWI_ROWS or [None], ids=lambda r: Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_bval_bvec_as_dcm2niix(row, out_root):
    """Diffusion series: .bval/.bvec beside our NIfTI describe the same b-values and gradient directions (patient
    space, up to polarity) as dcm2niix's, volume by volume."""
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS} (set IMAGING_SHARED_DATA)")
    from tests.dcm_corpus import gradient_mismatch

    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(CORPUS / row["input_dir"], CORPUS / row["ref_nifti"], out)
    assert name is not None, why
    problem = gradient_mismatch(out / name, CORPUS / row["ref_nifti"])
    assert problem is None, f"{row['ref_nifti']}: {problem}"


IDENTIFYING_KEYS = {"SeriesDescription", "ProtocolName", "StudyDescription", "ProcedureStepDescription", "ImageComments",
                    "AcquisitionTime", "AcquisitionDateTime", "StudyTime", "SeriesTime", "ContentTime", "InstitutionName",
                    "InstitutionAddress", "InstitutionalDepartmentName", "StationName", "DeviceSerialNumber",
                    "PatientName", "PatientID", "PatientBirthDate", "PatientSex", "PatientWeight", "PatientAge",
                    "SeriesInstanceUID", "StudyInstanceUID", "AccessionNumber", "ReferringPhysicianName"}


@pytest.mark.parametrize("row", ROWS or [None], ids=lambda r: Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_bids_sidecar_agrees_with_dcm2niix(row, out_root):
    """The .json beside each converted NIfTI: every key it shares with dcm2niix's sidecar has the same value, the
    core acquisition keys dcm2niix writes are present, and nothing identifying is written."""
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS} (set IMAGING_SHARED_DATA)")
    import json

    from tests.dcm_corpus import sidecar_mismatches

    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(CORPUS / row["input_dir"], CORPUS / row["ref_nifti"], out)
    assert name is not None, why
    mine = json.loads((out / name.replace(".nii.gz", ".json")).read_text())
    theirs = json.loads((CORPUS / row["ref_nifti"].replace(".nii.gz", ".json")).read_text())
    assert not sidecar_mismatches(out / name, CORPUS / row["ref_nifti"])
    core = {"Modality", "Manufacturer", "ManufacturersModelName", "MagneticFieldStrength", "EchoTime",
            "RepetitionTime", "FlipAngle", "SliceThickness", "ImageType", "SeriesNumber"}
    assert not (core & set(theirs)) - set(mine), f"missing: {sorted((core & set(theirs)) - set(mine))}"
    assert not IDENTIFYING_KEYS & set(mine)


def test_ome_zarr_image_attributes_hold_the_sidecar(tmp_path):
    """Ingestion stores the same BIDS dictionary (and diffusion table) in the OME-Zarr image attributes."""
    folder = CORPUS / "dcm_qa_uih/In/DTI_134434/dti_tra_dir16_AP_SaveBySlc__140028"
    if not folder.exists():
        pytest.skip(f"reference corpus not found: {CORPUS}")
    import json

    from imaging_pipelines.core.storage import as_upath
    from imaging_pipelines.medical.convert import convert
    from imaging_pipelines.medical.io.dicom import read_dicom_folder
    from imaging_pipelines.medical.io.ome_zarr import read_volume_store, write_volume_store

    written, _ = convert(folder, tmp_path / "nii")
    sidecar = json.loads(next(p for p in written if p.suffix == ".json").read_text())
    (series,) = read_dicom_folder(folder).series
    write_volume_store(as_upath(tmp_path / "p.zarr"), {"s009": series.volume})
    (vol,) = read_volume_store(as_upath(tmp_path / "p.zarr")).values()
    assert vol.attributes["bids"] == sidecar
    assert vol.attributes["diffusion"]["bvals"][1] == pytest.approx(928.2885599370205)


_REF_STEMS = {r["ref_nifti"][:-7] for r in ROWS}
# dcm2niix's names, except "_e1" that only disambiguates two series of one folder ("_e1" / "_e1a", dcm_qa_xa30i)
SUFFIXED = [r for r in ROWS if re.search(r"_(e\d+|ph|real|imaginary|fieldmaphz)$", Path(r["ref_nifti"]).name[:-7])
            and r["ref_nifti"][:-7] + "a" not in _REF_STEMS]


@pytest.mark.parametrize("row", SUFFIXED or [None], ids=lambda r: Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_split_volumes_named_like_dcm2niix(row, out_root):
    """Echoes and image components get dcm2niix's file name suffixes (_e2, _ph, _real, _fieldmaphz, ...)."""
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS}")
    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(CORPUS / row["input_dir"], CORPUS / row["ref_nifti"], out)
    assert name is not None, why
    suffix = re.search(r"((_e\d+)?(_ph|_real|_imaginary|_fieldmaphz)?)$", Path(row["ref_nifti"]).name[:-7]).group(1)
    assert name[:-7].endswith(suffix), f"{name} does not end with {suffix}"
