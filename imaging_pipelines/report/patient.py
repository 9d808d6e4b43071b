"""Patient report: one self-contained HTML page per patient partition from whatever stage stores exist.

``<root>/<dataset>/reports/<partition>.html`` with sections (element ids) ``images`` (slice montages with the
segmentation overlaid), ``registration`` (checkerboard of target and registered image), ``bias-field``
(ingested vs preprocessed), ``qc`` (warnings and flags of every stage), ``volumes`` (mL per label and class),
``surfaces`` (an offscreen 3D render of the segmentation surfaces in world LPS mm with their areas and
enclosed volumes, when the catalog sets ``segmentation.meshes``), ``evaluation`` (Dice, IoU, HD95 mm, volume difference mL) and ``provenance``. A missing stage leaves its
section out. Only non-identifying values are shown: the partition key (a pseudonym), image names,
modality, shape, spacing and the pipeline's own settings.
"""

from __future__ import annotations

import json

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.medical.io.ome_zarr import read_labels, read_volume_store, store_attributes
from imaging_pipelines.core.storage import as_upath, store_exists
from imaging_pipelines.report import figures as fg
from imaging_pipelines.report.html import Figure, ReportOutcome, Section, code_version, report_path, write_report
from imaging_pipelines.core.asset_names import CLASSIFICATION
from imaging_pipelines.core.stage_result import INGESTED, PREPROCESSED, REGISTERED, stage_store
from imaging_pipelines.medical.stages.segmentation_data import EVALUATED, SEGMENTED
from imaging_pipelines.medical.register.atlas import load_atlas

SAFE_ATTRIBUTES = ("modality", "source_format", "series_number", "series_description", "body_part")  # never PHI


def _dataset_id(dataset: DatasetConfig) -> str:
    return str(getattr(dataset, "id", dataset))


def _classes(dataset: DatasetConfig) -> dict[str, int]:
    seg = getattr(dataset, "segmentation", None)
    return dict(getattr(seg, "classes", None) or {})


def _open(root, dataset_id: str, stage: str, partition: str) -> tuple[UPath, dict, dict]:
    """(store path, root attributes, images) of a stage store; empty dicts when it does not exist."""
    path = stage_store(root, dataset_id, stage, partition)
    if not store_exists(path):
        return path, {}, {}
    return path, store_attributes(path), read_volume_store(path)


def _spatial(volume) -> np.ndarray:
    return volume.array[0] if volume.is_timeseries else volume.array


def volume_ml(mask: np.ndarray, spacing) -> float:
    """Volume of the non-zero voxels of ``mask`` in mL (spacing in mm)."""
    return float(np.count_nonzero(mask) * np.prod(spacing) / 1000.0)


def label_volumes(labels: dict, classes: dict[str, int]) -> list[dict]:
    """One row per label image and class: voxels and volume in mL (classes: name -> value; else every value)."""
    rows = []
    for label_name, label in labels.items():
        values = classes or {f"label {int(v)}": int(v) for v in np.unique(label.array) if v != 0}
        for cls, value in values.items():
            mask = label.array == value
            rows.append({"label": label_name, "class": cls, "voxels": int(mask.sum()),
                         "volume_ml": round(volume_ml(mask, label.spacing), 3)})
    return rows


def _registration_target(attrs: dict, aligned, preprocessed: dict, moving: str):
    """The fixed image the ``aligned`` image was resampled onto, when it can be found (atlas or first scan)."""
    if attrs.get("target") == "atlas" and attrs.get("atlas"):
        from imaging_pipelines.config.atlases import available_atlases

        atlas = available_atlases().get(attrs["atlas"])
        fixed = load_atlas(atlas)[0] if atlas is not None else None
        return fixed if fixed is not None and fixed.array.shape == aligned.array.shape else None
    return next((v for n, v in preprocessed.items() if n != moving and v.array.shape == aligned.array.shape), None)


