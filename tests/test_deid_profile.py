"""PS3.15 de-identification of the DICOM objects we write: the table, a planted-PHI source (a value in every
attribute of the Basic Profile table, private tags, nested sequences, names and dates in descriptors) whose
SEG and SR carry none of it, a check that does flag what it must, and the options."""

from __future__ import annotations

import copy
import re

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid

from imaging_pipelines.medical.deid import (
    DeidOptions,
    ProfileViolationError,
    clean_descriptor,
    deidentify,
    hashed_uid,
    profile_table,
    profile_violations,
)
from imaging_pipelines.medical.deid.apply import date_shift_days
from imaging_pipelines.medical.io.dicom import read_dicom_folder
from tests.dicom_factory import write_series
from tests.phi_planting import KEPT_REFERENCES, Planter

hd = pytest.importorskip("highdicom")
NAMES = {1: "lesion", 2: "brain"}


# --------------------------------------------------------------------------- the table
def test_table_covers_the_basic_profile():
    table = profile_table()
    assert len(table) >= 650
    by_keyword = {row.keyword: row for row in table.exact.values() if row.keyword}
    expected = {"PatientName": "Z", "PatientBirthDate": "Z", "AccessionNumber": "Z", "StudyDate": "Z",
                "ReferringPhysicianName": "Z", "OtherPatientNames": "X", "PatientAddress": "X",
                "PatientComments": "X", "AdmissionID": "X", "ConsultingPhysicianName": "Z",
                "ResponsiblePerson": "X", "AdditionalPatientHistory": "X", "ClinicalTrialSubjectID": "D",
                "InstitutionName": "X/Z/D", "SOPInstanceUID": "U", "StudyInstanceUID": "U",
                "SeriesDescription": "X", "ContentDate": "Z/D", "ReferencedImageSequence": "X/Z/U*",
                "ContentSequence": "D", "DeviceSerialNumber": "X/Z/D"}
    assert {k: by_keyword[k].basic_profile for k in expected} == expected
    assert by_keyword["SeriesDescription"].options["clean_descriptors"] == "C"
    assert by_keyword["StudyDate"].options["retain_long_full_dates"] == "K"
    assert by_keyword["PatientAge"].options["retain_patient_characteristics"] == "K"
    assert table.row(0x00091001) is table.private and table.private.basic_profile == "X"
    assert table.row(0x60023000).name == "Overlay Data" and table.row(0x50100005).name == "Curve Data"


def test_table_generator_parses_its_sources():
    from imaging_pipelines.tools.deid_profile_table import anonymizer_actions, merge, render, standard_rows

    source = ("D_TAGS = [\n    (0x0010, 0x0020),  # Patient ID\n]\nX_Z_TAGS = [\n"
              "    (0x6000, 0x4000, 0xFF00, 0xFFFF),  # Overlay Comments\n]\n")
    actions = anonymizer_actions(source)
    assert actions == {"00100020": ("D", "Patient ID"), "60xx4000": ("X/Z", "Overlay Comments")}
    standard = standard_rows('[{"id": "00100020", "name": "Patient ID", "basicProfile": "Z", "rtnUIDsOpt": "K"},'
                             ' {"id": "ggggeeee-where-gggg-is-odd", "name": "Private", "basicProfile": "X"}]')
    rows = merge(actions, standard)
    assert [r["tag"] for r in rows] == ["00100020", "60xx4000", "PRIVATE"]
    assert rows[0]["keyword"] == "PatientID" and rows[0]["retain_uids"] == "K" and "2020 edition: Z" in rows[0]["note"]
    assert "Kitware" in render(rows) and "Innolitics" in render(rows)


def test_clean_descriptor_keeps_imaging_terms_only():
    assert clean_descriptor("DOE^JANE 1945-03-12 T1 AX MPRAGE post-Gd") == "T1 AX MPRAGE POST GD"
    assert clean_descriptor("Dr. Smith, 221B Baker Street") == ""
    assert clean_descriptor(clean_descriptor("t2 flair sag 3d")) == "T2 FLAIR SAG 3D"


# --------------------------------------------------------------------------- planted PHI end to end
@pytest.fixture
def planted_source(tmp_path):
    frame_of_reference = generate_uid()
    files = write_series(tmp_path / "src", shape=(4, 8, 7), spacing=(0.9, 0.9, 3.0), iop=(1, 0, 0, 0, -1, 0),
                         extra={"FrameOfReferenceUID": frame_of_reference})
    image = read_dicom_folder(tmp_path / "src").series[0].volume
    planter = Planter()
    for f in files:
        ds = pydicom.dcmread(f)
        planter = Planter()  # the same values in every file of the series
        planter.plant(ds)
        ds.save_as(f, enforce_file_format=True)
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[1:3, 2:6, 2:5] = 2
    lab[2, 3, 3] = 1
    return files, image, image.with_array(lab), planter


