"""The storage root on S3 (moto's S3 server on 127.0.0.1): versioned stores switched by a manifest, and
the medical chain from ingestion through segmentation writing every store and model to the bucket."""

from __future__ import annotations

import json

import numpy as np
import pytest
from dagster import AssetKey, DagsterInstance

from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_sensor_once
from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
from imaging_pipelines.medical.io.ome_zarr import read_labels, read_volume_store, write_volume_store
from imaging_pipelines.core.storage import MANIFEST, atomic_store, partition_store_path, published_version
from imaging_pipelines.core.volume import Volume
from tests.conftest import write_catalog
from tests.s3_server import local_s3

DS = "s3_ds"
SEGMENTATION = {
    "method": "dynunet", "input": "preprocessed", "modalities": ["MR"], "image_pattern": "t1w",
    "classes": {"lesion": 5}, "labels": {"source": "inbox"},
    "training": {"patch_size": [32, 32, 32], "epochs": 2, "iterations_per_epoch": 3, "base_filters": 8,
                 "test_fraction": 0.25, "validation_fraction": 0.25, "min_validation_dice": 0.0, "seed": 3},
    "baselines": ["otsu"], "fallback": "otsu",
}


def key(name: str) -> AssetKey:
    return AssetKey([DS, name])


def test_store_replacement_switches_a_manifest(monkeypatch):
    """Storage options given to the resource reach every read and write; a replaced version is removed;
    a failed write leaves the published version and no new objects behind."""
    with local_s3(monkeypatch) as s3:
        monkeypatch.delenv("AWS_ENDPOINT_URL")  # only the storage options say where the server is
        root = ImagingStorage(root=f"s3://{s3.bucket}/unit", storage_options=s3.storage_options).root_path()
        path = partition_store_path(root, "ds", "ingested_scans", "p1")
        volume = Volume(np.arange(4 * 8 * 6, dtype=np.int16).reshape(4, 8, 6), spacing=(0.5, 0.5, 2.0))
        write_volume_store(path, {"a": volume})
        first = published_version(path)
        write_volume_store(path, {"a": volume.with_array(volume.array * 2)})
        second = published_version(path)
        assert first != second and first.startswith("v-") and second.startswith("v-")
        assert sorted(k.split("/")[4] for k in s3.objects("unit/ds/ingested_scans/p1.zarr/")) >= [MANIFEST, second]
        assert not any(f"/{first}/" in k for k in s3.objects("unit/")), "the replaced version is still there"
        before = s3.objects("unit/")
        with pytest.raises(RuntimeError):
            with atomic_store(path) as staging:
                write_volume_store(staging, {"a": volume})  # a complete store, but the block then fails
                raise RuntimeError("interrupted")
        assert s3.objects("unit/") == before
        assert np.array_equal(read_volume_store(path)["a"].array, volume.array * 2)


def test_medical_chain_through_segmentation_on_s3(tmp_path, monkeypatch):
    with local_s3(monkeypatch) as s3:
        monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
        monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", f"s3://{s3.bucket}/pipeline")
        catalog = write_catalog(tmp_path, DS, segmentation=json.dumps(SEGMENTATION), file_modality="MR")
        monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(catalog))
        generate_demo_cohort(tmp_path / "inbox", n_patients=4, seed=0)
        defs = build_definitions()
        with DagsterInstance.ephemeral() as instance:
            keys = [r.partition_key for r in run_sensor_once(defs, DS, instance).run_requests]
            assert len(keys) == 4
            prepared = materialise_partitions(defs, DS, keys, instance, progress=False,
                                              asset_selection=[key("ingested_scans"), key("preprocessed")])
            assert all(r.success for r in prepared.values())
            trained = defs.resolve_job_def(f"{DS}__training_job").execute_in_process(instance=instance)
            assert trained.success
            segmented = materialise_partitions(defs, DS, keys, instance, progress=False,
                                               asset_selection=[key("segmentation"), key("segmentation_evaluation")])
            assert all(r.success for r in segmented.values())

        objects = s3.objects("pipeline/")
        assert not (tmp_path / "var").exists()
        for stage in ("ingested_scans", "preprocessed", "segmentation"):
            for k in keys:
                assert f"pipeline/{DS}/{stage}/{k}.zarr/{MANIFEST}" in objects, (stage, k)
        assert any(k.startswith(f"pipeline/{DS}/segmentation_model/") and k.endswith(".pt") for k in objects)
        assert any(k.startswith(f"pipeline/{DS}/segmentation_evaluation/") for k in objects)
        # masks read back from the bucket on the geometry of the image they segment
        store = partition_store_path(f"s3://{s3.bucket}/pipeline", DS, "segmentation", keys[0])
        images = read_volume_store(store)
        name = next(iter(images))
        masks = read_labels(store, name)
        assert masks and all(m.same_geometry(images[name]) for m in masks.values())
