"""The Dagster UI in a real browser: `dg dev` (the dg project: catalog components) over a persistent instance holding a small medical cohort
and a small remote-sensing scene, driven by headless Chromium (tests/browser.py). The lineage graph of each
dataset shows every asset of its chain, a partition page shows the materialisation metadata, and no planted
PHI reaches any page or the server's log. Screenshots go to test-artifacts/ (ui_*.png).

The report assets (``<dataset>/patient_report``, ``<dataset>/scene_report``: metadata ``preview`` with an
embedded PNG and ``report_path``, and the HTML report ``<storage>/<dataset>/reports/<partition>.html``) are
checked when the definitions have them, and skipped otherwise."""

from __future__ import annotations

import json
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.browser import ARTIFACTS, clear_artifacts, missing_browser, page_text, screenshot, wait_for, wait_for_text
from tests.dagster_server import free_port, start_server, stop_server
from tests.conftest import REPO, write_catalog
from tests.test_phi import phi_leaks

pytestmark = [pytest.mark.skipif(missing_browser() is not None, reason=f"browser test: {missing_browser()}"),
              pytest.mark.timeout(600)]

MEDICAL, REMOTE = "ui_cohort", "demo_scenes"
REPORT_ASSETS = {MEDICAL: "patient_report", REMOTE: "scene_report"}
# Section ids the HTML reports must have (fill in once the report layout is settled; until then every
# in-page link of the report must resolve and the report must have at least one element with an id).
REPORT_SECTIONS: dict[str, list[str]] = {MEDICAL: ["images", "volumes", "qc", "provenance"], REMOTE: ["map", "areas", "qc", "provenance"]}
LOCATION = "imaging_pipelines"


def graphql(port: int, query: str) -> dict:
    req = urllib.request.Request(f"http://127.0.0.1:{port}/graphql", data=json.dumps({"query": query}).encode(),
                                 headers={"content-type": "application/json"})
    with urllib.request.urlopen(req, timeout=30) as resp:
        return json.loads(resp.read())["data"]


@dataclass
class UI:
    base: str
    port: int
    driver: object
    root: Path
    storage: Path
    log: Path
    repo_path: str  # <repository>@<location>, as the UI's URLs spell it
    assets: dict[str, list[str]]  # dataset -> asset names of its chain (from the Definitions' asset graph)
    partitioned: dict[str, list[str]]
    partitions: dict[str, list[str]]  # dataset -> materialised partition keys
    runs: dict[str, str]  # partition key -> run id
    reports: dict[str, dict | None]  # dataset -> {"partition", "metadata"} of its report asset (None: never materialised)
    phi: set[str]
    visited: dict[str, str] = field(default_factory=dict)  # url -> page text

    def open(self, url: str, needles: list[str], name: str | None = None, timeout: float = 90.0) -> str:
        """Load ``url`` (relative to the server, or absolute), wait until ``needles`` are shown, remember the
        page text (for the PHI check) and, with ``name``, save a screenshot ``ui_<name>.png``."""
        full = url if "://" in url else self.base + url
        self.driver.get(full)
        try:
            text = wait_for_text(self.driver, needles, timeout=timeout)
        finally:
            self.visited[full] = page_text(self.driver)
            if name:
                screenshot(self.driver, f"ui_{name}")
        return text

    def remember(self) -> str:
        text = page_text(self.driver)
        self.visited[f"{self.driver.current_url}#{len(self.visited)}"] = text
        return text

    def lineage_url(self, group: str) -> str:
        return f"/locations/{self.repo_path}/asset-groups/{urllib.parse.quote(group)}"

    def asset_url(self, dataset: str, asset: str, partition: str | None = None) -> str:
        """The asset's partition page, or for an unpartitioned asset its events page (latest metadata)."""
        query = {"view": "partitions", "partition": partition} if partition is not None else {"view": "events"}
        return f"/assets/{dataset}/{asset}?" + urllib.parse.urlencode(query)