def test_planted_phi_never_reaches_seg_or_sr(tmp_path, planted_source):
    from imaging_pipelines.medical.segment.dicom_outputs import write_dicom_outputs

    files, image, mask, planter = planted_source
    assert len(planter.planted_tags) >= 600 and len(planter.needles) >= 500
    source = pydicom.dcmread(files[0])
    source_instances = {str(pydicom.dcmread(f).SOPInstanceUID) for f in files}
    assert all(int(t) in planter.planted_tags or t in KEPT_REFERENCES for t in (0x00100010, 0x0020000D))
    assert len(profile_violations(source)) >= 500  # the raw source is far from the profile
    for seg_type in ("BINARY", "LABELMAP"):
        out = tmp_path / seg_type
        written = write_dicom_outputs(mask, image, [str(f) for f in files], out, "s1_mr", NAMES,
                                      patient_pseudonym="p0f1e2d3c4b5a6978", algorithm_version="v1",
                                      seg_type=seg_type)
        assert [p.name for p in written] == ["s1_mr.seg.dcm", "s1_mr.sr.dcm"]
        for path in written:
            data = path.read_bytes()
            leaks = sorted(n for n in planter.needles if n.encode() in data)
            assert leaks == [], f"{path.name}: planted values found: {leaks[:20]}"
            ds = pydicom.dcmread(path)
            assert profile_violations(ds, pseudonym="p0f1e2d3c4b5a6978") == []
            assert ds.PatientIdentityRemoved == "YES" and ds.PatientName == "p0f1e2d3c4b5a6978"
            assert not [e for e in ds.iterall() if e.tag.is_private]
            # the references it keeps by design: the source's study, series and instance UIDs
            assert ds.StudyInstanceUID == source.StudyInstanceUID
            assert str(source.SeriesInstanceUID).encode() in data
            assert all(uid.encode() in data for uid in source_instances)
        seg = pydicom.dcmread(written[0])
        assert seg.FrameOfReferenceUID == source.FrameOfReferenceUID
        assert seg.get("StudyDescription", "") in ("", "T1 AX") and seg.get("SeriesDescription") == "SEGMENTATION"


# --------------------------------------------------------------------------- the check flags what it must
@pytest.fixture
def clean_seg(tmp_path):
    from imaging_pipelines.medical.segment.dicom_seg import write_dicom_seg

    files = write_series(tmp_path / "src", shape=(3, 6, 6), extra={"FrameOfReferenceUID": generate_uid()})
    image = read_dicom_folder(tmp_path / "src").series[0].volume
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[1, 2:4, 2:4] = 1
    path = write_dicom_seg(image.with_array(lab), files, tmp_path / "x.dcm", {1: "lesion"}, patient_pseudonym="p1")
    ds = pydicom.dcmread(path)
    assert profile_violations(ds, pseudonym="p1") == []
    return ds


def _nested(ds: Dataset) -> None:
    ds.ReferencedSeriesSequence[0].PatientAddress = "221B Baker Street"


def _private(ds: Dataset) -> None:
    ds.private_block(0x0029, "SIEMENS CSA HEADER", create=True).add_new(0x10, "OB", b"QUIMBY  ")


PLANTS = {
    "removed attribute": (lambda ds: setattr(ds, "OtherPatientNames", "QUIMBY^Z"), r"OtherPatientNames: present"),
    "emptied attribute": (lambda ds: setattr(ds, "PatientBirthDate", "19450312"), r"PatientBirthDate: holds a value"),
    "private attribute": (_private, r"\(0029,(0010|1010)\): private attribute"),  # data and its creator
    "nested attribute": (_nested, r"ReferencedSeriesSequence>PatientAddress: present"),
    "dirty descriptor": (lambda ds: setattr(ds, "StudyDescription", "QUIMBY T1"), r"StudyDescription: descriptor not"),
    "real date": (lambda ds: setattr(ds, "ContentDate", "20240102"), r"ContentDate: holds a date"),
    "identity": (lambda ds: setattr(ds, "PatientID", "PID-4711"), r"PatientID: not the pseudonym"),
    "unmarked": (lambda ds: delattr(ds, "PatientIdentityRemoved"), r"PatientIdentityRemoved: not YES"),
}


@pytest.mark.parametrize("case", list(PLANTS))
def test_check_flags_a_planted_attribute(clean_seg, case):
    plant, message = PLANTS[case]
    ds = copy.deepcopy(clean_seg)
    plant(ds)
    found = profile_violations(ds, pseudonym="p1")
    assert found and all(re.search(message, f) for f in found), found
    assert len(found) == (2 if case == "private attribute" else 1), found
    if case not in ("identity", "unmarked"):  # deidentify removes what the check flags
        deidentify(ds, "p1")
        assert profile_violations(ds, pseudonym="p1") == []


