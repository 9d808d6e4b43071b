"""Deterministic mutations of image files: byte-level damage and format-aware header edits.

:func:`mutate_file` applies one to three mutations to one file of a reader kind, half of them header edits of
its format (:mod:`.header_edits`), the others byte damage (:mod:`.byte_mutations`) or a splice of another
seed; the same generator state gives the same result, so a campaign seed plus an input number identifies an
input. The names of both modules are re-exported here.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from imaging_pipelines.tools.fuzz.byte_mutations import (BYTE_MUTATORS, INTERESTING_FLOATS, INTERESTING_INTS, append_junk,
                                                   delete_chunk, duplicate_chunk, flip_bits, overwrite_bytes, splice,
                                                   truncate, write_int, zero_chunk)
from imaging_pipelines.tools.fuzz.header_edits import (DICOM_FIELD_VALUES, HOSTILE_TOKENS, NIFTI1_FIELDS, NIFTI2_FIELDS,
                                                 NIFTI_DATATYPES, NIFTI_DIM_VALUES, TIFF_GEO_TAGS, TIFF_SIZE_TAGS,
                                                 TRANSFER_SYNTAXES, TiffEntry, dicom_header_edit, dicom_raw_us_edit,
                                                 dicom_set_elements, dicom_transfer_syntax_edit, gunzip_or_none,
                                                 gzip_bytes, nifti_header_edit, nifti_layout, nifti_set_field,
                                                 text_header_edit, tiff_entries, tiff_set_tag, tiff_set_value,
                                                 tiff_tag_edit)

__all__ = ["BYTE_MUTATORS", "DICOM_FIELD_VALUES", "HOSTILE_TOKENS", "INTERESTING_FLOATS", "INTERESTING_INTS",
           "NIFTI1_FIELDS", "NIFTI2_FIELDS", "NIFTI_DATATYPES", "NIFTI_DIM_VALUES", "TIFF_GEO_TAGS",
           "TIFF_SIZE_TAGS", "TRANSFER_SYNTAXES", "TiffEntry", "append_junk", "delete_chunk", "dicom_header_edit",
           "dicom_raw_us_edit", "dicom_set_elements", "dicom_transfer_syntax_edit", "duplicate_chunk", "flip_bits",
           "gunzip_or_none", "gzip_bytes", "mutate_file", "nifti_header_edit", "nifti_layout", "nifti_set_field",
           "overwrite_bytes", "splice", "text_header_edit", "tiff_entries", "tiff_set_tag", "tiff_set_value",
           "tiff_tag_edit", "truncate", "write_int", "zero_chunk"]


# ------------------------------------------------------------------------------------------------ cases
def _byte_mutation(data: bytes, rng: random.Random, donors: Sequence[bytes]) -> tuple[bytes, str]:
    if donors and rng.random() < 0.1:
        return splice(data, rng.choice(donors), rng)
    return rng.choice(BYTE_MUTATORS)(data, rng)


def mutate_file(kind: str, name: str, data: bytes, rng: random.Random,
                donors: Sequence[bytes] = ()) -> tuple[str, bytes, str]:
    """One to three mutations of one file of reader ``kind``; returns (file name, bytes, description)."""
    steps: list[str] = []
    gz = kind == "nifti" and name.endswith(".gz")
    inner = gunzip_or_none(data) if gz else None
    if gz and inner is not None and rng.random() < 0.85:
        data, name = inner, name[:-3]  # mutate the uncompressed NIfTI, then (usually) compress it again
        recompress = rng.random() < 0.8
    else:
        recompress = False
    for _ in range(rng.choice((1, 1, 1, 2, 3))):
        edit = rng.random() < 0.5
        if kind == "nifti" and edit:
            data, what = nifti_header_edit(data, rng)
        elif kind == "dicom" and edit:
            data, what = rng.choices((dicom_header_edit, dicom_raw_us_edit, dicom_transfer_syntax_edit),
                                     weights=(6, 2, 1))[0](data, rng)
        elif kind == "geotiff" and edit:
            data, what = tiff_tag_edit(data, rng)
        elif kind == "nrrd_mha" and edit:
            data, what = text_header_edit(data, rng)
        else:
            data, what = _byte_mutation(data, rng, donors)
        steps.append(what)
    if recompress:
        data, name = gzip_bytes(data), name + ".gz"
    return name, data, "; ".join(steps)
