"""Scene report: one self-contained HTML page per remote-sensing scene from its ``scene_outputs`` files.

``<root>/<dataset>/reports/<scene>.html`` with sections (element ids) ``map`` (RGB composite, 2-98 % stretch,
with the class map over it), ``areas`` (hectares per class), ``qc`` (cloud and nodata fractions, per-date
co-registration shifts), ``evaluation`` (accuracy, mean IoU and IoU per class of model, baseline and
the majority-class predictor on the scene's held-out tiles, when there are labelled ones) and ``provenance`` (scene, dates, CRS, grid, code / model version, run id).
"""

from __future__ import annotations

import json

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.storage import as_upath
from imaging_pipelines.report import figures as fg
from imaging_pipelines.report.html import Figure, ReportOutcome, Section, code_version, report_path, write_report
from imaging_pipelines.core.stage_result import stage_store

SCENE_OUTPUTS, PREPARED, TILE_SEGMENTATION = "scene_outputs", "analysis_ready_tiles", "tile_segmentation"
CLASS_COLOURS = {"water": "#1f78ff", "built": "#e6194b", "vegetation": "#3cb44b", "cloud": "#ffffff"}


def scene_folder(root: UPath | str, dataset_id: str, scene: str) -> UPath:
    return as_upath(root) / dataset_id / SCENE_OUTPUTS / scene


def scene_tile_keys(root: UPath | str, dataset_id: str, scene: str, stage: str) -> list[str]:
    """Partition keys ``<scene>__r<row>_c<col>`` of the scene's stored tiles of ``stage``."""
    folder = as_upath(root) / dataset_id / stage
    if not folder.exists():
        return []
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.startswith(f"{scene}__") and p.name.endswith(".zarr"))


def scene_classes(dataset: DatasetConfig, summary: dict, root: UPath | str, dataset_id: str, scene: str) -> dict[str, int]:
    """Class name -> value: from the catalog when ``dataset`` is a config, else from the scene's polygons."""
    rs = getattr(dataset, "remote_sensing", None)
    if rs is not None:
        return dict(rs.segmentation.classes)
    polygons = scene_folder(root, dataset_id, scene) / "classes.geojson"
    found = {}
    if polygons.exists():
        for feature in json.loads(polygons.read_text()).get("features", []):
            props = feature.get("properties", {})
            found.setdefault(str(props.get("class")), int(props.get("value", 0)))
    return found or {name: i + 1 for i, name in enumerate(summary.get("areas_ha", {}))}


def tile_records(root: UPath | str, dataset_id: str, scene: str) -> tuple[list[dict], list[dict]]:
    """(attributes of the scene's analysis-ready tiles, ``figures`` of its segmented tiles)."""
    from imaging_pipelines.remote_sensing.zarr_tiles import read_tile_layers

    prepared = [read_tile_layers(stage_store(root, dataset_id, PREPARED, k))["attrs"]
                for k in scene_tile_keys(root, dataset_id, scene, PREPARED)]
    segmented = [read_tile_layers(stage_store(root, dataset_id, TILE_SEGMENTATION, k))["attrs"].get("figures", {})
                 for k in scene_tile_keys(root, dataset_id, scene, TILE_SEGMENTATION)]
    return prepared, segmented


def evaluation_section(evaluation: dict, classes: dict[str, int], split: str, methods: list[str]) -> Section:
    """IoU per class (background included), mean IoU and pixel accuracy of every method and of the
    majority-class predictor, on the scene's held-out tiles (``evaluation`` from ``summary.json``)."""
    rows = dict(evaluation.get("methods") or {})
    majority = evaluation.get("majority_class")
    if majority:
        rows[f"majority class ({majority['class']})"] = majority
    what = "the test split's tiles (never trained on)" if split == "test" else "every tile (the method fits on none)"
    section = Section("evaluation", "Evaluation against the reference (held-out tiles)", [
        f"pooled over the pixels of {evaluation.get('tiles')} tile core(s) of {what}; segmentation method "
        f"{', '.join(methods) or 'unknown'}; the majority-class predictor labels every pixel with the class most "
        "frequent in the training reference"])
    names = ["background", *classes]
    section.tables.append(("accuracy and IoU", [
        {"method": m, "accuracy": r.get("accuracy"), "mean IoU": r.get("mean_iou"),
         **{f"IoU {k}": (r.get("iou") or {}).get(k) for k in names}} for m, r in rows.items()]))
    section.figures.append(Figure(fg.bar_plot({m: {"accuracy": r.get("accuracy"), "mean IoU": r.get("mean_iou")}
                                               for m, r in rows.items()}, "held-out accuracy and mean IoU", ""),
                                  "accuracy and mean IoU per method, with the majority-class predictor"))
    return section


def scene_dates(prepared: list[dict]) -> list[str]:
    return sorted({d for attrs in prepared for d in attrs.get("dates") or [] if d})


