"""Cohort report: ``<root>/<dataset>/reports/index.html``, one table row per patient (medical) or scene
(remote sensing) with a link to its report when that exists, cohort plots, and the failed runs.

Sections (element ids): medical ``patients``, ``volumes`` (lesion volume distribution, mL), ``evaluation``
(Dice per case and method); remote sensing ``scenes``, ``areas`` (class areas per scene and over time, ha);
both ``failed`` (the ``failures`` given: partition, asset, error, run id; shown escaped) and ``provenance``.
"""

from __future__ import annotations

import json

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.medical.io.ome_zarr import read_labels, store_attributes
from imaging_pipelines.core.storage import as_upath, store_exists
from imaging_pipelines.report import figures as fg
from imaging_pipelines.report.html import Figure, Link, ReportOutcome, Section, code_version, report_path, write_report
from imaging_pipelines.core.stage_result import INGESTED, stage_store
from imaging_pipelines.report.patient import label_volumes
from imaging_pipelines.report.scene import SCENE_OUTPUTS, scene_dates, tile_records
from imaging_pipelines.medical.stages.segmentation_data import EVALUATED, SEGMENTED


def _stored(root: UPath | str, dataset_id: str, stage: str, suffix: str) -> list[str]:
    folder = as_upath(root) / dataset_id / stage
    if not folder.exists():
        return []
    return sorted(p.name[: -len(suffix)] for p in folder.iterdir() if p.name.endswith(suffix) and ".staging-" not in p.name)


def _link(root, dataset_id: str, name: str) -> Link | str:
    """A relative link to ``reports/<name>.html`` (beside ``index.html``) when that report exists."""
    return Link("report", f"{name}.html") if report_path(root, dataset_id, name).exists() else "no report"


def _medical_sections(dataset: DatasetConfig, ds_id: str, root, summary: dict) -> list[Section]:
    classes = dict(getattr(getattr(dataset, "segmentation", None), "classes", None) or {})
    partitions = sorted(set(_stored(root, ds_id, INGESTED, ".zarr")) | set(_stored(root, ds_id, SEGMENTED, ".zarr"))
                        | set(_stored(root, ds_id, EVALUATED, ".json")))
    rows, volumes, dice = [], {}, {}
    for partition in partitions:
        row: dict = {"patient": partition}
        store = stage_store(root, ds_id, SEGMENTED, partition)
        if store_exists(store):
            row["method"] = store_attributes(store).get("method")
            totals: dict[str, float] = {}
            for image in store_attributes(store).get("images", []):
                labels = {"segmentation": lab for n, lab in read_labels(store, image).items() if n == "segmentation"}
                for r in label_volumes(labels, classes):
                    totals[r["class"]] = round(totals.get(r["class"], 0.0) + r["volume_ml"], 3)
            for name, ml in totals.items():
                row[f"{name} (mL)"] = ml
                volumes.setdefault(name, []).append(ml)
        evaluation = as_upath(root) / ds_id / EVALUATED / f"{partition}.json"
        if evaluation.exists():
            scores = json.loads(evaluation.read_text())
            for method in sorted({r["method"] for r in scores}):
                values = [r["dice"] for r in scores if r["method"] == method and r["dice"] is not None]
                if values:
                    row[f"Dice {method}"] = round(float(np.mean(values)), 4)
                    dice.setdefault(partition, {})[method] = row[f"Dice {method}"]
        row["report"] = _link(root, ds_id, partition)
        rows.append(row)
    columns = list(dict.fromkeys(k for r in rows for k in r))  # every row gets every column
    rows = [{c: r.get(c) for c in columns} for r in rows]
    patients = Section("patients", "Patients", [f"{len(rows)} patient(s); volumes in mL, Dice mean over images and classes"])
    patients.tables.append(("per patient", rows))
    sections = [patients]
    if volumes:
        sections.append(Section("volumes", "Volumes", figures=[Figure(fg.box_plot(volumes, "segmented volume per patient", "mL"),
                                                                      "segmented volume per class over patients (mL)")]))
    if dice:
        sections.append(Section("evaluation", "Evaluation", figures=[Figure(fg.bar_plot(dice, "Dice per case and method", "Dice"),
                                                                            "mean Dice per patient and method")]))
    summary.update(patients=len(rows), reports=sum(isinstance(r["report"], Link) for r in rows),
                   median_volume_ml={k: round(float(np.median(v)), 3) for k, v in volumes.items()})
    return sections


