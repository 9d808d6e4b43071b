"""HTML reports built from real stage outputs: a 2-patient demo cohort (ingest -> preprocess -> affine
registration to the demo atlas -> Otsu segmentation -> evaluation) and one synthetic 2-date scene (tiles ->
analysis-ready -> baseline segmentation -> scene outputs); sections, decodable figures, figures, links,
escaping, and no planted PHI anywhere in a report."""

from __future__ import annotations

import base64
import io
import json
import re

import numpy as np
import pytest
import yaml
from PIL import Image

from imaging_pipelines.config.catalog import load_catalog
from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR
from imaging_pipelines.report.cohort import cohort_report
from imaging_pipelines.report.patient import report_patient
from imaging_pipelines.report.scene import report_scene
from tests.conftest import write_catalog
from tests.test_phi import phi_leaks, phi_needles

IMG = re.compile(r'<img src="data:image/png;base64,([^"]*)"')
PATIENT_SECTIONS = ["images", "registration", "bias-field", "qc", "volumes", "surfaces", "evaluation", "provenance"]
SEGMENTATION = {"method": "otsu", "modalities": ["MR"], "image_pattern": "t1w", "classes": {"lesion": 5},
                "labels": {"source": "inbox"}, "baselines": ["watershed"], "dicom_seg": False, "meshes": True}


@pytest.fixture(scope="module")
def medical(tmp_path_factory):
    from imaging_pipelines.tools.demo.atlas import write_demo_atlas
    from imaging_pipelines.tools.demo.cohort import generate_demo_cohort
    from imaging_pipelines.medical.inbox import scan_inbox
    from imaging_pipelines.medical.ingest import ingest_partition
    from imaging_pipelines.medical.stages.preprocessing import preprocess_partition
    from imaging_pipelines.medical.stages.registration import register_partition
    from imaging_pipelines.medical.stages.segmentation import segment_partition
    from imaging_pipelines.medical.stages.segmentation_eval import evaluate_partition

    root = tmp_path_factory.mktemp("reports_med")
    mp = pytest.MonkeyPatch()
    mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
    image, mask = write_demo_atlas(root / "atlas")
    (root / "atlases").mkdir()
    (root / "atlases" / "demo_phantom.yaml").write_text(f"name: demo_phantom\nimage: {image}\nmask: {mask}\n")
    mp.setenv("IMAGING_PIPELINES_ATLASES", str(root / "atlases"))
    catalog = write_catalog(root, "rep_ds", file_modality="MR", preprocessing_recipe="demo_mr",
                            series_selection=json.dumps({"modalities": ["MR", "CT"], "min_slices": 2}),
                            registration=json.dumps({"target": "atlas", "atlas": "demo_phantom", "method": "affine"}),
                            segmentation=json.dumps(SEGMENTATION))
    manifest = generate_demo_cohort(root / "inbox", n_patients=2, seed=0)
    (ds,) = load_catalog(catalog)
    store = root / "storage"
    keys = sorted(scan_inbox(ds.inbox, ds.formats, ds.label_suffixes).by_patient)
    for stage in (ingest_partition, preprocess_partition, register_partition):
        for key in keys:
            stage(ds, key, store)
    for key in keys[:-1]:  # the last patient stays unsegmented: its report leaves those sections out
        segment_partition(ds, key, store, device="cpu")
        evaluate_partition(ds, key, store)
    reports = {k: report_patient(ds, k, store, run_id="run-42") for k in keys}
    failures = [{"partition": keys[0], "asset": "segmentation", "error": "<script>alert('x')</script> & co", "run_id": "r1"}]
    cohort = cohort_report(ds, store, failures=failures, run_id="run-42")
    yield {"keys": keys, "reports": reports, "cohort": cohort, "manifest": manifest}
    mp.undo()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    from imaging_pipelines.tools.demo.scenes import write_demo_scenes
    from imaging_pipelines.remote_sensing.stages.scene_mosaic import build_scene_outputs
    from imaging_pipelines.remote_sensing.stages.tile_prepare import prepare_tile
    from imaging_pipelines.remote_sensing.stages.tile_segment import segment_tile
    from imaging_pipelines.remote_sensing.stages.tile_ingest import ingest_tile, scene_tiles, scenes

    root = tmp_path_factory.mktemp("reports_rs")
    mp = pytest.MonkeyPatch()
    mp.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(root))
    entry = yaml.safe_load((DEFAULT_CATALOG_DIR / "demo_scenes.yaml").read_text())
    entry["inbox"] = "../inbox"
    entry["remote_sensing"]["segmentation"]["method"] = "baseline"
    (root / "catalog").mkdir()
    (root / "catalog" / "demo_scenes.yaml").write_text(yaml.safe_dump(entry))
    truth = write_demo_scenes(root / "inbox", n_scenes=1, size=160, n_dates=2)
    (ds,) = load_catalog(root / "catalog")
    store = root / "storage"
    for name, source in scenes(ds).items():
        for tile in scene_tiles(ds, source)[1]:
            for stage in (ingest_tile, prepare_tile, segment_tile):
                stage(ds, tile.key(name), store)
    build_scene_outputs(ds, store, log=lambda *_: None)
    name = truth[0]["name"]
    yield {"name": name, "truth": truth, "report": report_scene(ds, name, store, run_id="run-7"),
           "cohort": cohort_report(ds, store, run_id="run-7")}
    mp.undo()


