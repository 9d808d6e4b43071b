"""The classification assets through the real Dagster jobs (`imaging-pipelines run`): synthetic DX
radiographs with a patient label table -> ingestion -> classifier_model -> classification (probabilities,
predicted class, saliency overlay) -> classification_evaluation (per split, report). Off by default."""

from __future__ import annotations

import json

import pytest
from dagster import AssetKey, DagsterInstance
from typer.testing import CliRunner

from conftest import write_catalog
from imaging_pipelines.cli import app
from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.core.privacy import pseudonymise
from imaging_pipelines.core.storage import storage_root
from imaging_pipelines.tools.demo.radiographs import write_radiograph_inbox

CLASSIFICATION = ("{enabled: true, classes: {normal: 0, opacity: 1}, "
                  "labels: {source: table, file: ../labels.csv, label_column: finding}, "
                  "training: {epochs: 4, base_filters: 4, batch_size: 8, input_size: 32, "
                  "test_fraction: 0.3, validation_fraction: 0.2, min_validation_accuracy: 0.0}}")


def test_classification_is_off_by_default(workspace):
    (dataset,) = load_catalog()
    assert dataset.classification.enabled is False
    from imaging_pipelines.dagster_layer.factory import build_chain

    names = {a.key.path[-1] for a in build_chain(dataset).assets}
    assert not names & {"classifier_model", "classification", "classification_evaluation"}


@pytest.fixture
def radiograph_workspace(workspace, monkeypatch):
    monkeypatch.setenv("DAGSTER_HOME", str(workspace / "dagster_home"))
    monkeypatch.delenv("IMAGING_PIPELINES_DEPLOYMENT", raising=False)
    write_catalog(workspace, classification=CLASSIFICATION, series_selection="{modalities: [DX, CR], min_slices: 1}")
    data = write_radiograph_inbox(workspace / "inbox", workspace / "labels.csv", n=16, size=48, seed=2)
    return workspace, data


@pytest.mark.slow  # 16 patients through ingestion, training and inference: about 1 min on 2 cores
def test_radiographs_classified_evaluated_and_reported_without_identifiers(radiograph_workspace):
    workspace, data = radiograph_workspace
    result = CliRunner().invoke(app, ["run", "test_ds", "--all", "--workers", "2"])
    assert result.exit_code == 0, result.output
    keys = {pseudonymise(f"CXR{i:04d}", "dicom-patient-id") for i in range(16)}
    root = storage_root()
    records = {p.stem: json.loads(p.read_text()) for p in (root / "test_ds" / "classification").glob("*.json")}
    assert set(records) == keys
    names = {0: "normal", 1: "opacity"}
    for i in range(16):
        record = records[pseudonymise(f"CXR{i:04d}", "dicom-patient-id")]
        assert record["reference"] == names[int(data.labels[i])]
        assert set(record["probabilities"]) == {"normal", "opacity"}
        assert sum(record["probabilities"].values()) == pytest.approx(1.0, abs=1e-4)
        assert record["predicted"] == max(record["probabilities"], key=record["probabilities"].get)
        assert record["split"] in ("train", "validation", "test")
    assert {r["split"] for r in records.values()} >= {"train", "test"}
    pngs = list((root / "test_ds" / "classification").glob("*_saliency.png"))
    assert len(pngs) == 16 and all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)
    with DagsterInstance.get() as instance:
        model = instance.fetch_materializations(AssetKey(["test_ds", "classifier_model"]), limit=1).records
        assert model and model[0].asset_materialization.metadata["training_partitions"].value >= 2
        (evaluation,) = instance.fetch_materializations(AssetKey(["test_ds", "classification_evaluation"]), limit=1).records
        meta = evaluation.asset_materialization.metadata
        per_split = meta["evaluation"].value
        assert set(per_split) == {"train", "validation", "test"}
        test = per_split["test"]
        assert test["n"] == sum(r["split"] == "test" for r in records.values())
        assert sum(map(sum, test["confusion"])) == test["n"]
        assert len(test["calibration"]["bins"]) == 10
        one = instance.fetch_materializations(AssetKey(["test_ds", "classification"]), limit=1).records[0]
        assert one.asset_materialization.metadata["predicted_class"].value in ("normal", "opacity")
        assert "saliency" in one.asset_materialization.metadata
    patient = (root / "test_ds" / "reports" / f"{next(iter(keys))}.html").read_text()
    assert 'id="classification"' in patient and "Grad-CAM" in patient
    report = (root / "test_ds" / "reports" / "classification.html").read_text()
    assert "Reliability diagram" in report and report.count("data:image/png;base64,") >= 17
    # no patient identifier anywhere in what the pipeline wrote
    for path in (root / "test_ds").rglob("*"):
        if path.is_file() and path.suffix in (".json", ".html"):
            assert "CXR0" not in path.read_text() and "SYNTHETIC" not in path.read_text(), path