def _materialise(root: Path) -> dict:
    """Both datasets through the real Dagster definitions into the persistent instance (DAGSTER_HOME)."""
    from dagster import AssetKey, DagsterInstance

    from imaging_pipelines.dagster_layer.local_runs import materialise_partitions, run_job, run_sensor_once
    from imaging_pipelines.dagster_layer.factory import build_definitions
    from imaging_pipelines.dagster_layer.scene_demo import run_tile_chain

    defs = build_definitions()
    graph = defs.resolve_asset_graph()
    out = {"assets": {}, "partitioned": {}, "partitions": {}, "runs": {}, "reports": {}}
    for ds in (MEDICAL, REMOTE):
        keys = [k for k in graph.toposorted_asset_keys if k.path[0] == ds]
        out["assets"][ds] = [k.path[-1] for k in keys]
        out["partitioned"][ds] = [k.path[-1] for k in keys if graph.get(k).is_partitioned]
    with DagsterInstance.get() as instance:
        sensor = run_sensor_once(defs, MEDICAL, instance)
        patients = sorted({r.partition_key for r in sensor.run_requests or []})
        assert len(patients) == 2, patients
        results = materialise_partitions(defs, MEDICAL, patients, instance, progress=False)
        failed = {k: [e.event_specific_data.error.message for e in r.get_step_failure_events()]
                  for k, r in results.items() if not r.success}
        assert not failed, f"medical runs failed: {failed}"
        out["runs"] = {k: r.run_id for k, r in results.items()}
        cohort = run_job(defs, f"{MEDICAL}__cohort_job", instance)
        assert cohort is None or cohort.success, "cohort job failed"
        out["partitions"][MEDICAL] = patients
        chain = run_tile_chain(defs, REMOTE, instance, echo=lambda line: None)
        assert chain["keys"] and not chain["failed"], chain["errors"]
        out["partitions"][REMOTE] = chain["keys"]
        for ds, name in REPORT_ASSETS.items():
            key = AssetKey([ds, name])
            if not graph.has(key):
                continue  # not in the definitions (yet)
            event = instance.get_latest_materialization_event(key)
            jobs = [j.name for j in defs.jobs if j.name.startswith(f"{ds}__")
                    and key in defs.resolve_job_def(j.name).asset_layer.selected_asset_keys]
            if event is None and jobs:  # not in the jobs above: run the first job that selects it
                if graph.get(key).is_partitioned:
                    materialise_partitions(defs, ds, out["partitions"][ds], instance, progress=False,
                                           asset_selection=[key], job_name=jobs[0].split("__", 1)[1])
                else:
                    run_job(defs, jobs[0], instance)
                event = instance.get_latest_materialization_event(key)
            materialization = event.asset_materialization if event is not None else None
            out["reports"][ds] = None if materialization is None else {
                "partition": materialization.partition,
                "metadata": {k: getattr(v, "value", v) for k, v in materialization.metadata.items()},
            }
    return out


@pytest.fixture(scope="module")
def ui(tmp_path_factory):
    from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes
    from tests.browser import start_driver
    from tests.test_phi import phi_needles
    from tests.test_remote_sensing_pipeline import catalog_entry

    started = time.monotonic()
    root = tmp_path_factory.mktemp("ui_browser")
    home = root / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    (home / ".nux").mkdir()  # no "Join the Dagster community" dialog over the pages
    (home / ".nux" / "nux.yaml").write_text("seen: 1\n")
    mp = pytest.MonkeyPatch()
    proc = driver = None
    try:
        mp.setenv("DAGSTER_HOME", str(home))
        mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
        mp.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(root / "storage"))
        remote = yaml_load(REPO / "data_catalog" / f"{REMOTE}.yaml")["remote_sensing"]["segmentation"]
        catalog = catalog_entry(root, REMOTE, "scenes_inbox",
                                segmentation={**remote, "method": "baseline", "labels": {"source": "none"}})
        write_catalog(root, MEDICAL, inbox="cohort_inbox", file_modality="MR", preprocessing_recipe="none",
                      segmentation='{method: otsu, modalities: [MR], image_pattern: "(?i)t1", classes: {lesion: 5}, '
                                   "labels: {source: inbox}}")
        mp.setenv("IMAGING_PIPELINES_CATALOG", str(catalog))
        manifest = generate_demo_cohort(root / "cohort_inbox", n_patients=2)
        write_demo_scenes(root / "scenes_inbox", n_scenes=1, size=160, n_dates=2)
        data = _materialise(root)
        print(f"materialised in {time.monotonic() - started:.0f} s")

        port = free_port()
        log = root / "dagster_dev.log"
        proc = start_server("dg", port, log)
        repos = graphql(port, "{ repositoriesOrError { ... on RepositoryConnection { nodes { name location { name } } } } }")
        names = [n["name"] for n in repos["repositoriesOrError"]["nodes"] if n["location"]["name"] == LOCATION]
        assert names, f"code location {LOCATION} not loaded: {repos}"
        print(f"dg dev up after {time.monotonic() - started:.0f} s")
        clear_artifacts("ui_")
        driver = start_driver()
        yield UI(base=f"http://127.0.0.1:{port}", port=port, driver=driver, root=root, storage=root / "storage",
                 log=log, repo_path=f"{names[0]}@{LOCATION}", phi=phi_needles(manifest), **data)
    finally:
        try:
            if driver is not None:
                driver.quit()
        finally:
            if proc is not None:
                stop_server(proc)
            mp.undo()


def yaml_load(path: Path) -> dict:
    import yaml

    return yaml.safe_load(path.read_text())


@pytest.mark.parametrize("dataset", [MEDICAL, REMOTE])
def test_lineage_graph_shows_every_asset(ui, dataset):
    expected = ui.assets[dataset]
    chain = {MEDICAL: ["ingested_scans", "preprocessed", "segmentation", "segmentation_evaluation"],
             REMOTE: ["scene_tiles", "analysis_ready_tiles", "tile_segmentation", "scene_outputs"]}[dataset]
    assert set(chain) <= set(expected), expected  # the catalog entries gave the chains we mean to see
    ui.open(ui.lineage_url(dataset), expected)
    wait_for(ui.driver, lambda: "Loading" not in page_text(ui.driver), timeout=60, message="the asset statuses")
    text = ui.remember()
    screenshot(ui.driver, f"ui_lineage_{dataset}")
    unpartitioned = len(expected) - len(ui.partitioned[dataset])
    assert text.count("100% filled") == len(ui.partitioned[dataset]), text  # every partition materialised
    assert text.count("Materialized") >= unpartitioned, text


