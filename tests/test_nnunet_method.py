"""nnU-Net v2 as the dataset's trained segmentation method (issue 14, item 1): the `segmentation_model` asset
runs nnU-Net's own plan / preprocess / train (trainer, planner, configuration and folds from the catalog),
is reused by version, and the per-patient `segmentation` asset gives exactly the label maps that
`nnUNetPredictor` gives run directly on the same files with the same settings (folds ensembled, mirroring,
tile step), mapped to the catalog's label values."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional extra segment-export)")

from dagster import AssetKey, DagsterInstance  # noqa: E402

from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti  # noqa: E402
from imaging_pipelines.tools.demo.imported_models import phantom_case  # noqa: E402
from tests.conftest import write_catalog
from tests.pipeline_helpers import run_metadata  # noqa: E402
from tests.test_imported_models import nnunet_direct  # noqa: E402

DS = "nnunet_ds"
SEGMENTATION = {
    "method": "nnunet", "input": "ingested", "modalities": ["MR"], "image_pattern": "t1w",
    "classes": {"lesion": 3, "tissue": 7}, "labels": {"source": "inbox"}, "dicom_seg": False,
    "postprocess": {"fill_holes": False}, "training": {"test_fraction": 0.2, "min_validation_dice": 0.0},
    "nnunet": {"dataset_number": 611, "trainer": "tests.nnunet_tiny_trainer.nnUNetTrainerTiny",
               "planner": "ExperimentPlanner", "folds": [0, 1], "use_mirroring": True, "tile_step_size": 0.5},
}


def key(name: str) -> AssetKey:
    return AssetKey([DS, name])


def meta(result, name: str) -> dict:
    return run_metadata(result, key(name))


@pytest.mark.slow
def test_nnunet_method_trains_once_and_segments_like_nnunet_predictor(tmp_path, monkeypatch):
    from imaging_pipelines.dagster_layer.factory import build_definitions
    from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_sensor_once
    from imaging_pipelines.medical.segment.nnunet_trainers import trainer_lookup
    from imaging_pipelines.medical.stages.nnunet_model import NnunetModelTask, trained_folds, unpack_results
    from imaging_pipelines.models import store

    inbox = tmp_path / "inbox"
    for i in range(5):
        image, labels = phantom_case(20 + i, shape=(16, 24, 20), spacing=(7.5, 8.0, 10.0))
        values = np.array([0, 3, 7], dtype=np.uint8)  # the catalog's label values for lesion 1 / tissue 2
        write_nifti(image, inbox / f"sub-{i:02d}" / f"sub-{i:02d}_T1w.nii.gz")
        write_nifti(labels.with_array(values[labels.array]), inbox / f"sub-{i:02d}" / f"sub-{i:02d}_T1w_label.nii.gz")
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(write_catalog(tmp_path, DS, segmentation=json.dumps(SEGMENTATION))))
    defs = build_definitions()
    with DagsterInstance.ephemeral() as instance:
        keys = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
        assert len(keys) == 5
        ingested = materialise_partitions(defs, DS, keys, instance, progress=False, asset_selection=[key("ingested_scans")])
        assert all(r.success for r in ingested.values())
        training = defs.resolve_job_def(f"{DS}__training_job")
        first = training.execute_in_process(instance=instance, raise_on_error=False)
        second = training.execute_in_process(instance=instance, raise_on_error=False)
        assert first.success and second.success
        m1, m2 = meta(first, "segmentation_model"), meta(second, "segmentation_model")
        assert m1["trained_now"] is True and m2["trained_now"] is False and m1["model_version"] == m2["model_version"]
        assert m1["folds"] == 2 and m1["trainer"].endswith("nnUNetTrainerTiny") and m1["training_images"] >= 3
        assert str(m1["model_path"]).endswith(f"nnunet-{m1['model_version']}.zip")
        segmented = materialise_partitions(defs, DS, keys, instance, progress=False, asset_selection=[key("segmentation")])
    folder = store.model_folder(tmp_path / "storage", DS, "segmentation_model")
    results = unpack_results(folder / store.read_pointer(folder, NnunetModelTask.what)["file"])
    assert trained_folds(results) == [0, 1]
    plans = json.loads((results / "plans.json").read_text())
    assert "3d_fullres" in plans["configurations"]
    for partition, run in segmented.items():
        assert run.success, partition
        assert meta(run, "segmentation")["method"] == f"nnunet {m1['model_version']}"
        mask = read_nifti(tmp_path / "storage" / DS / "segmentation_masks" / partition / "t1w.nii.gz")
        with trainer_lookup(SEGMENTATION["nnunet"]["trainer"]):  # nnU-Net cannot find a trainer outside its package
            (direct,) = nnunet_direct(results, [mask_source(tmp_path, partition)], tmp_path / "direct" / partition,
                                      folds=(0, 1), mirroring=True)
        values = np.array([0, 3, 7], dtype=np.uint8)
        assert np.array_equal(mask.array, values[direct]), partition


def mask_source(tmp_path, partition: str):
    """The ingested image of a partition written as NIfTI (partition keys are pseudonyms, not file names)."""
    from imaging_pipelines.core.storage import partition_store_path
    from imaging_pipelines.medical.io.ome_zarr import read_volume_store

    image = read_volume_store(partition_store_path(tmp_path / "storage", DS, "ingested_scans", partition))["t1w"]
    return write_nifti(image, tmp_path / "ingested" / partition / "t1w.nii.gz")
