"""Hostile catalog, atlas and recipe files are refused with messages that name the file and the field.

tests/test_catalog.py covers the ordinary mistakes (unknown recipe or key, bad types, an inbox outside the data
roots); this file adds path traversal through URIs and names, undecodable or pathological YAML, and broken atlas
files.
"""

from __future__ import annotations

import time

import pytest

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.core.errors import CatalogError
from tests.conftest import write_catalog


@pytest.fixture
def data_root(tmp_path, monkeypatch):
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    return tmp_path


def only_error(catalog):
    """The single (file, field, message) a catalog load reports."""
    t0 = time.perf_counter()
    with pytest.raises(CatalogError) as info:
        load_catalog(catalog)
    assert time.perf_counter() - t0 < 10
    assert len(info.value.errors) >= 1
    return info.value.errors[0]


@pytest.mark.parametrize("inbox", [
    "file:///etc", "FILE:///etc", "local:///etc", "simplecache::file:///etc", "file://../../..",
    "/etc", "~/", "../../../../../../etc", "inbox/../../../..",
])
def test_inbox_traversal_out_of_the_data_roots_is_refused(data_root, inbox):
    catalog = write_catalog(data_root / "allowed", inbox="inbox")
    text = (catalog / "test_ds.yaml").read_text().replace("inbox: ../inbox", f"inbox: '{inbox}'")
    (catalog / "test_ds.yaml").write_text(text)
    file, field, message = only_error(catalog)
    assert file.endswith("test_ds.yaml") and field == "inbox" and "escapes the configured data roots" in message


def test_inbox_symlink_pointing_outside_is_refused(data_root, tmp_path_factory):
    outside = tmp_path_factory.mktemp("outside")
    (data_root / "link").symlink_to(outside, target_is_directory=True)
    catalog = write_catalog(data_root, inbox="link")
    file, field, message = only_error(catalog)
    assert field == "inbox" and str(outside) in message


def test_local_uri_inside_the_data_roots_is_accepted(data_root):
    catalog = write_catalog(data_root)
    text = (catalog / "test_ds.yaml").read_text().replace("inbox: ../inbox", f"inbox: file://{data_root}/inbox")
    (catalog / "test_ds.yaml").write_text(text)
    (ds,) = load_catalog(catalog)
    assert ds.inbox == f"file://{data_root}/inbox"


@pytest.mark.parametrize(("extra", "field", "message"), [
    ({"inbox_path": "'../inbox'"}, "inbox_path", "Extra inputs are not permitted"),
    ({"source_file": "/etc/passwd"}, "source_file", "Extra inputs are not permitted"),
    ({"registration": "{target: atlas, atlas: ../../etc/passwd}"}, "registration", "unknown atlas"),
    ({"registration": "{target: atlas, atlas: /etc/passwd}"}, "registration", "unknown atlas"),
    ({"preprocessing_recipe": "../recipes/none"}, "preprocessing_recipe", "unknown recipe"),
    ({"preprocessing_recipe": "/etc/passwd"}, "preprocessing_recipe", "unknown recipe"),
    ({"preprocessing_recipe": "[none]"}, "preprocessing_recipe", "valid string"),
    ({"formats": "dicom"}, "formats", "valid list"),
    ({"series_selection": "[MR]"}, "series_selection", "valid dictionary"),
    ({"sensor": "{running_by_default: maybe}"}, "sensor.running_by_default", "valid boolean"),
    ({"schedule": "{cron: '* * * *'}"}, "schedule.cron", "not a valid cron expression"),
    ({"registration": "{learned_epochs: -3}"}, "registration.learned_epochs", "greater than or equal to 1"),
    ({"description": "!!python/object/apply:os.system ['true']"}, "-", "not valid YAML"),
])
def test_unknown_keys_wrong_types_and_traversal_by_name_name_file_and_field(data_root, extra, field, message):
    catalog = write_catalog(data_root, **extra)
    file, reported_field, reported = only_error(catalog)
    assert file.endswith("test_ds.yaml") and reported_field == field and message in reported, reported


@pytest.mark.parametrize(("inbox", "message"), [('"in\\0box"', "NUL character"), ("''", "must name a folder"),
                                                ("42", "valid string"), ("[a, b]", "valid string")])
def test_unusable_inbox_values_are_refused(data_root, inbox, message):
    catalog = write_catalog(data_root)
    text = (catalog / "test_ds.yaml").read_text().replace("inbox: ../inbox", f"inbox: {inbox}")
    (catalog / "test_ds.yaml").write_text(text)
    file, field, reported = only_error(catalog)
    assert file.endswith("test_ds.yaml") and field == "inbox" and message in reported


@pytest.mark.parametrize(("content", "message"), [
    (b"id: test_ds\ndescription: \xff\xfe\n", "not UTF-8"),
    (b"description: " + b"[" * 3000 + b"]" * 3000 + b"\n", "nested too deeply"),
    (b"- id: test_ds\n", "must be a mapping"),
    (b"1: one\nid: test_ds\n", "field names must be strings"),
    (b"id: x\n" + b"#" * (1 << 20) + b"\n", "not a catalog file"),
])
def test_undecodable_or_pathological_files_are_refused(data_root, content, message):
    catalog = data_root / "catalog"
    catalog.mkdir()
    (catalog / "evil.yaml").write_bytes(content)
    file, field, reported = only_error(catalog)
    assert file.endswith("evil.yaml") and field in ("-", "1") and message in reported


def test_alias_bomb_in_a_field_is_refused_quickly(data_root):
    catalog = write_catalog(data_root)
    bomb = "\n".join(f"x{i}: &a{i} [" + ",".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 8))
    text = (catalog / "test_ds.yaml").read_text().replace("formats: [dicom, nifti, nrrd, mha]", "formats: *a7")
    (catalog / "test_ds.yaml").write_text("x0: &a0 [1]\n" + bomb + "\n" + text)
    t0 = time.perf_counter()
    with pytest.raises(CatalogError) as info:
        load_catalog(catalog)
    assert time.perf_counter() - t0 < 5
    fields = {field for _, field, _ in info.value.errors}
    assert "x0" in fields and any(f.startswith("formats") for f in fields)


@pytest.mark.parametrize(("atlas_text", "field", "message"), [
    ("name: evil\nimage: /etc/passwd\nmask: m.nii.gz\n", "image", "must name a NIfTI, NRRD or MetaImage file"),
    ("name: evil\nimage: a.nii.gz\nmask: ../../../etc/shadow\n", "mask", "must name a NIfTI"),
    ("name: evil\nimage: a.nii.gz\nmask: m.nii.gz\ncolour: red\n", "colour", "Extra inputs are not permitted"),
    ("name: [evil]\nimage: a.nii.gz\nmask: m.nii.gz\n", "name", "valid string"),
    ("- not a mapping\n", "-", "must be a mapping"),
])
def test_broken_atlas_files_are_refused_naming_atlas_file_and_field(data_root, monkeypatch, atlas_text, field,
                                                                    message):
    atlases = data_root / "atlases"
    atlases.mkdir()
    (atlases / "evil.yaml").write_text(atlas_text)
    monkeypatch.setenv("IMAGING_PIPELINES_ATLASES", str(atlases))
    catalog = write_catalog(data_root, registration="{target: atlas, atlas: evil}")
    file, reported_field, reported = only_error(catalog)
    assert file.endswith("test_ds.yaml") and reported_field == "registration"
    assert str(atlases / "evil.yaml") in reported and f": {field}: " in reported and message in reported