def _scene_sections(ds_id: str, root, summary: dict) -> list[Section]:
    from imaging_pipelines.remote_sensing.stages.scene_mosaic import STATUS_FILE, scene_status

    folder = as_upath(root) / ds_id / SCENE_OUTPUTS
    names = sorted(p.name for p in folder.iterdir() if (p / "summary.json").exists() or (p / STATUS_FILE).exists()) \
        if folder.exists() else []
    rows, areas, over_time, incomplete = [], {}, {}, 0
    for scene in names:
        status = scene_status(folder / scene)
        if status.get("status") != "complete":  # measured figures would be partial: none are shown
            incomplete += 1
            rows.append({"scene": scene, "status": f"incomplete: {status.get('missing_tiles')} of {status.get('tiles')} "
                                                   "tiles not segmented (not stitched, not measured)",
                         "report": "no report (incomplete scene)"})
            continue
        info = json.loads((folder / scene / "summary.json").read_text())
        dates = scene_dates(tile_records(root, ds_id, scene)[0])
        areas[scene] = dict(info.get("areas_ha", {}))
        evaluation = info.get("evaluation") or {}
        model = next((r for m, r in (evaluation.get("methods") or {}).items() if m != "baseline_otsu"), {})
        majority = evaluation.get("majority_class") or {}
        rows.append({"scene": scene, "status": "complete", "dates": ", ".join(dates) or "undated",
                     **{f"{k} (ha)": v for k, v in areas[scene].items()},
                     "held-out tiles": evaluation.get("tiles"), "accuracy": model.get("accuracy"),
                     "majority accuracy": majority.get("accuracy"), "mean IoU": model.get("mean_iou"),
                     "majority mean IoU": majority.get("mean_iou"),
                     "cloud fraction": info.get("cloud_fraction"), "nodata fraction": info.get("nodata_fraction"),
                     "report": _link(root, ds_id, scene)})
        if dates:  # the scene's area at the middle of its acquisition dates
            for name, ha in areas[scene].items():
                over_time.setdefault(name, []).append((dates[len(dates) // 2], ha))
    columns = list(dict.fromkeys(k for r in rows for k in r))
    section = Section("scenes", "Scenes", [f"{len(rows)} scene(s), {incomplete} incomplete; areas in hectares; accuracy "
                                           "and mean IoU of the segmentation on each scene's held-out tiles, beside "
                                           "the majority-class predictor's"])
    section.tables.append(("per scene", [{c: r.get(c) for c in columns} for r in rows]))
    sections = [section]
    if areas:
        plots = Section("areas", "Class areas", figures=[Figure(fg.bar_plot(areas, "class areas per scene", "ha"), "area per scene and class (ha)")])
        if over_time:
            plots.figures.append(Figure(fg.time_plot(over_time, "class areas over time", "ha"),
                                        "area per class at each scene's middle acquisition date (ha)"))
        sections.append(plots)
    summary.update(scenes=len(rows), incomplete_scenes=incomplete, reports=sum(isinstance(r["report"], Link) for r in rows))
    return sections


def cohort_report(dataset: DatasetConfig, root: UPath | str, failures: list[dict] | None = None, run_id: str | None = None) -> ReportOutcome:
    """Build and atomically write ``reports/index.html`` for the dataset (medical or remote sensing)."""
    ds_id = str(getattr(dataset, "id", dataset))
    domain = getattr(dataset, "domain", None) or ("remote_sensing" if (as_upath(root) / ds_id / SCENE_OUTPUTS).exists() else "medical")
    summary: dict = {"domain": domain}
    sections = _scene_sections(ds_id, root, summary) if domain == "remote_sensing" else _medical_sections(dataset, ds_id, root, summary)
    failed = Section("failed", "Failed runs")
    rows = [{k: str(f.get(k) or "") for k in ("partition", "asset", "error", "run_id")} for f in failures or []]
    failed.tables.append(("failures", rows))
    failed.text.append(f"{len(rows)} failure(s)" if rows else "no failures")
    summary["failures"] = len(rows)
    sections.append(failed)
    sections.append(Section("provenance", "Provenance", [f"dataset {ds_id} ({domain})", f"code version {code_version()}",
                                                         f"run id {run_id or 'not given'}"]))
    items = summary.get("scenes", summary.get("patients", 0))
    return write_report(report_path(root, ds_id, "index"), "cohort.html.j2", f"Cohort report {ds_id}", sections, [], summary,
                        dataset=ds_id, domain=domain, n_items=items, item_kind="scene(s)" if domain == "remote_sensing" else "patient(s)")
