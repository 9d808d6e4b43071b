"""Demo MR patients on real anatomy (tools/demo/mni_head.py): MNI152 brain shape and size, lesions inside the
brain, fixed contrasts, determinism, the same anatomy on axial / sagittal / oblique grids, the MNI152 atlas."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from imaging_pipelines.tools.demo import mni_head
from imaging_pipelines.tools.demo.atlas import ATLAS_SHAPE, write_demo_atlas
from imaging_pipelines.tools.demo.cohort import orientation_direction
from imaging_pipelines.tools.demo.phantom import brain_like_phantom
from imaging_pipelines.medical.io.image_files import read_nifti

SHAPE, SPACING = (48, 64, 64), (3.0, 3.0, 3.5)  # the cohort's MR grid
VOXEL_L = float(np.prod(SPACING)) / 1e6
BRAIN = (2, 3, 4, 5)  # CSF, GM, WM, lesion


@pytest.fixture(scope="module")
def patient() -> mni_head.MniPatient:
    return mni_head.make_patient(11)


@pytest.fixture(scope="module")
def series(patient):
    return {(o, c): mni_head.render_series(patient, SHAPE, SPACING, c, direction=orientation_direction(o))
            for o, c in (("axial", "T1"), ("sagittal", "T2"), ("oblique", "T1"), ("axial", "T2"))}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def test_brain_has_the_mni152_shape_and_size(series):
    _, labels = series[("axial", "T1")]
    assert labels.dtype == np.uint8 and set(np.unique(labels)) == {0, 1, 2, 3, 4, 5}
    brain = np.isin(labels, BRAIN)
    assert 1.0 <= brain.sum() * VOXEL_L <= 1.8, brain.sum() * VOXEL_L
    fractions = {k: (labels == k).sum() / brain.sum() for k in (2, 3, 4)}
    assert all(0.05 < f < 0.7 for f in fractions.values()), fractions  # CSF, GM, WM all present
    _, template_brain = mni_head.mni_template_on_grid(SHAPE, SPACING)
    # deformed MNI152 (rotation <= 8 deg, shift <= 8 mm, scale 0.86-1) vs the template itself: measured 0.83-0.86;
    # the ellipsoid phantom scores 0.71, so an ellipsoid (or any non-brain shape) fails
    assert _dice(brain, template_brain.array > 0) > 0.78
    _, phantom = brain_like_phantom(SHAPE, SPACING, seed=11)
    assert _dice(phantom >= 2, template_brain.array > 0) < 0.78


def test_lesions_lie_inside_the_brain(series):
    _, labels = series[("axial", "T1")]
    lesion = labels == 5
    components, n = ndimage.label(lesion)
    assert n >= 1 and lesion.sum() * VOXEL_L * 1000 >= 0.5  # at least one lesion of half a millilitre
    shell = ndimage.binary_dilation(lesion) & ~lesion
    assert np.isin(labels[shell], BRAIN).mean() > 0.9  # surrounded by brain (measured 0.95 on seed 11), not scalp or air


def test_oedema_is_labelled_as_the_tissue_it_lies_in(patient):
    oedema = patient.codes == mni_head.OEDEMA
    if oedema.any():
        assert set(np.unique(patient.labels[oedema])) <= {2, 3, 4}
    tumour = np.isin(patient.codes, (mni_head.RIM, mni_head.CORE))
    assert tumour.any() and (patient.labels[tumour] == 5).all() and (patient.labels[~tumour] != 5).all()


def test_fixed_contrasts(series):
    t1, labels = series[("axial", "T1")]
    t2, labels2 = series[("axial", "T2")]
    np.testing.assert_array_equal(labels, labels2)  # one patient, one grid: same labels whatever the contrast
    med1 = {k: float(np.median(t1[labels == k])) for k in (0, 2, 3, 4)}
    med2 = {k: float(np.median(t2[labels == k])) for k in (0, 2, 3, 4, 5)}
    assert med1[4] > med1[3] > med1[2] > med1[0]  # T1: WM > GM > CSF > air
    assert med2[2] > med2[3] > med2[4] > med2[0]  # T2: CSF > GM > WM > air
    assert med2[5] > med2[3]  # lesion hyper-intense on T2
    assert np.percentile(t1[labels == 5], 90) > med1[4] + 100  # enhancing rim brighter than white matter on T1


def test_deterministic_per_seed(patient):
    again = mni_head.make_patient(11)
    np.testing.assert_array_equal(again.labels, patient.labels)
    a = mni_head.render_series(patient, SHAPE, SPACING, "T1")
    b = mni_head.render_series(again, SHAPE, SPACING, "T1")
    np.testing.assert_array_equal(a[0], b[0])
    other = mni_head.make_patient(12)
    assert not np.array_equal(other.labels, patient.labels)


def test_sagittal_and_oblique_grids_hold_the_same_anatomy(series):
    axial = series[("axial", "T1")][1]
    for orientation, contrast in (("sagittal", "T2"), ("oblique", "T1")):
        labels = series[(orientation, contrast)][1]
        assert np.isin(labels, BRAIN).sum() == pytest.approx(np.isin(axial, BRAIN).sum(), rel=0.02), orientation
        assert (labels == 5).sum() == pytest.approx((axial == 5).sum(), rel=0.15), orientation
        assert (labels == 4).sum() == pytest.approx((axial == 4).sum(), rel=0.05), orientation


def test_demo_atlas_is_the_mni152_template(tmp_path):
    image_path, mask_path = write_demo_atlas(tmp_path)
    image, mask = read_nifti(image_path), read_nifti(mask_path)
    assert image.spatial_shape == mask.spatial_shape == ATLAS_SHAPE
    assert np.allclose(image.direction, np.eye(3)) and np.allclose(image.spacing, (3.0, 3.0, 3.0))
    brain = mask.array > 0
    assert 1.5 <= brain.sum() * 27e-6 <= 2.1  # the template's brain with CSF (about 1.9 L)
    assert float(np.median(image.array[brain])) > 10 * max(float(np.median(image.array[~brain])), 1e-3)
    centre = np.argwhere(brain).mean(axis=0)
    assert np.allclose(centre, (np.asarray(ATLAS_SHAPE) - 1) / 2, atol=3.0)  # centred on world 0