def images(html: str) -> list[np.ndarray]:
    """Every embedded PNG, decoded; each must be a real, non-blank picture."""
    out = []
    for data in IMG.findall(html):
        assert data, "empty image"
        out.append(np.asarray(Image.open(io.BytesIO(base64.b64decode(data))).convert("L"), dtype=np.float32))
        assert out[-1].std() > 0, "blank image"
    return out


def section_ids(html: str) -> list[str]:
    return re.findall(r'<section id="([^"]+)"', html)


def test_patient_reports(medical):
    segmented, unsegmented = (medical["reports"][k] for k in medical["keys"])
    html = open(segmented.path).read()
    assert segmented.path.endswith(f"reports/{medical['keys'][0]}.html")
    assert section_ids(html) == segmented.sections == PATIENT_SECTIONS
    assert len(images(html)) == segmented.figures >= 4
    assert "run-42" in html and "volume_ml" in html and "dice" in html and "hd95_mm" in html
    assert set(segmented.summary["volumes_ml"]) == {"lesion"} and segmented.summary["dice"]["model"] >= 0
    # 3D view: Otsu on the demo's MNI152 head keeps a non-empty mask after post-processing (on the former ellipsoid
    # phantom it was empty), so the section draws its surfaces (meshes themselves: test_segment_meshes.py)
    assert segmented.summary["surfaces"] >= 1 and "empty segmentation, no surface" not in html
    thumb = Image.open(io.BytesIO(segmented.preview_png))
    assert thumb.width <= 256 and len(segmented.preview_png) < 60_000
    html2 = open(unsegmented.path).read()  # no segmentation / evaluation stores: sections left out
    assert section_ids(html2) == unsegmented.sections == ["images", "registration", "bias-field", "qc", "provenance"]
    assert len(images(html2)) == unsegmented.figures


def test_cohort_report_links_patients_and_escapes_failures(medical):
    html = open(medical["cohort"].path).read()
    assert medical["cohort"].path.endswith("reports/index.html")
    assert section_ids(html) == ["patients", "volumes", "evaluation", "failed", "provenance"]
    for key in medical["keys"]:
        assert f'href="{key}.html"' in html
    assert "<script>" not in html and "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in html
    assert len(images(html)) == medical["cohort"].figures == 2
    assert medical["cohort"].summary["failures"] == 1 and medical["cohort"].summary["reports"] == 2


def test_reports_hold_no_phi(medical):
    needles = phi_needles(medical["manifest"])
    assert len(needles) > 10
    texts = {r.path: IMG.sub("<img>", open(r.path).read()) for r in [*medical["reports"].values(), medical["cohort"]]}
    texts["summaries"] = json.dumps([r.summary for r in medical["reports"].values()])
    leaks = phi_leaks(needles, texts)
    assert not leaks, f"PHI in a report: {sorted(leaks)}"


def test_scene_and_scene_cohort_reports(scene):
    report, name = scene["report"], scene["name"]
    html = open(report.path).read()
    assert report.path.endswith(f"reports/{name}.html")
    assert section_ids(html) == report.sections == ["map", "areas", "qc", "evaluation", "provenance"]
    assert len(images(html)) == report.figures == 3
    assert set(report.summary["areas_ha"]) == {"water", "built"} and report.summary["areas_ha"]["water"] > 0
    assert 0 <= report.summary["cloud_fraction"] < 1 and report.summary["iou"]["water"] > 0.5
    assert all(d in html for d in scene["truth"][0]["dates"]) and "EPSG:32632" in html
    cohort = open(scene["cohort"].path).read()
    assert section_ids(cohort) == ["scenes", "areas", "failed", "provenance"]
    assert f'href="{name}.html"' in cohort and "no failures" in cohort
    assert len(images(cohort)) == scene["cohort"].figures == 2
