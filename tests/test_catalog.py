"""Catalog parsing and validation, and the `catalog validate` command."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.cli import app
from imaging_pipelines.core.errors import CatalogError
from tests.conftest import REPO, write_catalog


def test_shipped_catalog_is_valid():
    datasets = load_catalog(REPO / "data_catalog")
    demo = next(d for d in datasets if d.id == "demo_cohort")
    assert demo.domain == "medical" and demo.partitioning == "patient"
    assert demo.inbox == str((REPO / "var" / "demo" / "inbox").resolve())  # relative to the catalog file


def test_relative_inbox_resolves_against_catalog_file(workspace):
    (ds,) = load_catalog()
    assert ds.inbox == str((workspace / "inbox").resolve())


@pytest.mark.parametrize(
    ("extra", "field", "message"),
    [
        ({"preprocessing_recipe": "no_such_recipe"}, "preprocessing_recipe", "unknown recipe"),
        ({"segmentation": "{method: gpt}"}, "segmentation.method", "Input should be"),
        ({"colour": "blue"}, "colour", "Extra inputs are not permitted"),
        ({"formats": "[dicom, jpeg]"}, "formats", "unknown format"),
        ({"series_selection": "{description_pattern: '('}"}, "series_selection.description_pattern", "regular expression"),
        ({"sensor": "{interval_seconds: soon}"}, "sensor.interval_seconds", "integer"),
    ],
)
def test_invalid_fields_are_reported_with_file_and_field(tmp_path, monkeypatch, extra, field, message):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    catalog = write_catalog(tmp_path, **extra)
    with pytest.raises(CatalogError) as info:
        load_catalog(catalog)
    (file, reported_field, reported) = info.value.errors[0]
    assert file.endswith("test_ds.yaml") and reported_field == field and message in reported


def test_inbox_escaping_data_roots_is_rejected(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path / "allowed"))
    (tmp_path / "allowed").mkdir()
    catalog = write_catalog(tmp_path / "allowed", inbox="../../etc")
    with pytest.raises(CatalogError, match="escapes the configured data roots"):
        load_catalog(catalog)


def test_remote_inbox_is_accepted_as_uri(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    catalog = write_catalog(tmp_path)
    text = (catalog / "test_ds.yaml").read_text().replace("inbox: ../inbox", "inbox: s3://bucket/scans")
    (catalog / "test_ds.yaml").write_text(text)
    (ds,) = load_catalog(catalog)
    assert ds.inbox == "s3://bucket/scans" and ds.is_remote_inbox


def test_cli_validate_prints_every_error_and_fails(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    catalog = write_catalog(tmp_path, segmentation={"method": "gpt"}, preprocessing_recipe="magic")
    (catalog / "broken.yaml").write_text("id: [unclosed\n")
    result = CliRunner().invoke(app, ["catalog", "validate", str(catalog)])
    assert result.exit_code == 1
    out = result.output
    assert "test_ds.yaml: segmentation.method: " in out and "test_ds.yaml: preprocessing_recipe: " in out
    assert "broken.yaml: -: not valid YAML" in out


def test_cli_validate_ok_for_shipped_catalog():
    result = CliRunner().invoke(app, ["catalog", "validate", str(REPO / "data_catalog")])
    assert result.exit_code == 0, result.output
    assert "demo_cohort" in result.output
