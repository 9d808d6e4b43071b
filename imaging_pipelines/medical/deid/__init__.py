"""De-identification of the DICOM objects the project writes: DICOM PS3.15 Annex E, Basic Application Level
Confidentiality Profile, with its options, as data (``basic_profile.csv``: Table E.1-1).

* :func:`deidentify` (:mod:`.apply`) - apply the profile to a dataset in place; identity := pseudonym.
* :func:`profile_violations` (:mod:`.check`) - what in a dataset the table does not allow (the check after
  every write).
* :class:`DeidOptions` (:mod:`.table`) - the options; :func:`clean_descriptor` (:mod:`.descriptors`) - Clean
  Descriptors' whitelist of imaging terms, also for names made from descriptors.

No dagster import here.
"""

from imaging_pipelines.medical.deid.apply import deidentify, hashed_uid, reference_uids
from imaging_pipelines.medical.deid.check import ProfileViolationError, profile_violations
from imaging_pipelines.medical.deid.descriptors import clean_descriptor
from imaging_pipelines.medical.deid.table import DeidOptions, profile_table

__all__ = ["DeidOptions", "ProfileViolationError", "clean_descriptor", "deidentify", "hashed_uid", "profile_table", "profile_violations",
           "reference_uids"]