def test_partition_page_shows_metadata(ui):
    patient = ui.partitions[MEDICAL][0]
    text = ui.open(ui.asset_url(MEDICAL, "ingested_scans", patient), [patient, "Materialized", "storage_path", "series_count"],
                   name=f"partition_{MEDICAL}_ingested_scans")
    assert str(ui.storage / MEDICAL / "ingested_scans") in text  # the storage_path value itself
    tile = ui.partitions[REMOTE][0]
    ui.open(ui.asset_url(REMOTE, "scene_tiles", tile), [tile, "storage_path"], name=f"partition_{REMOTE}_scene_tiles")


def _report(ui, dataset: str) -> dict:
    name = REPORT_ASSETS[dataset]
    if dataset not in ui.reports:
        pytest.skip(f"{dataset}/{name} is not in the definitions yet (report assets not added)")
    report = ui.reports[dataset]
    assert report is not None, f"{dataset}/{name} exists but was never materialised"
    return report


@pytest.mark.parametrize("dataset", [MEDICAL, REMOTE])
def test_report_preview_in_metadata(ui, dataset):
    from selenium.webdriver.common.by import By

    report = _report(ui, dataset)
    assert {"preview", "report_path"} <= set(report["metadata"]), sorted(report["metadata"])
    name = REPORT_ASSETS[dataset]
    ui.open(ui.asset_url(dataset, name, report["partition"]), ["preview", "report_path"])
    driver = ui.driver
    pngs = 'return [...document.querySelectorAll("img[src^=\'data:image/png\']")].map(i => i.naturalWidth)'
    if not driver.execute_script(pngs):  # long markdown is behind "[Show Markdown]" on the preview's row
        links = driver.find_elements(By.XPATH, "//tr[td[normalize-space()='preview']]//*[normalize-space(text())="
                                               "'[Show Markdown]']")
        assert links, "no [Show Markdown] link on the preview row"
        links[0].click()
    widths = wait_for(driver, lambda: [w for w in driver.execute_script(pngs) if w > 0], timeout=30,
                      message="a rendered data:image/png preview")
    assert widths
    ui.remember()
    screenshot(driver, f"ui_preview_{dataset}_{name}")


@pytest.mark.parametrize("dataset", [MEDICAL, REMOTE])
def test_html_report_renders(ui, dataset):
    report = _report(ui, dataset)
    path = report["metadata"].get("report_path")
    path = Path(str(path)) if path else ui.storage / dataset / "reports" / f"{report['partition']}.html"
    if not path.is_file():
        pytest.skip(f"no HTML report at {path}")
    driver = ui.driver
    driver.get(path.resolve().as_uri())
    wait_for(driver, lambda: driver.execute_script(
        "return document.readyState === 'complete' && [...document.images].every(i => i.complete)"),
        timeout=30, message="the report and its images")
    images = driver.execute_script("return [...document.images].map(i => [i.src.slice(0, 40), i.naturalWidth])")
    assert images and all(width > 0 for _, width in images), images
    ids = set(driver.execute_script("return [...document.querySelectorAll('[id]')].map(e => e.id)"))
    assert set(REPORT_SECTIONS[dataset]) <= ids, sorted(ids)
    assert ids, "the report has no sections with ids"
    anchors = driver.execute_script(
        "return [...document.querySelectorAll('a[href^=\"#\"]')].map(a => decodeURIComponent(a.hash.slice(1)))")
    assert set(a for a in anchors if a) <= ids, f"in-page links without a target: {sorted(set(anchors) - ids)}"
    ui.visited[path.as_uri()] = page_text(driver)
    screenshot(driver, f"ui_report_{dataset}")


def test_no_phi_in_pages_or_server_log(ui):
    """Every page the tests above visited, plus each patient's partition pages and runs, and the server log."""
    assert len(ui.phi) > 10
    for patient in ui.partitions[MEDICAL]:
        for asset in ("ingested_scans", "segmentation"):
            if asset in ui.partitioned[MEDICAL]:
                ui.open(ui.asset_url(MEDICAL, asset, patient), [patient, "storage_path"])
        ui.open(f"/runs/{ui.runs[patient]}", ["ingested_scans"])
    ui.open("/runs", [ui.runs[ui.partitions[MEDICAL][0]][:8]])
    haystacks = dict(ui.visited)
    haystacks["dg dev log"] = ui.log.read_text(errors="replace")
    assert sum(len(t) for t in ui.visited.values()) > 2000, "the pages had almost no text"
    leaks = sorted(phi_leaks(ui.phi, haystacks))
    assert not leaks, f"planted PHI shown: {leaks}"
    assert ARTIFACTS.is_dir()
