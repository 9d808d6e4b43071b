"""Fuzzing of the project's image readers with mutated real and generated files.

* :mod:`.seeds`: the seed corpus (small real files from the shared data folder, files written by the
  project's own writers, nibabel and rasterio);
* :mod:`.mutations`: deterministic mutations (byte flips, truncation, splices, header field edits);
* :mod:`.targets`: one call of the DICOM, NIfTI or GeoTIFF reader per input and its outcome;
* :mod:`.harness`: worker subprocesses under a memory limit, with a per-input timeout, that report
  crashes (the worker dies) and hangs (no answer in time) as findings.

``bench/fuzz_readers.py`` is the command line; ``tests/test_fuzz_readers.py`` runs a short campaign.
"""
