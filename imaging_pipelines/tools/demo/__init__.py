"""Synthetic demo data: phantoms with ground truth, a DICOM series writer, and a demo cohort generator."""

from imaging_pipelines.tools.demo.cohort import CohortManifest, PatientRecord, SeriesRecord, generate_demo_cohort
from imaging_pipelines.tools.demo.dicom_writer import PatientIdentity, write_dicom_series
from imaging_pipelines.tools.demo.phantom import brain_like_phantom, centered_origin, ct_like_phantom

__all__ = [
    "CohortManifest",
    "PatientIdentity",
    "PatientRecord",
    "SeriesRecord",
    "brain_like_phantom",
    "centered_origin",
    "ct_like_phantom",
    "generate_demo_cohort",
    "write_dicom_series",
]
