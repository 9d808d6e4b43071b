"""The learned registration path through Dagster: model asset trained once, used by the registered asset."""

from __future__ import annotations

from dagster import AssetKey, DagsterInstance

from imaging_pipelines.dagster_layer.factory import build_definitions
from imaging_pipelines.tools.demo.atlas import write_demo_atlas
from imaging_pipelines.medical.io.ome_zarr import read_volume_store
from imaging_pipelines.core.storage import partition_store_path, storage_root
from imaging_pipelines.tools.demo.dicom_writer import write_dicom_series
from imaging_pipelines.tools.demo.mni_head import make_patient, render_series
from imaging_pipelines.tools.demo.phantom import centered_origin
from imaging_pipelines.core.volume import Volume
from tests.pipeline_helpers import identity, run_pipeline


def test_model_asset_then_learned_registration(workspace, tmp_path, monkeypatch):
    atlases = tmp_path / "atlases"
    atlases.mkdir()
    image, mask = write_demo_atlas(tmp_path / "atlas")
    (atlases / "phantom.yaml").write_text(f"name: phantom\nimage: {image}\nmask: {mask}\n")
    monkeypatch.setenv("IMAGING_PIPELINES_ATLASES", str(atlases))
    catalog = workspace / "catalog" / "test_ds.yaml"
    catalog.write_text(catalog.read_text() + "registration: {target: atlas, atlas: phantom, method: learned, "
                                            "learned_epochs: 1, brain_mask: false}\n")
    head, _ = render_series(make_patient(3), (40, 48, 48), (3.5, 3.5, 4.0))  # a demo patient: deformed MNI152 head
    subject = Volume(head, spacing=(3.5, 3.5, 4.0), origin=centered_origin((40, 48, 48), (3.5, 3.5, 4.0)))
    write_dicom_series(subject, workspace / "inbox" / "case_a", patient=identity("PID-A"), series_number=1,
                       series_description="T1 AX")
    defs = build_definitions()
    model_key = AssetKey(["test_ds", "registration_model"])
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)  # no model yet: ingestion and preprocessing succeed, registration fails clearly
        (key,) = runs
        failure = next(e for e in runs[key].all_events if e.event_type_value == "STEP_FAILURE")
        assert "no trained registration model yet" in failure.event_specific_data.error.message
        job = defs.resolve_implicit_global_asset_job_def()
        trained = job.execute_in_process(instance=instance, asset_selection=[model_key])
        assert trained.success
        meta = trained.asset_materializations_for_node("test_ds__registration_model")[0].metadata
        assert meta["trained_now"].value is True and meta["training_images"].value == 1
        again = job.execute_in_process(instance=instance, asset_selection=[model_key])  # same data: reused
        assert again.asset_materializations_for_node("test_ds__registration_model")[0].metadata["trained_now"].value is False
        patient_job = defs.resolve_job_def("test_ds__patient_job")
        registered = patient_job.execute_in_process(instance=instance, partition_key=key,
                                                    asset_selection=[AssetKey(["test_ds", "registered"])])
        assert registered.success
    images = read_volume_store(partition_store_path(storage_root(), "test_ds", "registered", key))
    aligned = images["s001_t1_ax_aligned"]
    assert aligned.spatial_shape == (56, 64, 56)  # the subject resampled onto the atlas grid
