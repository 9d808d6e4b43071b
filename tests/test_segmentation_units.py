"""Pieces of the segmentation chain that need no training: label files in the inbox, the catalog block,
post-processing, the classical baselines and the train/test split."""

from __future__ import annotations

import numpy as np
import pytest

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom
from imaging_pipelines.core.errors import CatalogError, ImagingInputError
from imaging_pipelines.medical.inbox import diff_inbox, list_inbox_files, scan_inbox
from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.medical.ingest import ingest_patient_files
from imaging_pipelines.config.catalog import SeriesSelection
from imaging_pipelines.medical.segment.baselines import BASELINES, run_baseline
from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
from imaging_pipelines.medical.segment.postprocess import postprocess_labels
from imaging_pipelines.medical.stages.segmentation_data import partition_split
from imaging_pipelines.core.volume import Volume
from tests.conftest import write_catalog
from tests.pipeline_helpers import identity
from imaging_pipelines.tools.demo.dicom_writer import write_dicom_series

SUFFIXES = ("_label", "_seg")


def dicom_patient(inbox, patient_id="PID-1"):
    image = Volume(np.arange(6 * 8 * 10, dtype=np.int16).reshape(6, 8, 10), spacing=(1.0, 1.0, 2.0),
                   origin=(-4.0, -3.0, 10.0))
    write_dicom_series(image, inbox / "case_a" / "s01_t1", patient=identity(patient_id), series_number=1,
                       series_description="T1w")
    return image


def test_label_files_follow_their_patient(tmp_path):
    inbox = tmp_path / "inbox"
    image = dicom_patient(inbox)
    label = image.with_array((image.array % 7 == 0).astype(np.uint8) * 5)
    write_nifti(label, inbox / "case_a" / "s01_t1_label.nii.gz")  # beside the series folder
    write_nifti(image.with_array(image.array.astype(np.float32)), inbox / "sub-02" / "sub-02_T1w.nii.gz")
    write_nifti(label, inbox / "sub-02" / "sub-02_T1w_seg.nii.gz")
    groups = scan_inbox(inbox, ["dicom", "nifti"], SUFFIXES)
    assert len(groups.by_patient) == 2 and not groups.unassigned
    for files in groups.by_patient.values():
        assert sum(f.is_label for f in files) == 1
    # without label suffixes the label file would be a patient "s01" of its own
    assert len(scan_inbox(inbox, ["dicom", "nifti"]).by_patient) == 3

    # a sensor pass where only the label changed still files it under the DICOM patient
    state = diff_inbox({}, list_inbox_files(inbox, ["dicom", "nifti"], SUFFIXES)).state
    (inbox / "case_a" / "s01_t1_label.nii.gz").unlink()
    write_nifti(label, inbox / "case_a" / "s01_t1_label.nii.gz")
    import os

    os.utime(inbox / "case_a" / "s01_t1_label.nii.gz", ns=(1, 1))
    changes = diff_inbox(state, list_inbox_files(inbox, ["dicom", "nifti"], SUFFIXES))
    dicom_key = next(k for k, fs in groups.by_patient.items() if any(f.format == "dicom" for f in fs))
    assert changes.changed_patients == [dicom_key]
    assert len(changes.current_patients) == 2


def test_label_attached_to_the_image_on_its_grid(tmp_path):
    inbox = tmp_path / "inbox"
    image = dicom_patient(inbox)
    write_nifti(image.with_array((image.array > 200).astype(np.uint8)), inbox / "case_a" / "s01_t1_label.nii.gz")
    other = Volume(np.ones((3, 4, 5), np.uint8), spacing=(1.0, 1.0, 1.0))
    write_nifti(other, inbox / "case_a" / "elsewhere_label.nii.gz")
    (files,) = scan_inbox(inbox, ["dicom", "nifti"], SUFFIXES).by_patient.values()
    patient = ingest_patient_files(files, SeriesSelection())
    (name,) = patient.images
    ref = patient.labels[name]["reference"]
    np.testing.assert_array_equal(ref.array, (image.array > 200).astype(np.uint8))
    assert any("elsewhere_label.nii.gz: label map on no image's grid" in n for n in patient.notes)


