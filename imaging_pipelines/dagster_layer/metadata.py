"""Dagster metadata from stage results: tables, previews, paths. Plain wiring, no pixel arithmetic."""

from __future__ import annotations

from typing import Any

from dagster import MaterializeResult, MetadataValue, TableColumn, TableRecord, TableSchema

from imaging_pipelines.core.privacy import key_status
from imaging_pipelines.core.stage_result import StageResult
from imaging_pipelines.medical.ingest import PartitionIngestion
from imaging_pipelines.report.preview import preview_markdown, store_preview

SERIES_SCHEMA = TableSchema(
    columns=[
        TableColumn("image", "string"),
        TableColumn("modality", "string"),
        TableColumn("shape", "string", description="array shape (t,) z, y, x"),
        TableColumn("spacing_mm", "string", description="voxel spacing x, y, z in mm"),
        TableColumn("orientation", "string", description="RAS-style axis code of i, j, k"),
        TableColumn("warnings", "int"),
    ]
)


def materialization(metadata: dict | None = None, **kwargs: Any) -> MaterializeResult:
    """A ``MaterializeResult`` whose metadata also says which pseudonym key made its partition keys and
    pseudonyms (``pseudonym_key``: ``development (NOT for patient data)`` under the public key)."""
    return MaterializeResult(metadata={**(metadata or {}), "pseudonym_key": key_status()}, **kwargs)


def bullet_list(items: list[str]) -> MetadataValue:
    """Markdown bullets, or ``none``."""
    return MetadataValue.md("\n".join(f"- {n}" for n in items) or "none")


def preview_metadata(store_path: str) -> dict:
    """``{"preview": <markdown with an embedded PNG thumbnail>}`` of a stage store (empty when none)."""
    markdown = preview_markdown(store_preview(store_path))
    return {"preview": MetadataValue.md(markdown)} if markdown else {}


def ingestion_metadata(result: PartitionIngestion) -> dict:
    """Series table, first image's shape / spacing (mm) / orientation code, warnings, runtime (s: reading
    the files and writing the store) and store path."""
    rows = result.series_rows()
    first = next(iter(result.images.values()))
    return {
        "series_count": len(result.images),
        "series": MetadataValue.table([TableRecord(r) for r in rows], schema=SERIES_SCHEMA),
        "shape": MetadataValue.text("x".join(str(s) for s in first.array.shape)),
        "spacing_mm": MetadataValue.text(", ".join(f"{s:.4g}" for s in first.spacing)),
        "orientation": MetadataValue.text(first.orientation_code()),
        "warnings": bullet_list(result.warnings),
        "warning_count": len(result.warnings),
        "notes": bullet_list(result.notes),
        "runtime_s": round(result.runtime_s, 3),
        "storage_path": MetadataValue.path(result.store_path),
        **preview_metadata(result.store_path),
    }


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rows_table(rows: list[dict]) -> MetadataValue:
    """A Dagster table from plain row dicts: keys every row has become typed columns; the others are
    joined into a ``figures`` text column (``name=value, ...``)."""
    common = [k for k in (rows[0] if rows else {}) if all(k in r for r in rows)]
    columns = [TableColumn(k, "float" if isinstance(rows[0][k], float) else "int" if isinstance(rows[0][k], int)
                           else "string") for k in common]
    has_rest = any(set(r) - set(common) for r in rows)
    if has_rest:
        columns.append(TableColumn("figures", "string"))
    records = []
    for r in rows:
        values = {k: r[k] if isinstance(r[k], (int, float, str, bool)) else str(r[k]) for k in common}
        if has_rest:
            values["figures"] = ", ".join(f"{k}={_format(v)}" for k, v in r.items() if k not in common)
        records.append(TableRecord(values))
    return MetadataValue.table(records, schema=TableSchema(columns=columns))


def stage_metadata(result: StageResult) -> dict:
    """Images, quality table, notes, runtime (s), store path and preview of one stage result; the stage's
    own figures (``result.extra``) are added as values or JSON."""
    meta = {
        "images": len(result.images),
        "image_names": MetadataValue.text(", ".join(result.images) or "none"),
        "quality": rows_table(result.rows),
        "notes": bullet_list(result.notes),
        "runtime_s": round(result.runtime_s, 3),
        "storage_path": MetadataValue.path(result.store_path),
        **preview_metadata(result.store_path),
    }
    for name, value in result.extra.items():
        meta[name] = MetadataValue.json(value) if isinstance(value, (dict, list)) else value
    return meta


def report_metadata(outcome) -> dict:
    """Preview, path, sections, figure count, warnings and the summary figures of a written report."""
    meta = {"preview": MetadataValue.md(preview_markdown(outcome.preview_png, "report preview")),
            "report_path": MetadataValue.path(outcome.path), "sections": MetadataValue.text(", ".join(outcome.sections)),
            "figures": outcome.figures, "report_warnings": len(outcome.warnings)}
    for name, value in outcome.summary.items():
        if isinstance(value, (int, float, str, bool)) and value is not None:
            meta[name] = value
        elif isinstance(value, (dict, list)):
            meta[name] = MetadataValue.json(value)
    return meta
