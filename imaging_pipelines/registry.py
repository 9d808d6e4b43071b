"""Names that catalog entries may refer to. Later stages register their recipes and models here."""

from __future__ import annotations

KNOWN_FORMATS = {"dicom", "nifti", "nrrd", "mha", "geotiff"}

# Preprocessing recipes (steps and parameters are defined by the preprocessing stage).
KNOWN_RECIPES = {"none", "brain_mr", "ct_default"}

# Segmentation models (trained by the segmentation stage) and classical baselines.
KNOWN_MODELS = {"none", "brain_lesion_dynunet", "ct_organ_unet", "otsu_baseline"}

# File-name endings of each medical format, lower case.
FORMAT_SUFFIXES = {
    "nifti": (".nii", ".nii.gz"),
    "nrrd": (".nrrd", ".nhdr"),
    "mha": (".mha", ".mhd"),
}
