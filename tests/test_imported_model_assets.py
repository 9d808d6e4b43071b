"""An imported nnU-Net model in the Dagster lineage (issue 14): the per-patient `segmentation` asset gives the
label map nnUNetPredictor gives on the same inbox file; `imported_model` is an observable source asset
upstream of the masks (`dg list defs`: imported model -> segmentation -> evaluation), and replacing a
checkpoint changes its data version and marks the masks stale."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional extra segment-export)")

from dagster import AssetKey, DagsterInstance  # noqa: E402

from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti  # noqa: E402
from imaging_pipelines.tools.demo.imported_models import phantom_case, write_nnunet_checkpoint  # noqa: E402
from tests.conftest import write_catalog  # noqa: E402
from tests.test_imported_models import nnunet_direct  # noqa: E402

DS = "imported_ds"


def segmentation_config(model_path: str) -> dict:
    return {"method": "imported", "model": {"kind": "nnunet", "path": model_path, "folds": [0], "use_mirroring": False},
            "modalities": ["MR"], "image_pattern": "t1w", "classes": {"lesion": 1, "tissue": 2},
            "labels": {"source": "inbox"}, "dicom_seg": False}


def key(name: str) -> AssetKey:
    return AssetKey([DS, name])


def observed_version(instance) -> str | None:
    """The data version of the imported model's latest observation."""
    from dagster._core.definitions.data_version import extract_data_version_from_entry

    record = instance.get_latest_data_version_record(key("imported_model"), is_source=True)
    version = extract_data_version_from_entry(record.event_log_entry) if record else None
    return version.value if version else None


def stale_status(instance, defs, asset: str, partition: str | None = None):
    from dagster._core.definitions.data_version import CachingStaleStatusResolver
    from dagster._core.loader import LoadingContextForTest

    resolver = CachingStaleStatusResolver(instance, defs.resolve_asset_graph(), LoadingContextForTest(instance))
    return resolver.get_status(key(asset), partition), resolver.get_stale_causes(key(asset), partition)


def test_asset_equals_nnunet_predictor_and_goes_stale_with_a_new_checkpoint(nnunet_model, tmp_path, monkeypatch):
    from dagster._core.definitions.data_version import StaleStatus

    from imaging_pipelines.dagster_layer.factory import build_definitions
    from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_sensor_once

    model = shutil.copytree(nnunet_model, tmp_path / "models" / "tiny_nnunet")
    image, labels = phantom_case(11, shape=(18, 28, 24), spacing=(6.5, 7.0, 9.0))
    inbox_file = write_nifti(image, tmp_path / "inbox" / "sub-01" / "sub-01_T1w.nii.gz")
    write_nifti(labels, tmp_path / "inbox" / "sub-01" / "sub-01_T1w_label.nii.gz")
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    catalog = write_catalog(tmp_path, DS, segmentation=json.dumps(segmentation_config("../models/tiny_nnunet")))
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(catalog))
    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    assert {k.path[-1] for k in graph.get(key("segmentation")).parent_keys} == {"ingested_scans", "imported_model"}
    assert {k.path[-1] for k in graph.get(key("segmentation_evaluation")).parent_keys} == {"segmentation"}
    observe = defs.resolve_job_def(f"{DS}__training_job")  # the chain's model job observes the imported model
    selection = [key("ingested_scans"), key("segmentation"), key("segmentation_evaluation")]
    with DagsterInstance.ephemeral() as instance:
        (partition,) = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
        assert observe.execute_in_process(instance=instance, raise_on_error=False).success
        first_version = observed_version(instance)
        (run,) = materialise_partitions(defs, DS, [partition], instance, progress=False,
                                        asset_selection=selection).values()
        assert run.success
        mask = read_nifti(tmp_path / "storage" / DS / "segmentation_masks" / partition / "t1w.nii.gz")
        (direct,) = nnunet_direct(model, [inbox_file], tmp_path / "direct")
        assert np.array_equal(mask.array, direct) and len(np.unique(direct)) == 3
        assert mask.same_geometry(read_nifti(inbox_file))
        assert stale_status(instance, defs, "segmentation", partition)[0] == StaleStatus.FRESH

        # a new checkpoint: a new data version of the imported model, and the masks made by the old one are stale
        write_nnunet_checkpoint(model, 0, seed=5)  # the same plans, new weights in place of the old file
        assert observe.execute_in_process(instance=instance, raise_on_error=False).success
        second_version = observed_version(instance)
        assert first_version is not None and second_version is not None
        assert first_version != second_version and len(second_version) == 16
        status, causes = stale_status(instance, defs, "segmentation", partition)
        assert status == StaleStatus.STALE
        assert any(c.dependency and c.dependency.asset_key == key("imported_model") for c in causes), causes


def test_dg_list_defs_shows_imported_model_lineage(nnunet_model, tmp_path):
    from tests.test_dg_project import run_dg

    (tmp_path / "inbox").mkdir()
    catalog = write_catalog(tmp_path, DS, segmentation=json.dumps(segmentation_config(str(nnunet_model))))
    out = run_dg("list", "defs", "--json", env={"IMAGING_PIPELINES_CATALOG": str(catalog),
                                                 "IMAGING_PIPELINES_DATA_ROOTS": f"{tmp_path}:{nnunet_model.parent}"})
    assert out.returncode == 0, out.stderr[-3000:]
    assets = {a["asset_key"]: a for a in json.loads(out.stdout)["assets"]}
    assert f"{DS}/imported_model" in assets
    assert f"{DS}/imported_model" in assets[f"{DS}/segmentation"]["dependency_keys"]
    assert f"{DS}/segmentation" in assets[f"{DS}/segmentation_evaluation"]["dependency_keys"]