def test_outputs_refuse_to_publish_a_violation(tmp_path, monkeypatch):
    """write_dicom_outputs checks what it wrote: a de-identification that leaves an attribute is not published."""
    import imaging_pipelines.medical.segment.dicom_seg as dicom_seg
    from imaging_pipelines.medical.segment.dicom_outputs import write_dicom_outputs

    files = write_series(tmp_path / "src", shape=(3, 6, 6), extra={"FrameOfReferenceUID": generate_uid()})
    image = read_dicom_folder(tmp_path / "src").series[0].volume
    mask = image.with_array((image.array > image.array.mean()).astype(np.uint8))

    def leaky(ds, pseudonym, options=None):
        deidentify(ds, pseudonym, options)
        ds.OtherPatientNames = "QUIMBY^Z"

    monkeypatch.setattr(dicom_seg, "deidentify", leaky)
    with pytest.raises(ProfileViolationError, match="OtherPatientNames"):
        write_dicom_outputs(mask, image, [str(f) for f in files], tmp_path / "out", "a", {1: "lesion"},
                            patient_pseudonym="p1", algorithm_version="v1")
    assert list((tmp_path / "out").iterdir()) == []


# --------------------------------------------------------------------------- options
def _dataset(**values) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.4"  # MR Image Storage
    ds.SOPInstanceUID = generate_uid()
    for key, value in values.items():
        setattr(ds, key, value)
    return ds


def test_uids_are_replaced_consistently_and_kept_when_referenced():
    study, other = generate_uid(), generate_uid()
    a = _dataset(StudyInstanceUID=study, SeriesInstanceUID=other, FrameOfReferenceUID=other)
    b = _dataset(StudyInstanceUID=study)
    deidentify(a, "p1")
    deidentify(b, "p2")
    assert a.StudyInstanceUID == b.StudyInstanceUID == hashed_uid(study) != study
    assert a.SeriesInstanceUID == a.FrameOfReferenceUID != a.StudyInstanceUID
    assert re.fullmatch(r"2\.25\.\d{1,39}", a.StudyInstanceUID) and len(a.StudyInstanceUID) <= 64
    c = _dataset(StudyInstanceUID=study)
    deidentify(c, "p1", DeidOptions(keep_uids=frozenset({study})))
    assert c.StudyInstanceUID == study
    assert "113110" in {i.CodeValue for i in c.DeidentificationMethodCodeSequence}  # Retain UIDs recorded


@pytest.mark.parametrize("mode", ["off", "full", "modified"])
def test_retain_longitudinal_temporal_information(mode):
    ds = _dataset(StudyDate="20240315", StudyTime="101500", AcquisitionDateTime="20240315101600")
    deidentify(ds, "p7", DeidOptions(retain_longitudinal=mode))
    if mode == "off":
        assert not ds.StudyDate and not ds.StudyTime and "AcquisitionDateTime" not in ds
    elif mode == "full":
        assert (ds.StudyDate, ds.StudyTime) == ("20240315", "101500")
    else:
        days = date_shift_days("p7", DeidOptions(retain_longitudinal=mode))
        assert 1 <= days <= 3650
        shifted = (np.datetime64("2024-03-15") - np.timedelta64(days, "D")).astype(str).replace("-", "")
        assert ds.StudyDate == shifted and ds.StudyTime == "101500"
    assert ds.LongitudinalTemporalInformationModified == {"off": "REMOVED", "full": "UNMODIFIED",
                                                          "modified": "MODIFIED"}[mode]


def test_private_descriptor_and_characteristics_options():
    ds = _dataset(SeriesDescription="DOE^JANE T2 FLAIR", PatientAge="047Y", PatientWeight="71")
    block = ds.private_block(0x0019, "SAFE VENDOR", create=True)
    block.add_new(0x0C, "DS", "1000")  # e.g. a b-value a site declared safe
    block.add_new(0x0D, "LO", "DOE^JANE")
    kept = copy.deepcopy(ds)
    deidentify(ds, "p1")
    assert ds.SeriesDescription == "T2 FLAIR" and "PatientAge" not in ds and "PatientWeight" not in ds
    assert not [e for e in ds if e.tag.is_private]
    options = DeidOptions(clean_descriptors=False, retain_patient_characteristics=True, retain_safe_private=True,
                          safe_private=frozenset({("SAFE VENDOR", 0x0C)}))
    deidentify(kept, "p1", options)
    assert "SeriesDescription" not in kept and kept.PatientAge == "047Y" and kept.PatientWeight == 71
    assert [str(e.value) for e in kept if e.tag.is_private] == ["SAFE VENDOR", "1000"]
    assert profile_violations(kept, options) == [] and profile_violations(kept) != []


def test_clean_never_keeps_what_it_cannot_clean():
    """Under Clean Descriptors: a short-string descriptor is cleaned, a binary one (MakerNote) removed, one with
    no safe word takes its Basic action (RT Plan Label: D, a dummy)."""
    ds = _dataset(Occupation="QUIMBY LTD MR", MakerNote=b"QUIMBY^ZEBEDEE 19450312 ", RTPlanLabel="QUIMBY")
    assert len(profile_violations(ds)) >= 3
    deidentify(ds, "p1")
    assert ds.Occupation == "MR" and "MakerNote" not in ds and ds.RTPlanLabel == "ANONYMIZED"
    assert profile_violations(ds) == []
