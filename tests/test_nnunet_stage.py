"""nnU-Net v2 stage: export + nnU-Net's integrity check, planning/preprocessing, and a short CPU training + prediction."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional dependency)")

from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom, centered_origin  # noqa: E402
from imaging_pipelines.medical.io.image_files import read_nifti  # noqa: E402
from imaging_pipelines.medical.stages.nnunet import RUN_LEVELS, run_nnunet_stage  # noqa: E402
from imaging_pipelines.core.volume import Volume  # noqa: E402

SHAPE = (16, 24, 20)
SPACING = (7.5, 8.0, 10.0)
LABELS = {"background": 0, "lesion": 1}


def lesion_case(seed: int) -> tuple[str, Volume, Volume]:
    image, labels = brain_like_phantom(SHAPE, spacing=SPACING, seed=seed)
    geometry = dict(spacing=SPACING, origin=centered_origin(SHAPE, SPACING, np.eye(3)), direction=np.eye(3))
    lesion = (labels == BRAIN_LESION).astype(np.uint8)
    assert lesion.any()
    return f"case{seed:03d}", Volume(array=image, **geometry), Volume(array=lesion, **geometry)


@pytest.fixture(scope="module")
def cases():
    return [lesion_case(seed) for seed in range(3)]


def stage(cases, work_root, run="export", **kwargs):
    kwargs = {"dataset_number": 31, "name": "PhantomLesion", "labels": LABELS, "log": lambda _: None, **kwargs}
    return run_nnunet_stage(cases, work_root, run=run, **kwargs)


def test_export_and_verify(cases, tmp_path):
    before = {var: os.environ.get(var) for var in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")}
    outcome = stage(cases, tmp_path, channel_names={"0": "T1"})
    assert outcome.verified is True and outcome.verification_error == "", outcome
    assert outcome.n_cases == 3 and not outcome.planned and not outcome.trained
    folder = tmp_path / "nnUNet_raw" / "Dataset031_PhantomLesion"
    assert outcome.dataset_folder == str(folder)
    meta = json.loads((folder / "dataset.json").read_text())
    assert meta["labels"] == LABELS and meta["channel_names"] == {"0": "T1"} and meta["numTraining"] == 3
    assert sorted(p.name for p in (folder / "imagesTr").iterdir()) == [f"case00{i}_0000.nii.gz" for i in range(3)]
    assert sorted(p.name for p in (folder / "labelsTr").iterdir()) == [f"case00{i}.nii.gz" for i in range(3)]
    assert {var: os.environ.get(var) for var in before} == before, "nnU-Net env vars must be restored"

    # a rerun replaces the export: fewer cases, no leftovers
    again = stage(cases[:2], tmp_path)
    assert again.verified and sorted(p.name for p in (folder / "labelsTr").iterdir()) == ["case000.nii.gz", "case001.nii.gz"]


def test_non_finite_image_fails_verification(cases, tmp_path):
    # NaN voxels pass the export (it checks labels and geometry only); SimpleITK reads them back as 0, so
    # nnU-Net's own NaN check cannot see them: the stage checks them itself
    case_id, image, label = cases[1]
    broken = image.array.copy()
    broken[3, 4, 5] = np.nan
    outcome = stage([cases[0], (case_id, image.with_array(broken), label), cases[2]], tmp_path, run="plan")
    assert outcome.verified is False and not outcome.planned
    assert case_id in outcome.verification_error and "non-finite" in outcome.verification_error


def test_nnunet_verification_failure_is_reported(cases, tmp_path, monkeypatch):
    # a defect the export cannot produce (it refuses undeclared label values), slipped in after it: nnU-Net's
    # own check must fail, and its findings (printed by worker processes) must reach the outcome
    import imaging_pipelines.medical.stages.nnunet as nnunet_stage
    from imaging_pipelines.medical.io.image_files import write_nifti

    real_export = nnunet_stage.export_nnunet_dataset

    def export_then_corrupt(*args, **kwargs):
        folder = real_export(*args, **kwargs)
        label = read_nifti(folder / "labelsTr" / "case001.nii.gz")
        array = label.array.copy()
        array[0, 0, 0] = 3
        write_nifti(label.with_array(array), folder / "labelsTr" / "case001.nii.gz")
        return folder

    monkeypatch.setattr(nnunet_stage, "export_nnunet_dataset", export_then_corrupt)
    outcome = stage(cases, tmp_path, run="plan")
    assert outcome.verified is False and not outcome.planned
    assert outcome.verification_error.startswith("RuntimeError")
    assert "Unexpected labels" in outcome.verification_error and "case001.nii.gz" in outcome.verification_error


def test_invalid_arguments(cases, tmp_path):
    with pytest.raises(ValueError, match="export"):
        stage(cases, tmp_path, run="fit")
    assert set(RUN_LEVELS) == {"export", "plan", "train"}
    with pytest.raises(ValueError, match="at least one"):
        stage([], tmp_path)
    case_id, image, label = cases[0]
    with pytest.raises(ValueError, match=case_id):  # undeclared label value: refused by the export, naming the case
        stage([(case_id, image, label.with_array(label.array * 2))], tmp_path)
    stage(cases, tmp_path)
    with pytest.raises(ValueError, match="already used"):
        stage(cases, tmp_path, name="OtherName")


def test_without_nnunet_exports_only(cases, tmp_path, monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "nnunetv2", None)  # import nnunetv2 -> ImportError
    outcome = stage(cases, tmp_path)
    assert outcome.verified is None and outcome.notes and (tmp_path / "nnUNet_raw" / "Dataset031_PhantomLesion").is_dir()
    with pytest.raises(RuntimeError, match="segment-export"):
        stage(cases, tmp_path, run="plan")


def test_plan_and_preprocess(cases, tmp_path):
    outcome = stage(cases, tmp_path, run="plan")
    assert outcome.verified and outcome.planned and not outcome.trained, outcome
    plans = outcome.plans
    json.dumps(plans)  # plain JSON types only
    assert plans["configuration"] == "3d_fullres" and plans["batch_size"] >= 1
    assert len(plans["patch_size"]) == 3 and all(p <= s for p, s in zip(plans["patch_size"], SHAPE))
    assert plans["spacing"] == pytest.approx([SPACING[2], SPACING[1], SPACING[0]])  # array axes (z, y, x)
    assert plans["n_stages"] == len(plans["kernel_sizes"]) == len(plans["strides"]) >= 2
    data = tmp_path / "nnUNet_preprocessed" / "Dataset031_PhantomLesion" / plans["data_identifier"]
    for case_id, *_ in cases:
        assert (data / f"{case_id}.pkl").is_file()
        assert any(data.glob(f"{case_id}_seg.*")), sorted(p.name for p in data.iterdir())


@pytest.mark.slow
def test_train_one_epoch_and_predict(cases, tmp_path):
    case_id, image, _ = cases[0]
    outcome = stage(cases, tmp_path, run="train", trainer="nnUNetTrainer_1epoch", device="cpu",
                    predict_cases=[(f"{case_id}-test", image)])
    assert outcome.trained, outcome
    results = tmp_path / "nnUNet_results" / "Dataset031_PhantomLesion" / "nnUNetTrainer_1epoch__nnUNetPlans__3d_fullres"
    assert (results / "fold_0" / "checkpoint_final.pth").is_file()
    predicted = read_nifti(outcome.predictions[f"{case_id}-test"])
    assert predicted.array.shape == image.array.shape
    np.testing.assert_allclose(predicted.to_nifti_affine(), image.to_nifti_affine(), atol=1e-3)
    assert set(np.unique(predicted.array)) <= {0, 1}
