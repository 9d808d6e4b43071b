"""Free-text DICOM descriptors never reach names, stores, metadata, event logs or reports (only the cleaned
descriptor does); images that may show identifying text in their pixels are quarantined unless allowed."""

from __future__ import annotations

import re

import numpy as np
import pydicom
import pytest
from dagster import DagsterInstance

from imaging_pipelines.core.privacy import clean_descriptor, pseudonymise
from imaging_pipelines.core.storage import partition_store_path, storage_root
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.io.burned_in import burned_in_reason
from imaging_pipelines.medical.io.ome_zarr import read_volume_store
from imaging_pipelines.tools.demo.dicom_writer import write_dicom_series
from tests.conftest import write_catalog
from tests.pipeline_helpers import identity, materialization_metadata, run_pipeline

PLANTED = ("DOE", "JANE", "19700101", "1970")


def test_clean_descriptor_keeps_protocol_words_only():
    assert clean_descriptor("T1w 3D GRE axial") == "t1w_3d_gre_axial"
    assert clean_descriptor("CT abdomen 5mm") == "ct_abdomen_5mm"
    assert clean_descriptor("DWI b1000 3T") == "dwi_b1000_3t"
    assert clean_descriptor("DOE^JANE 19700101 T1 AX") == "t1_ax"
    assert clean_descriptor("DOE JANE 01.01.1970 T2 SAG") == "t2_sag"
    hashed = clean_descriptor("Jane Doe, born 1970-01-01")
    assert hashed.startswith("desc_") and len(hashed) == 13 and "1970" not in hashed
    assert hashed == clean_descriptor("Jane Doe, born 1970-01-01")  # stable under one key
    assert clean_descriptor("") == ""


def test_burned_in_reasons():
    ds = pydicom.Dataset()
    assert burned_in_reason(ds) is None
    ds.BurnedInAnnotation = "YES"
    assert burned_in_reason(ds) == "BurnedInAnnotation is YES"
    ds = pydicom.Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7.4"  # multi-frame true colour secondary capture
    assert "secondary capture" in burned_in_reason(ds)
    ds = pydicom.Dataset()
    ds.ImageType = ["DERIVED", "SECONDARY", "SCREEN SAVE"]
    assert "screen save" in burned_in_reason(ds)


def write_series(folder, number: int, description: str, seed: int = 0, **extra_tags):
    rng = np.random.default_rng(seed)
    vol = Volume(rng.integers(0, 1000, (6, 16, 12)).astype(np.int16), spacing=(0.9, 0.9, 3.0))
    return write_dicom_series(vol, folder, patient=identity("PID-A"), series_number=number,
                              series_description=description, file_prefix=f"S{number:02d}_IM",
                              extra_tags={"ProtocolName": description, "StudyDescription": description, **extra_tags})


def test_names_and_descriptors_in_series_description_never_reach_outputs(workspace):
    write_series(workspace / "inbox" / "case_a", 1, "DOE^JANE 19700101 T1 AX")
    write_series(workspace / "inbox" / "case_a", 2, "Jane Doe born 1970", seed=1)
    key = pseudonymise("PID-A", "dicom-patient-id")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        assert runs[key].success
        meta = materialization_metadata(instance, "test_ds", key)
        logs = [str(e.message) + str(getattr(e, "dagster_event", "")) for e in instance.all_logs(runs[key].run_id)]
    store = partition_store_path(storage_root(), "test_ds", "ingested_scans", key)
    images = read_volume_store(store)
    hashed = clean_descriptor("Jane Doe born 1970")
    assert sorted(images) == ["s001_t1_ax", f"s002_mr_{hashed}"]
    assert images["s001_t1_ax"].attributes["series_description"] == "t1_ax"
    texts = [str(p) for p in storage_root().rglob("*")] + [str(v) for v in meta.values()] + logs
    texts += [re.sub(r"base64,[A-Za-z0-9+/=]+", "", p.read_text(errors="replace"))  # embedded PNGs: random letters
              for p in storage_root().rglob("*") if p.is_file() and p.suffix in (".json", ".html", ".jsonl")]
    for term in PLANTED:
        assert not [t for t in texts if term.lower() in t.lower()], term


def test_burned_in_series_is_quarantined_and_the_patient_carries_on(workspace):
    write_series(workspace / "inbox" / "case_a", 1, "T1 AX")
    write_series(workspace / "inbox" / "case_a", 2, "T2 SAG", seed=1, BurnedInAnnotation="YES")
    key = pseudonymise("PID-A", "dicom-patient-id")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        assert runs[key].success
        notes = materialization_metadata(instance, "test_ds", key)["notes"].value
    assert list(read_volume_store(partition_store_path(storage_root(), "test_ds", "ingested_scans", key))) == ["s001_t1_ax"]
    assert "series 2 (6 file(s), e.g. case_a/S02_IM00001.dcm) quarantined: BurnedInAnnotation is YES" in notes
    reports = [p for p in (storage_root() / "test_ds" / "reports").glob("*.html")]
    assert reports and all("t2_sag" not in p.read_text() for p in reports)  # not in montages or previews
    write_catalog(workspace, inbox_checks="{allow_burned_in_annotation: true}")
    with DagsterInstance.ephemeral() as instance:
        _, runs = run_pipeline(instance)
        assert runs[key].success
    images = read_volume_store(partition_store_path(storage_root(), "test_ds", "ingested_scans", key))
    assert sorted(images) == ["s001_t1_ax", "s002_t2_sag"]
