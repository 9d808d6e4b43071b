"""The project as a dg project: `dg check defs` / `dg list defs` load the data catalog as components and report a
bad catalog file with its file and field; the published JSON schema of catalog files matches the catalog model."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import jsonschema
import pytest
import yaml

from imaging_pipelines.config.catalog import dataset_json_schema
from tests.conftest import REPO, write_catalog

DG = Path(sys.executable).parent / "dg"
SCHEMA = REPO / "data_catalog" / "dataset.schema.json"


def run_dg(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """``dg <args>`` in the project folder; the package is imported from this checkout."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [os.environ.get("PYTHONPATH")])])
    return subprocess.run([str(DG), *args], cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300)


def test_dg_check_defs_accepts_the_shipped_catalog(monkeypatch):
    monkeypatch.delenv("IMAGING_PIPELINES_CATALOG", raising=False)
    out = run_dg("check", "defs")
    assert out.returncode == 0, out.stdout + out.stderr
    assert "All definitions loaded successfully" in out.stdout + out.stderr


def test_dg_list_defs_shows_each_dataset_chain(workspace):
    out = run_dg("list", "defs", "--json")
    assert out.returncode == 0, out.stderr
    listing = json.loads(out.stdout)
    assets = {a["asset_key"]: a for a in listing["assets"]}
    assert {"test_ds/ingested_scans", "test_ds/preprocessed", "test_ds/cohort_report"} <= set(assets)
    assert assets["test_ds/cohort_report"].get("automation_condition")  # declarative automation
    assert not assets["test_ds/ingested_scans"].get("automation_condition")  # per-partition runs instead
    sensors = {s["name"] for s in listing["sensors"]}
    assert {"test_ds__inbox_sensor", "run_failure_recorder", "default_automation_condition_sensor"} <= sensors
    components = run_dg("list", "components")
    assert "imaging_pipelines.dagster_layer.components.ImagingDataset" in components.stdout
    assert "imaging_pipelines.dagster_layer.components.DataCatalog" in components.stdout


def test_dg_check_defs_names_file_and_field_of_a_bad_catalog_entry(tmp_path):
    (tmp_path / "inbox").mkdir()
    catalog = write_catalog(tmp_path, "good_ds")
    write_catalog(tmp_path, "bad_ds", partitioning_typo="tile", registration="{method: warp}")
    out = run_dg("check", "defs", env={"IMAGING_PIPELINES_CATALOG": str(catalog),
                                       "IMAGING_PIPELINES_DATA_ROOTS": str(tmp_path)})
    text = out.stdout + out.stderr
    assert out.returncode != 0, text
    bad = str(catalog / "bad_ds.yaml")
    assert f"{bad}: partitioning_typo: Extra inputs are not permitted" in text, text[-3000:]
    assert f"{bad}: registration.method: Input should be" in text, text[-3000:]
    assert "good_ds.yaml" not in text.split("CatalogError", 1)[-1]  # only the bad file is blamed


def test_published_schema_is_the_generated_one():
    """Regenerate with `imaging-pipelines catalog schema -o data_catalog/dataset.schema.json`."""
    assert json.loads(SCHEMA.read_text()) == dataset_json_schema()
    for file in sorted((REPO / "data_catalog").glob("*.yaml")):
        assert file.read_text().splitlines()[0] == "# yaml-language-server: $schema=./dataset.schema.json", file


def test_schema_accepts_shipped_files_and_rejects_a_bad_one():
    validator = jsonschema.Draft202012Validator(json.loads(SCHEMA.read_text()))
    for file in sorted((REPO / "data_catalog").glob("*.yaml")):
        assert not list(validator.iter_errors(yaml.safe_load(file.read_text()))), file
    bad = {"id": "bad_ds", "domain": "medicall", "inbox": "inbox", "formats": ["dicom"], "partitioning": "patient",
           "colour": "blue", "series_selection": {"min_slices": 0}}
    errors = {"/".join(map(str, e.absolute_path)) or "-": e.message for e in validator.iter_errors(bad)}
    assert "'medicall' is not one of" in errors["domain"]
    assert "series_selection/min_slices" in errors
    assert "('colour' was unexpected)" in errors["-"]


@pytest.mark.parametrize("output", [None, "schema.json"])
def test_catalog_schema_command(tmp_path, output):
    from typer.testing import CliRunner

    from imaging_pipelines.cli import app

    args = ["catalog", "schema"] + (["--output", str(tmp_path / output)] if output else [])
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    text = (tmp_path / output).read_text() if output else result.output
    assert json.loads(text) == dataset_json_schema()


def test_dg_launch_materialises_one_partition(workspace, tmp_path, monkeypatch):
    """`dg launch --assets KEY --partition P` runs one partition into the DAGSTER_HOME instance."""
    import nibabel as nib
    import numpy as np
    from dagster import AssetKey, DagsterInstance

    from imaging_pipelines.dagster_layer.headless_run import run_dataset

    home = tmp_path / "dagster_home"
    home.mkdir()
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    array = np.random.default_rng(0).normal(100, 5, (16, 32, 32)).astype(np.float32)
    array[4:12, 8:24, 8:24] += 300
    for subject in ("sub-01", "sub-02"):
        nib.save(nib.Nifti1Image(array.T, np.diag([2.0, 2.0, 2.0, 1.0])), workspace / "inbox" / f"{subject}_T1w.nii.gz")
    with DagsterInstance.get() as instance:
        outcome = run_dataset("test_ds", all_partitions=True, assets=["ingested_scans"], workers=1,
                              instance=instance, progress=False, echo=lambda _: None)
    assert outcome.ok and len(outcome.partitions) == 2
    key = sorted(outcome.partitions)[0]
    out = run_dg("launch", "--assets", "test_ds/preprocessed", "--partition", key)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    with DagsterInstance.get() as instance:
        events = instance.fetch_materializations(AssetKey(["test_ds", "preprocessed"]), limit=10).records
        assert [e.partition_key for e in events] == [key]
