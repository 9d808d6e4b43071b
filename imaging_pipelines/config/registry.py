"""Names that catalog entries may refer to. Later stages register their recipes and models here."""

from __future__ import annotations

KNOWN_FORMATS = {"dicom", "nifti", "nrrd", "mha", "geotiff"}

# Preprocessing recipes are the files in data_catalog/recipes/ (imaging_pipelines.config.recipes);
# atlases the files in data_catalog/atlases/ (imaging_pipelines.config.atlases).

# Segmentation methods and baselines are listed in imaging_pipelines.config.segmentation.

# File-name endings of each medical format, lower case.
FORMAT_SUFFIXES = {
    "nifti": (".nii", ".nii.gz"),
    "nrrd": (".nrrd", ".nhdr"),
    "mha": (".mha", ".mhd"),
}
