"""PHI: planted identifying values never reach partition keys, the event log, metadata, paths or Zarr attributes."""

from __future__ import annotations

import re

from dagster import DagsterInstance
from dagster._serdes import serialize_value

from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
from tests.pipeline_helpers import run_pipeline

DATA_URI = re.compile(r"data:image/[a-z]+;base64,[A-Za-z0-9+/=]+")


def phi_needles(manifest) -> set[str]:
    """Every planted value, plus its parts (name components, date in ISO form), upper-cased."""
    needles = set()
    for value in manifest.planted_phi(include_study_date=True):
        needles.add(value.upper())
        needles.update(part.upper() for part in re.split(r"[\^ ,]+", value) if len(part) >= 4)
        if re.fullmatch(r"\d{8}", value):
            needles.add(f"{value[:4]}-{value[4:6]}-{value[6:]}")
    return needles


def phi_leaks(needles: set[str], haystacks: dict[str, str]) -> set[tuple[str, str]]:
    """(where, needle) for every needle found in a haystack as a whole token (not inside a longer run of
    letters and digits), outside embedded base64 images: short parts such as "221B" otherwise turn up by
    chance inside run ids (hex), base64 previews or binary bytes."""
    texts = {where: DATA_URI.sub("", text).upper() for where, text in haystacks.items()}
    return {(where, n) for where, text in texts.items() for n in needles
            if re.search(rf"(?<![0-9A-Z]){re.escape(n)}(?![0-9A-Z])", text)}


def test_no_planted_phi_anywhere(workspace):
    manifest = generate_demo_cohort(workspace / "inbox", n_patients=4, seed=7)
    needles = phi_needles(manifest)
    assert len(manifest.dicom_patients) >= 3 and len(needles) > 20
    with DagsterInstance.ephemeral() as instance:
        sensor_result, runs = run_pipeline(instance)
        assert len(runs) == 4 and all(r.success for r in runs.values())
        haystacks = {
            "partition keys": " ".join(instance.get_dynamic_partitions("test_ds__patients")),
            "sensor cursor": sensor_result.cursor,
            "run requests": serialize_value(list(sensor_result.run_requests)),
        }
        for key, run in runs.items():
            records = instance.all_logs(run.run_id)
            haystacks[f"event log of {key}"] = "\n".join(serialize_value(r) for r in records)
            haystacks[f"run of {key}"] = serialize_value(instance.get_run_by_id(run.run_id))
    storage = workspace / "storage"
    haystacks["paths"] = "\n".join(str(p.relative_to(workspace)) for p in storage.rglob("*"))
    haystacks["zarr attributes"] = "\n".join(p.read_text() for p in storage.rglob("zarr.json"))
    assert "ASSET_MATERIALIZATION" in "".join(haystacks.values())  # metadata is in the event log we search
    leaks = phi_leaks(needles, haystacks)
    assert not leaks, f"PHI leaked: {sorted(leaks)}"
