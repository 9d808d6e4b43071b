"""DICOM SEG of both types (BINARY, LABELMAP) reproduces a label map exactly on axial, oblique and flipped grids,
read back through highdicom (by source instance) and through pydicom (our reader, by frame position)."""

from __future__ import annotations

import numpy as np
import pydicom
import pytest
from pydicom.uid import generate_uid

from imaging_pipelines.medical.deid import profile_violations
from imaging_pipelines.medical.io.dicom import read_dicom_folder
from imaging_pipelines.medical.segment.dicom_seg import read_dicom_seg_labels, write_dicom_seg
from tests.dicom_factory import write_series

hd = pytest.importorskip("highdicom")

SEGMENT_NAMES = {2: "lesion", 7: "brain"}  # label values -> names; segment numbers 1, 2
SOP_CLASSES = {"BINARY": "1.2.840.10008.5.1.4.1.1.66.4", "LABELMAP": "1.2.840.10008.5.1.4.1.1.66.7"}


def _oblique_iop() -> tuple[float, ...]:
    a, b = np.deg2rad(20.0), np.deg2rad(35.0)
    rz = np.array([[np.cos(b), -np.sin(b), 0], [np.sin(b), np.cos(b), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    m = rz @ rx
    return tuple(np.concatenate([m[:, 0], m[:, 1]]).round(8))


GRIDS = {
    "axial": (1, 0, 0, 0, 1, 0),
    "oblique": _oblique_iop(),
    "flipped": (-1, 0, 0, 0, -1, 0),  # rows and columns run towards -x, -y (slices still along +z)
    "flipped_slices": (-1, 0, 0, 0, 1, 0),  # slice normal row x col = -z: slices run towards the feet
}


def _labels(shape) -> np.ndarray:
    """Two segments with a gap slice (no frame) and an overlap-free layout; slice 0 empty."""
    lab = np.zeros(shape, np.uint8)
    lab[1:, 2:6, 1:4] = 7
    lab[2, 3:5, 2:5] = 2
    lab[4, 0, 0] = 2
    lab[3] = 0  # an empty slice inside the volume
    return lab


@pytest.mark.parametrize("seg_type", ["BINARY", "LABELMAP"])
@pytest.mark.parametrize("grid", list(GRIDS))
def test_seg_reproduces_the_mask(tmp_path, grid, seg_type):
    files = write_series(tmp_path / "src", shape=(6, 8, 7), spacing=(0.7, 0.9, 2.0), iop=GRIDS[grid],
                         origin=(12.0, -30.0, 5.0), patient_name="QUIMBY^ZEBEDEE", patient_id="PID-99812",
                         extra={"FrameOfReferenceUID": generate_uid()})
    files = [files[i] for i in (3, 0, 5, 1, 4, 2)]  # file order must not matter
    reference = read_dicom_folder(tmp_path / "src").series[0].volume
    labels = reference.with_array(_labels(reference.spatial_shape))
    seg_path = write_dicom_seg(labels, files, tmp_path / "x.seg.dcm", SEGMENT_NAMES, patient_pseudonym="p00aa",
                               seg_type=seg_type)
    numbers = np.select([labels.array == 2, labels.array == 7], [1, 2], 0).astype(np.uint8)

    # highdicom: the pixels by source instance, every source slice
    seg = hd.seg.segread(seg_path)
    assert seg.SOPClassUID == SOP_CLASSES[seg_type] and seg.SegmentationType == seg_type
    sources = [pydicom.dcmread(f) for f in files]
    k_of = {}
    for s in sources:
        delta = np.asarray(s.ImagePositionPatient, float) - np.asarray(reference.origin)
        k_of[s.SOPInstanceUID] = int(round(np.dot(delta, reference.direction[:, 2]) / reference.spacing[2]))
    uids = [s.SOPInstanceUID for s in sources]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, combine_segments=True,
                                               skip_overlap_checks=True)
    for n, uid in enumerate(uids):
        assert np.array_equal(pixels[n], numbers[k_of[uid]]), f"slice of {uid}"
    assert seg.ReferencedSeriesSequence[0].SeriesInstanceUID == sources[0].SeriesInstanceUID
    assert seg.FrameOfReferenceUID == sources[0].FrameOfReferenceUID

    # pydicom, our reader: frames placed by position on the reference grid
    back = read_dicom_seg_labels(seg_path, reference)
    assert back.same_geometry(reference)
    assert np.array_equal(back.array, numbers)
    assert back.attributes["segment_names"] == {1: "lesion", 2: "brain"}

    raw = pydicom.dcmread(seg_path)
    assert profile_violations(raw, pseudonym="p00aa") == []
    assert b"QUIMBY" not in seg_path.read_bytes() and b"PID-99812" not in seg_path.read_bytes()


def test_labelmap_is_smaller_with_many_segments(tmp_path):
    """LABELMAP stores one frame per slice whatever the number of segments; BINARY one per segment and slice."""
    files = write_series(tmp_path / "src", shape=(4, 8, 8), extra={"FrameOfReferenceUID": generate_uid()})
    reference = read_dicom_folder(tmp_path / "src").series[0].volume
    lab = np.zeros(reference.spatial_shape, np.uint8)
    for v in range(1, 5):
        lab[:, v, :] = v
    labels = reference.with_array(lab)
    names = {v: f"tissue {v}" for v in range(1, 5)}
    binary = pydicom.dcmread(write_dicom_seg(labels, files, tmp_path / "b.dcm", names, seg_type="BINARY"))
    labelmap = pydicom.dcmread(write_dicom_seg(labels, files, tmp_path / "l.dcm", names, seg_type="LABELMAP"))
    assert int(binary.NumberOfFrames) == 16 and int(labelmap.NumberOfFrames) == 4
    with pytest.raises(ValueError, match="seg_type"):
        write_dicom_seg(labels, files, tmp_path / "f.dcm", names, seg_type="FRACTIONAL")


def test_seg_write_is_atomic_on_failure(tmp_path, monkeypatch):
    """A write that dies half-way (disk full) leaves the previous SEG in place and no temporary file behind."""
    files = write_series(tmp_path / "src", shape=(3, 6, 6), extra={"FrameOfReferenceUID": generate_uid()})
    reference = read_dicom_folder(tmp_path / "src").series[0].volume
    labels = reference.with_array((np.arange(reference.array.size).reshape(reference.spatial_shape) % 2).astype(np.uint8))
    out = write_dicom_seg(labels, files, tmp_path / "out" / "x.seg.dcm", {1: "lesion"})
    before = out.read_bytes()

    def half_write(self, filename, *args, **kwargs):
        with open(filename, "wb") as handle:
            handle.write(b"\0" * 100)
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(pydicom.Dataset, "save_as", half_write)
    with pytest.raises(OSError, match="No space"):
        write_dicom_seg(labels, files, out, {1: "lesion"}, patient_pseudonym="p1")
    assert out.read_bytes() == before
    assert [p.name for p in out.parent.iterdir()] == ["x.seg.dcm"]
