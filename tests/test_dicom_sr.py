"""TID 1500 measurement report: parses with highdicom and pydicom, its volumes equal the mask volumes within 0.1 %,
its intensities are the image's (HU for CT), and it references the SEG and the source series."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from imaging_pipelines.medical.io.dicom import read_dicom_folder
from imaging_pipelines.medical.segment.dicom_outputs import write_dicom_outputs
from tests.dicom_factory import write_series

hd = pytest.importorskip("highdicom")

NAMES = {1: "lesion", 3: "liver", 4: "kidney"}  # kidney stays empty


@pytest.fixture
def ct_case(tmp_path):
    rng = np.random.default_rng(3)
    stored = rng.integers(0, 2000, size=(5, 10, 9), dtype=np.int16)
    files = write_series(tmp_path / "src", shape=stored.shape, spacing=(0.8, 0.75, 2.5), modality="CT",
                         data=stored, rescale=(1.0, -1024.0), iop=(1, 0, 0, 0, -1, 0),
                         extra={"FrameOfReferenceUID": generate_uid()})
    image = read_dicom_folder(tmp_path / "src").series[0].volume
    lab = np.zeros(image.spatial_shape, np.uint8)
    lab[1:4, 2:7, 2:6] = 3
    lab[2, 4:6, 3:5] = 1
    return image, image.with_array(lab), [str(f) for f in files]


def test_report_values_and_references(tmp_path, ct_case):
    image, mask, files = ct_case
    seg_path, sr_path = write_dicom_outputs(mask, image, files, tmp_path / "out", "s1_ct", NAMES,
                                            patient_pseudonym="p5eed", algorithm_version="v7")
    assert seg_path.name == "s1_ct.seg.dcm" and sr_path.name == "s1_ct.sr.dcm"
    sr = hd.sr.srread(sr_path)
    seg = pydicom.dcmread(seg_path)
    source = pydicom.dcmread(files[0])
    assert isinstance(sr, hd.sr.Comprehensive3DSR)

    groups = sr.content.get_volumetric_roi_measurement_groups()
    assert len(groups) == len(NAMES)
    voxel_ml = float(np.prod(mask.spacing)) / 1000.0
    for number, (value, name) in enumerate(sorted(NAMES.items()), start=1):
        group = next(g for g in groups if g.referenced_segment.referenced_segment_numbers == [number])
        inside = mask.array == value
        measured = {(m.name.meaning, m.derivation.meaning if m.derivation else None): (m.value, m.unit.value)
                    for m in group.get_measurements()}
        volume, unit = measured[("Volume", None)]
        assert unit == "mL"
        expected = inside.sum() * voxel_ml
        assert volume == pytest.approx(expected, rel=1e-3, abs=1e-9)
        assert measured[("Voxel count", None)][0] == inside.sum()
        if inside.any():
            hu = image.array[inside].astype(float)
            assert measured[("Attenuation Coefficient", "Mean")] == (pytest.approx(hu.mean(), rel=1e-6), "[hnsf'U]")
            assert measured[("Attenuation Coefficient", "Minimum")][0] == pytest.approx(hu.min())
            assert measured[("Attenuation Coefficient", "Maximum")][0] == pytest.approx(hu.max())
            assert hu.min() < 0  # rescale intercept applied: values are HU, not stored values
        else:
            assert ("Attenuation Coefficient", "Mean") not in measured

        referenced = group.referenced_segment
        assert referenced.referenced_sop_instance_uid == seg.SOPInstanceUID
        assert referenced.source_series_for_segmentation.value == source.SeriesInstanceUID

    raw = pydicom.dcmread(sr_path)
    assert raw.StudyInstanceUID == source.StudyInstanceUID == seg.StudyInstanceUID
    evidence = raw.CurrentRequestedProcedureEvidenceSequence[0].ReferencedSeriesSequence
    assert {s.SeriesInstanceUID for s in evidence} == {source.SeriesInstanceUID, seg.SeriesInstanceUID}
    instances = {i.ReferencedSOPInstanceUID for s in evidence for i in s.ReferencedSOPSequence}
    assert seg.SOPInstanceUID in instances
    assert {pydicom.dcmread(f).SOPInstanceUID for f in files} <= instances
    assert str(raw.PatientName) == raw.PatientID == "p5eed"


def test_report_skipped_and_segment_labels_checked(tmp_path, ct_case):
    from imaging_pipelines.medical.segment.dicom_sr import write_measurement_report

    image, mask, files = ct_case
    written = write_dicom_outputs(mask, image, files, tmp_path / "out", "a", NAMES, patient_pseudonym="p1",
                                  algorithm_version="v1", write_sr=False, seg_type="LABELMAP")
    assert [p.name for p in written] == ["a.seg.dcm"] and sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.seg.dcm"]
    with pytest.raises(ValueError, match="segment 2"):
        write_measurement_report(written[0], files, mask, image, tmp_path / "a.sr.dcm", {1: "lesion", 3: "spleen"},
                                 patient_pseudonym="p1", algorithm_version="v1")
    with pytest.raises(ValueError, match="same grid"):
        write_measurement_report(written[0], files, mask, replace(image, origin=tuple(np.add(image.origin, 1.0))),
                                 tmp_path / "a.sr.dcm", NAMES, patient_pseudonym="p1", algorithm_version="v1")
