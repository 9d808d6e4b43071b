"""Reports: PNG figures (:mod:`.figures`) and self-contained HTML pages (:mod:`.html`) per patient, scene
and cohort; the stage functions that build them live in ``imaging_pipelines.stages.report_*``."""

from imaging_pipelines.report.html import Figure, Link, ReportOutcome, Section, code_version, write_report

__all__ = ["Figure", "Link", "ReportOutcome", "Section", "code_version", "write_report"]
