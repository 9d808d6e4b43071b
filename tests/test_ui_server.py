"""The UI command's server shows the partitions and materialisations of a persistent instance."""

from __future__ import annotations

import json
import urllib.request

from dagster import DagsterInstance

from tests.dagster_server import free_port, persistent_dagster_home, start_server, stop_server
from tests.pipeline_helpers import run_pipeline, write_patient


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
        headers={"content-type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


def test_webserver_shows_partitions_and_materialisations(workspace, tmp_path, monkeypatch):
    home = persistent_dagster_home(tmp_path, monkeypatch)
    write_patient(workspace / "inbox" / "case_a", "PID-A")
    write_patient(workspace / "inbox" / "case_b", "PID-B", seed=1)
    catalog = workspace / "catalog" / "test_ds.yaml"  # the segmentation chain too (no image selected: no training)
    catalog.write_text(catalog.read_text() + 'segmentation: {method: dynunet, labels: {source: inbox}, '
                                            'image_pattern: "^nothing$", nnunet: {enabled: true}}\n')
    with DagsterInstance.get() as instance:
        _, runs = run_pipeline(instance)
    assert all(r.success for r in runs.values())

    port = free_port()
    proc = start_server("webserver", port, tmp_path / "webserver.log")
    try:
        nodes = graphql(port, "{ assetNodes { assetKey { path } dependencyKeys { path }"
                              " partitionKeysByDimension { partitionKeys } } }")
        (node,) = [n for n in nodes["assetNodes"] if n["assetKey"]["path"] == ["test_ds", "ingested_scans"]]
        (pre,) = [n for n in nodes["assetNodes"] if n["assetKey"]["path"] == ["test_ds", "preprocessed"]]
        assert pre["dependencyKeys"] == [{"path": ["test_ds", "ingested_scans"]}]  # lineage is served
        parents = {n["assetKey"]["path"][-1]: sorted(d["path"][-1] for d in n["dependencyKeys"])
                   for n in nodes["assetNodes"] if n["assetKey"]["path"][0] == "test_ds"}
        assert parents["segmentation_model"] == ["preprocessed"]  # data -> model -> masks -> evaluation
        assert parents["segmentation"] == ["preprocessed", "segmentation_model"]
        assert parents["segmentation_evaluation"] == ["segmentation"]
        assert parents["segmentation_cohort_evaluation"] == ["segmentation_evaluation"]
        assert parents["nnunet_dataset"] == ["preprocessed"]
        assert sorted(node["partitionKeysByDimension"][0]["partitionKeys"]) == sorted(runs)
        mats = graphql(
            port,
            '{ assetOrError(assetKey: {path: ["test_ds", "ingested_scans"]}) { ... on Asset {'
            " assetMaterializations(limit: 10) { partition metadataEntries { label } } } } }",
        )["assetOrError"]["assetMaterializations"]
        assert sorted(m["partition"] for m in mats) == sorted(runs)
        assert {"series_count", "orientation", "storage_path", "warnings"} <= {e["label"] for e in mats[0]["metadataEntries"]}
    finally:
        stop_server(proc)