def report_scene(dataset: DatasetConfig, scene: str, root: UPath | str, run_id: str | None = None) -> ReportOutcome:
    """Build and atomically write the scene report from ``scene_outputs/<scene>/`` and the scene's tile stores."""
    from imaging_pipelines.remote_sensing.io import read_raster

    ds_id = str(getattr(dataset, "id", dataset))
    folder = scene_folder(root, ds_id, scene)
    if not (folder / "summary.json").exists():
        raise FileNotFoundError(f"{folder}: no scene outputs (materialise scene_outputs first)")
    summary_file = json.loads((folder / "summary.json").read_text())
    classes = scene_classes(dataset, summary_file, root, ds_id, scene)
    names = {v: k for k, v in classes.items()}
    colours = {v: CLASS_COLOURS.get(k, fg.label_colour(v)) for k, v in classes.items()}
    warnings: list[str] = []
    prepared, segmented = tile_records(root, ds_id, scene)
    sections: list[Section] = []

    composite = read_raster(str(folder / "composite.tif"))
    labels = read_raster(str(folder / "classes.tif")).array[0] if (folder / "classes.tif").exists() else None
    section = Section("map", "Map")
    section.figures.append(Figure(fg.raster_map(composite.array, composite.band_names, labels, colours, names, title=scene),
                                  "composite (red, green, blue; 2-98 % stretch, nodata black) and the classes over it"))
    sections.append(section)

    areas = summary_file.get("areas_ha", {})
    section = Section("areas", "Class areas")
    section.tables.append(("area per class (ha)", [{"class": k, "value": classes.get(k), "area_ha": v} for k, v in areas.items()]))
    if areas:
        section.figures.append(Figure(fg.bar_plot({scene: areas}, "class areas", "ha"), "area per class (ha)"))
    sections.append(section)

    qc = Section("qc", "Quality control", [f"cloud fraction {summary_file.get('cloud_fraction')}",
                                           f"nodata fraction {summary_file.get('nodata_fraction')}"])
    shifts = {}
    for attrs in prepared:
        for s in attrs.get("shifts") or []:
            shifts.setdefault(s.get("date") or "undated", []).append(s)
    qc.tables.append(("co-registration shift per date (px, mean over tiles)", [
        {"date": d, "dy_px": round(float(np.mean([s.get("dy_px", 0.0) for s in ss])), 3),
         "dx_px": round(float(np.mean([s.get("dx_px", 0.0) for s in ss])), 3),
         "applied": sum(bool(s.get("applied")) for s in ss), "tiles": len(ss)} for d, ss in sorted(shifts.items())]))
    if len(segmented) != len(prepared):
        warnings.append(f"{len(prepared)} analysis-ready tile(s) but {len(segmented)} segmented tile(s)")
    sections.append(qc)

    methods = sorted({f.get("method") for f in segmented if f.get("method")})
    evaluation = summary_file.get("evaluation")  # held-out tiles only (scene_outputs' own figures)
    pooled = summary_file.get("evaluation_iou") or {}
    model = next((v for k, v in pooled.items() if k != "baseline_otsu"), {})
    baseline = pooled.get("baseline_otsu", {})
    if evaluation:
        sections.append(evaluation_section(evaluation, classes, summary_file.get("evaluation_split", "test"), methods))
    elif any(f.get("iou") for f in segmented):
        warnings.append("no held-out tile in this scene: no evaluation (tiles trained on are never scored)")
    dates = scene_dates(prepared)
    versions = sorted({str(f.get("model_version")) for f in segmented if f.get("model_version")})
    t = composite.transform
    provenance = Section("provenance", "Provenance", [
        f"dataset {ds_id}, scene {scene}", f"dates {', '.join(dates) or 'undated'}",
        f"CRS {summary_file.get('crs') or composite.crs}",
        f"grid {composite.array.shape[2]} x {composite.array.shape[1]} px (width x height), pixel {abs(t.a):g} x {abs(t.e):g} "
        f"CRS units, upper-left corner ({t.c:.2f}, {t.f:.2f})",
        f"bands {', '.join(composite.band_names)}", f"segmentation method {', '.join(methods) or 'unknown'}",
        f"model version {', '.join(versions) or 'none (baseline)'}", f"code version {code_version()}",
        f"run id {run_id or 'not given'}"])
    sections.append(provenance)
    summary = {"areas_ha": dict(areas), "cloud_fraction": summary_file.get("cloud_fraction"),
               "nodata_fraction": summary_file.get("nodata_fraction"), "dates": len(dates),
               **({"iou": model, "baseline_iou": baseline} if model or baseline else {}),
               **({"held_out": {m: {"accuracy": r.get("accuracy"), "mean_iou": r.get("mean_iou")}
                                for m, r in {**evaluation["methods"], "majority_class": evaluation["majority_class"]}.items()
                                if r}} if evaluation else {})}
    return write_report(report_path(root, ds_id, scene), "scene.html.j2", f"Scene report {scene}", sections, warnings,
                        summary, dataset=ds_id, scene=scene)
