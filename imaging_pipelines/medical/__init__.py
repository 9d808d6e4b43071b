"""Medical imaging: readers and writers (DICOM, NIfTI/NRRD/MHA, OME-Zarr), preprocessing, registration, segmentation and the per-patient stages. No dagster import here."""