def test_non_integer_label_file_fails_naming_it(tmp_path):
    inbox = tmp_path / "inbox"
    image = dicom_patient(inbox)
    write_nifti(image.with_array(np.full(image.spatial_shape, 0.5, np.float32)), inbox / "case_a" / "s01_t1_label.nii.gz")
    (files,) = scan_inbox(inbox, ["dicom", "nifti"], SUFFIXES).by_patient.values()
    with pytest.raises(ImagingInputError, match="s01_t1_label.nii.gz.*integer values"):
        ingest_patient_files(files, SeriesSelection())


def test_catalog_segmentation_block_is_validated(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    catalog = write_catalog(tmp_path, segmentation='{"method": "dynunet"}')
    with pytest.raises(CatalogError, match="labels.source"):
        load_catalog(catalog)
    catalog = write_catalog(tmp_path, segmentation='{"method": "otsu", "classes": {"lesion": 0}, "image_pattern": "("}')
    with pytest.raises(CatalogError) as err:
        load_catalog(catalog)
    assert "segmentation.classes" in str(err.value) and "segmentation.image_pattern" in str(err.value)
    catalog = write_catalog(tmp_path, segmentation='{"method": "dynunet", "labels": {"source": "inbox"}}')
    (ds,) = load_catalog(catalog)
    assert ds.label_suffixes == SUFFIXES and ds.segmentation.uses_model


def test_postprocess_removes_small_components_and_fills_holes():
    a = np.zeros((20, 20, 20), np.uint8)
    a[2:10, 2:10, 2:10] = 5
    a[5, 5, 5] = 0  # a hole
    a[15:17, 15:17, 15:17] = 5  # 8 voxels of 8 mm^3 = 0.064 mL
    a[0, 19, 19] = 3  # another label, one voxel
    out, report = postprocess_labels(Volume(a, spacing=(2.0, 2.0, 2.0)), min_component_ml=0.1)
    assert out.array[5, 5, 5] == 5 and not out.array[15:17, 15:17, 15:17].any() and out.array[0, 19, 19] == 0
    assert report.removed_components == 2 and report.filled_ml == pytest.approx(0.008)
    kept, _ = postprocess_labels(Volume(a, spacing=(2.0, 2.0, 2.0)), keep_largest=1, fill_holes=False)
    assert kept.array[5, 5, 5] == 0 and not kept.array[15:17, 15:17, 15:17].any() and kept.array[0, 19, 19] == 3
    untouched, report = postprocess_labels(Volume(a, spacing=(2.0, 2.0, 2.0)), fill_holes=False)  # nothing asked
    assert np.array_equal(untouched.array, a) and report.removed_components == 0 and report.removed_ml == 0
    filled, _ = postprocess_labels(Volume(a, spacing=(2.0, 2.0, 2.0)))  # holes only: every component stays
    assert filled.array[5, 5, 5] == 5 and np.array_equal(np.where(filled.array != a)[0], [5])


def test_class_figures_rows_equal_connected_components_statistics():
    """The per-object rows (one labelling and one pass of sums per class) carry the figures
    connected_components computes with SimpleITK for each class's binary mask: same numbering (largest
    first), volumes, LPS centroids (rotated, flipped grid, anisotropic spacing) and mean intensities."""
    from scipy import ndimage

    from imaging_pipelines.medical.segment.classical import connected_components
    from imaging_pipelines.medical.stages.segmentation import class_figures

    rng = np.random.default_rng(1)
    array = (ndimage.gaussian_filter(rng.random((30, 40, 50)), 2) > 0.52).astype(np.uint8)
    array[rng.random(array.shape) < 0.01] = 2
    array[5:9, 5:9, 5:9] = 2
    direction = np.array([[0.0, 1.0, 0.0], [1.0, 0.0, 0.0], [0.0, 0.0, -1.0]])
    image = Volume(rng.normal(size=array.shape).astype(np.float32) * 100, spacing=(0.7, 1.1, 2.5),
                   origin=(3.0, -5.0, 7.0), direction=direction)
    figures, objects = class_figures(image.with_array(array), {"a": 1, "b": 2}, image)
    for name, value in (("a", 1), ("b", 2)):
        _, stats = connected_components(image.with_array((array == value).astype(np.uint8)), image=image)
        rows = [o for o in objects if o["class"] == name]
        assert (name, len(stats), pytest.approx(np.count_nonzero(array == value) * 0.7 * 1.1 * 2.5 / 1000)) in figures
        assert len(rows) == min(len(stats), 200) > 10
        for row, s in zip(rows, stats):
            assert row["object"] == s.label and row["volume_ml"] == round(s.volume_ml, 3)
            assert [float(c) for c in row["centroid_lps_mm"].split(", ")] == pytest.approx(s.centroid_lps_mm, abs=0.051)
            assert row["mean_intensity"] == pytest.approx(s.mean_intensity, abs=1e-3)


def test_baselines_find_a_phantom_lesion():
    image, labels = brain_like_phantom((48, 64, 64), (3.0, 3.0, 3.0), seed=3, min_lesions=1)
    volume = Volume(image, spacing=(3.0, 3.0, 3.0))
    reference = Volume((labels == BRAIN_LESION).astype(np.uint8), spacing=(3.0, 3.0, 3.0))
    dice = {}
    for name in BASELINES:
        mask, report = run_baseline(name, volume)
        assert mask.array.dtype == np.uint8 and set(np.unique(mask.array)) <= {0, 1}
        dice[name] = segmentation_metrics(mask, reference, labels=[1])[1]["dice"]
    assert dice["otsu"] > 0.1 and dice["watershed"] > 0.1  # weak, as baselines are, but not blind
    with pytest.raises(ValueError, match="unknown baseline"):
        run_baseline("magic", volume)


def test_split_is_stable_and_roughly_the_fraction(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    (ds,) = load_catalog(write_catalog(tmp_path, segmentation='{"method": "otsu", "training": {"test_fraction": 0.25}}'))
    keys = [f"p{i:016x}" for i in range(400)]
    splits = [partition_split(ds, k) for k in keys]
    assert splits == [partition_split(ds, k) for k in keys]
    assert 0.18 < splits.count("test") / len(keys) < 0.32


def test_class_figures_count_every_object_but_rows_only_the_largest_of_a_speckled_mask():
    """A speckled mask (thousands of one-voxel objects, as an untrained model gives) is counted and measured in
    full; per-object statistics rows are kept for the largest objects only, so the stage stays cheap."""
    import time

    from imaging_pipelines.medical.stages.segmentation import MAX_OBJECT_ROWS, class_figures

    rng = np.random.default_rng(0)
    array = np.zeros((40, 60, 60), np.uint8)
    array[::2, ::2, ::2] = (rng.random((20, 30, 30)) < 0.5) * 2  # isolated voxels of label 2
    array[2:8, 2:8, 2:8] = 2  # one big object
    image = Volume(rng.normal(size=array.shape).astype(np.float32), spacing=(1.0, 1.0, 2.0))
    mask = image.with_array(array)
    from scipy import ndimage

    expected_count = ndimage.label(array == 2)[1]
    start = time.perf_counter()
    figures, objects = class_figures(mask, {"lesion": 2, "absent": 3}, image)
    elapsed = time.perf_counter() - start
    assert expected_count > 4000
    assert figures[0] == ("lesion", expected_count, pytest.approx(np.count_nonzero(array == 2) * 2.0 / 1000))
    assert figures[1] == ("absent", 0, 0.0)
    assert len(objects) == MAX_OBJECT_ROWS and objects[0]["object"] == 1
    assert objects[0]["volume_ml"] >= 6 * 6 * 6 * 2.0 / 1000 > objects[1]["volume_ml"]  # the big one (and touching specks) first
    assert elapsed < 20  # 71,000 objects took 7.4 s before; not a timing test, a guard against the per-object loop
    small = mask.with_array(np.where(array == 2, 0, array).astype(np.uint8))
    small.array[2:8, 2:8, 2:8] = 2
    assert len(class_figures(small, {"lesion": 2}, image)[1]) == 1