def _ncc(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(np.float64).ravel(), b.astype(np.float64).ravel()
    a, b = a - a.mean(), b - b.mean()
    denominator = np.sqrt((a * a).sum() * (b * b).sum())
    return float((a * b).sum() / denominator) if denominator > 0 else float("nan")


def surfaces_section(seg_path, segmented: dict, names: dict[int, str], summary: dict, warnings: list[str]) -> Section:
    """Section ``surfaces``: an offscreen 3D render of each image's segmentation surfaces (world LPS mm) and
    their surface areas (mm^2) and enclosed volumes (mL), contoured on the segmented grid."""
    from imaging_pipelines.report.surface_view import render_surfaces, surface_meshes, surface_rows

    section = Section("surfaces", "3D surfaces", ["marching-cubes surfaces of the segmentation in world LPS mm, "
                                                  "seen from the patient's anterior-right, above"])
    rows = []
    for name in segmented:
        labels = read_labels(seg_path, name).get("segmentation")
        if labels is None or not labels.array.any():
            section.text.append(f"{name}: empty segmentation, no surface")
            continue
        try:
            meshes = surface_meshes(labels)
        except ImportError as exc:  # trimesh is in the segment-export extra
            warnings.append(f"3D surfaces not drawn: {exc}")
            return section
        section.figures.append(Figure(render_surfaces(meshes, names, title=name), f"{name}: segmentation surfaces"))
        rows += [{"image": name, **r} for r in surface_rows(meshes, names)]
    section.tables.append(("surface area (mm^2) and enclosed volume (mL) per label", rows))
    summary["surfaces"] = len(rows)
    return section


def report_patient(dataset: DatasetConfig, partition: str, root: UPath | str, run_id: str | None = None) -> ReportOutcome:
    """Build and atomically write the patient report from the partition's stage stores."""
    ds_id, classes = _dataset_id(dataset), _classes(dataset)
    names = {v: k for k, v in classes.items()}
    warnings: list[str] = []
    _, in_attrs, ingested = _open(root, ds_id, INGESTED, partition)
    if not ingested:
        raise FileNotFoundError(f"{stage_store(root, ds_id, INGESTED, partition)}: no ingested store for this partition")
    pre_path, pre_attrs, preprocessed = _open(root, ds_id, PREPROCESSED, partition)
    reg_path, reg_attrs, registered = _open(root, ds_id, REGISTERED, partition)
    seg_path, seg_attrs, segmented = _open(root, ds_id, SEGMENTED, partition)
    sections: list[Section] = []
    summary: dict = {"images": len(ingested)}

    images = Section("images", "Images")
    for name, volume in ingested.items():
        shown, labels, where = volume, None, "ingested"
        if name in segmented:
            shown, labels, where = segmented[name], read_labels(seg_path, name).get("segmentation"), "segmented"
        elif name in preprocessed:
            shown, where = preprocessed[name], "preprocessed"
        overlay = labels.array if labels is not None else None
        images.figures.append(Figure(fg.slice_montage(_spatial(shown), shown.spacing, overlay, n_slices=1,
                                                      label_names=names, title=name),
                                     f"{name} ({where} grid){' with the segmentation' if overlay is not None else ''}"))
    sections.append(images)

    if registered:
        section = Section("registration", "Registration",
                          [f"target {reg_attrs.get('target')}, atlas {reg_attrs.get('atlas')}, method {reg_attrs.get('method')}"])
        for name in [n for n in registered if f"{n}_aligned" in registered]:
            aligned = registered[f"{name}_aligned"]
            try:
                fixed = _registration_target(reg_attrs, aligned, preprocessed, name)
            except Exception as exc:  # noqa: BLE001 - an atlas file gone missing must not stop the report
                warnings.append(f"{name}: registration target not readable ({type(exc).__name__})")
                fixed = None
            if fixed is None:
                section.text.append(f"{name}: target image not available; no checkerboard")
                continue
            ncc = _ncc(_spatial(fixed), _spatial(aligned))
            section.figures.append(Figure(fg.checkerboard(_spatial(fixed), _spatial(aligned), spacing=aligned.spacing,
                                                          title=f"{name}: target / registered"),
                                          f"{name}: checkerboard of target and registered image (NCC {ncc:.3f})"))
            summary.setdefault("registration_ncc", {})[name] = round(ncc, 4)
        sections.append(section)

    if preprocessed:
        section = Section("bias-field", "Bias field and preprocessing",
                          [f"recipe {pre_attrs.get('recipe')}: the store keeps no bias field; ingested and "
                           "preprocessed slices are shown instead"])
        for name, after in preprocessed.items():
            before = ingested.get(name)
            if before is None:
                continue
            section.figures.append(Figure(fg.before_after(_spatial(before), _spatial(after), f"{name}: ingested / preprocessed",
                                                          before.spacing, after.spacing),
                                          f"{name}: middle axial slice before and after the recipe"))
            foreground = read_labels(pre_path, name).get("foreground")
            if foreground is not None:
                section.text.append(f"{name}: foreground {volume_ml(foreground.array, foreground.spacing):.1f} mL")
        sections.append(section)

    qc = Section("qc", "Quality control")
    flags = [{"stage": stage, "image": n, "warning": w}
             for stage, vols in ((INGESTED, ingested), (PREPROCESSED, preprocessed), (REGISTERED, registered), (SEGMENTED, segmented))
             for n, v in vols.items() for w in v.warnings]
    flags += [{"stage": stage, "image": "", "warning": str(w)}
              for stage, attrs in ((INGESTED, in_attrs), (PREPROCESSED, pre_attrs), (REGISTERED, reg_attrs), (SEGMENTED, seg_attrs))
              for key in ("warnings", "notes") for w in attrs.get(key, []) or []]
    for name in segmented:
        labels = read_labels(seg_path, name)
        seg, ref = labels.get("segmentation"), labels.get("reference")
        if seg is not None and not seg.array.any():
            flags.append({"stage": SEGMENTED, "image": name, "warning": "empty segmentation"
                          + (" where the reference is not empty" if ref is not None and ref.array.any() else "")})
    for name, volume in {**ingested, **preprocessed}.items():
        if np.issubdtype(volume.array.dtype, np.floating) and not np.isfinite(volume.array).all():
            flags.append({"stage": "", "image": name, "warning": "non-finite voxels"})
    qc.tables.append(("warnings and flags", flags))
    qc.text.append(f"{len(flags)} warning(s) or flag(s)" if flags else "no warnings")
    summary["qc_warnings"] = len(flags)
    sections.append(qc)

    if segmented:
        section = Section("volumes", "Volumes", [f"segmentation method {seg_attrs.get('method')}"])
        rows = [{"image": n, **r} for n in segmented for r in label_volumes(read_labels(seg_path, n), classes)]
        section.tables.append(("volume per label image and class (mL)", rows))
        totals: dict[str, float] = {}
        for r in rows:
            if r["label"] == "segmentation":
                totals[r["class"]] = round(totals.get(r["class"], 0.0) + r["volume_ml"], 3)
        summary["volumes_ml"] = totals
        sections.append(section)

    if segmented and getattr(getattr(dataset, "segmentation", None), "meshes", False):
        sections.append(surfaces_section(seg_path, segmented, names, summary, warnings))

    evaluation = as_upath(root) / ds_id / EVALUATED / f"{partition}.json"
    if evaluation.exists():
        rows = json.loads(evaluation.read_text())
        section = Section("evaluation", "Evaluation against the reference",
                          ["Dice and IoU in [0, 1], HD95 in mm, volumes in mL (prediction - reference)"])
        section.tables.append(("metrics per image, method and class", rows))
        if rows:
            dice = {f"{r['image']} / {r['class']}": {} for r in rows}
            for r in rows:
                dice[f"{r['image']} / {r['class']}"][r["method"]] = r["dice"]
            section.figures.append(Figure(fg.bar_plot(dice, "Dice per image and method", "Dice"), "Dice per image and method"))
            methods = sorted({r["method"] for r in rows})
            summary["dice"] = {m: round(float(np.mean([r["dice"] for r in rows if r["method"] == m and r["dice"] is not None]
                                                      or [np.nan])), 4) for m in methods}
        sections.append(section)

    classified = as_upath(root) / ds_id / CLASSIFICATION / f"{partition}.json"
    if classified.exists():  # the image-level classifier (catalog `classification:`)
        record = json.loads(classified.read_text())
        section = Section("classification", "Classification", [
            f"predicted {record['predicted']}, reference {record.get('reference') or 'none'} ({record['split']} split), "
            f"classifier {record.get('model_version')}"], tables=[("class probabilities", [record["probabilities"]])])
        overlay = classified.with_name(f"{partition}_saliency.png")
        if overlay.exists():
            section.figures.append(Figure(overlay.read_bytes(), "the image and its Grad-CAM saliency for the predicted class"))
        summary["predicted_class"] = record["predicted"]
        sections.append(section)

    provenance = Section("provenance", "Provenance", [
        f"dataset {ds_id}, partition {partition} (pseudonym)", f"code version {code_version()}",
        f"model version {seg_attrs.get('model_version') or 'none (classical or no segmentation)'}",
        f"run id {run_id or 'not given'}"])
    provenance.tables.append(("images", [
        {"image": n, **{k: v.attributes.get(k) for k in SAFE_ATTRIBUTES}, "shape (z, y, x)": list(v.array.shape),
         "spacing (x, y, z) mm": [round(float(s), 4) for s in v.spacing], "orientation": v.orientation_code()}
        for n, v in ingested.items()]))
    stages = [(s, a) for s, a in ((INGESTED, in_attrs), (PREPROCESSED, pre_attrs), (REGISTERED, reg_attrs), (SEGMENTED, seg_attrs)) if a]
    provenance.tables.append(("stages", [{"stage": s, **{k: a.get(k) for k in ("recipe", "target", "atlas", "method", "model_version")}}
                                         for s, a in stages]))
    sections.append(provenance)
    summary["sections"] = len(sections)
    return write_report(report_path(root, ds_id, partition), "patient.html.j2", f"Patient report {partition}", sections,
                        warnings, summary, dataset=ds_id, partition=partition)
