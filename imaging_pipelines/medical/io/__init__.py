"""Readers and writers: DICOM, NIfTI/NRRD/MHA, OME-Zarr. No dagster import here."""
