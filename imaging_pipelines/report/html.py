"""Self-contained HTML reports: Jinja2 templates (autoescaped) with PNGs embedded as ``data:`` URIs, written
atomically, plus the code version for provenance.

A report is a list of :class:`Section` s (each rendered as an element whose ``id`` is the section id), every
table cell escaped; nothing is loaded from outside the file (no CSS, scripts or fonts).
"""

from __future__ import annotations

import base64
import datetime as _dt
import functools
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from upath import UPath

from imaging_pipelines.core.storage import as_upath, write_text_atomic

TEMPLATES = Path(__file__).parent / "templates"
REPORTS = "reports"


@dataclass
class Figure:
    """One embedded PNG with its caption."""

    png: bytes
    caption: str = ""


@dataclass(frozen=True)
class Link:
    """A table cell or section link: ``text`` pointing at a relative ``href``."""

    text: str
    href: str


@dataclass
class Section:
    """One report section: ``id`` (HTML element id), title, optional text lines, tables and figures.

    ``tables``: list of ``(caption, rows)`` with ``rows`` a list of dicts of plain values (columns = keys of
    the first row; a :class:`Link` value renders as a link); ``links``: further links below the text."""

    id: str
    title: str
    text: list[str] = field(default_factory=list)
    tables: list[tuple[str, list[dict[str, Any]]]] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    links: list[Link] = field(default_factory=list)


@dataclass
class ReportOutcome:
    """A written report: ``path`` of the HTML, a small PNG ``preview_png`` for asset metadata, the ids of the
    rendered ``sections``, ``warnings`` (problems met while building it), the number of ``figures`` and a
    ``summary`` of small plain values (volumes in mL, areas in ha, Dice, counts)."""

    path: str
    preview_png: bytes
    sections: list[str]
    warnings: list[str] = field(default_factory=list)
    figures: int = 0
    summary: dict[str, Any] = field(default_factory=dict)


def data_uri(png: bytes) -> str:
    """``data:image/png;base64,...`` for an ``<img src>``."""
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _cell(value: Any) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, (list, tuple)):
        return " × ".join(_cell(v) for v in value)
    return str(value)


@functools.lru_cache(maxsize=1)
def _environment():
    from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

    env = Environment(loader=FileSystemLoader(str(TEMPLATES)), autoescape=select_autoescape(["j2", "html"], default=True),
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters["data_uri"] = data_uri
    env.filters["cell"] = _cell
    env.tests["link"] = lambda value: isinstance(value, Link)
    return env


def render(template: str, title: str, sections: list[Section], **context: Any) -> str:
    """Render ``templates/<template>`` with the sections (HTML string)."""
    generated = _dt.datetime.now(_dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    return _environment().get_template(template).render(title=title, sections=sections, generated=generated, **context)


def report_path(root: UPath | str, dataset_id: str, name: str) -> UPath:
    """``<root>/<dataset>/reports/<name>.html``."""
    return as_upath(root) / dataset_id / REPORTS / f"{name}.html"


@functools.lru_cache(maxsize=1)
def code_version() -> str:
    """The package version, plus the git commit (``+g<sha>``) when the code runs from a git checkout."""
    import imaging_pipelines

    version = getattr(imaging_pipelines, "__version__", None)
    if version is None:
        try:
            from importlib.metadata import version as _version

            version = _version("imaging_pipelines")
        except Exception:  # noqa: BLE001 - not installed as a distribution
            version = "unknown"
    try:
        sha = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=Path(__file__).resolve().parents[2],
                             capture_output=True, text=True, timeout=5, check=True).stdout.strip()
    except Exception:  # noqa: BLE001 - no git, not a checkout: the version alone
        sha = ""
    return f"{version}+g{sha}" if sha else str(version)


def write_report(path: UPath, template: str, title: str, sections: list[Section], warnings: list[str],
                 summary: dict[str, Any], **context: Any) -> ReportOutcome:
    """Render and atomically write a report; the preview is a thumbnail of its first figure."""
    from imaging_pipelines.report.figures import preview_png

    if warnings:
        qc = next((s for s in sections if s.id == "qc"), None)
        if qc is not None:
            qc.text += [f"report: {w}" for w in warnings]
    written = write_text_atomic(path, render(template, title, sections, **context))
    figures = [f for s in sections for f in s.figures]
    return ReportOutcome(written, preview_png(figures[0].png) if figures else b"", [s.id for s in sections],
                         list(warnings), len(figures), summary)
