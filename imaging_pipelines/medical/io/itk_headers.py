"""Checks of MetaImage (``.mha``/``.mhd``) and NRRD (``.nrrd``/``.nhdr``) headers before SimpleITK parses them.

* Data files: a header may only name data files beside it. A detached header names the file(s) that hold its
  voxels (``ElementDataFile = x.raw``, ``data file: x.raw``, ``LIST`` of names, or a printf pattern such as
  ``slice%03d.raw 1 10 1``); a hostile one could otherwise make the pipeline read any file of the machine
  (``/etc/...``, ``/dev/zero``) as voxels.
* MetaImage headers must also pass :func:`~imaging_pipelines.medical.io.metaimage_checks.metaimage_problem` (MetaIO
  crashes, hangs or over-allocates on some hostile headers).

Only the first :data:`HEADER_BYTES` of the file are read here.
"""

from __future__ import annotations

import os
import re
from os import PathLike
from pathlib import Path

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.metaimage_checks import metaimage_problem

HEADER_BYTES = 64 * 1024
_MHD_FIELD = re.compile(r"^\s*ElementDataFile\s*=\s*(.*?)\s*$", re.IGNORECASE)
_NRRD_FIELD = re.compile(r"^\s*data ?file\s*:\s*(.*?)\s*$", re.IGNORECASE)


def _referenced_names(lines: list[str], field: re.Pattern, stop_at_blank: bool) -> list[str]:
    for n, line in enumerate(lines):
        if stop_at_blank and not line.strip():
            return []  # end of a NRRD header: the voxels follow
        match = field.match(line)
        if not match:
            continue
        value = match.group(1)
        if value.upper() == "LOCAL":
            return []  # voxels follow the header in the same file
        if value.upper().startswith("LIST"):
            return [ln.strip() for ln in lines[n + 1:] if ln.strip()]
        return [value.split()[0]] if value.split() else []  # a name, or a pattern followed by min max step
    return []


def check_itk_header(path: str | PathLike) -> None:
    """ImagingInputError for a MetaImage/NRRD header that names data files outside its folder, or a MetaImage
    that MetaIO would not survive (see the module docstring)."""
    name = str(path).lower()
    if not name.endswith((".mhd", ".mha", ".nhdr", ".nrrd")):
        return
    with open(path, "rb") as fh:
        raw = fh.read(HEADER_BYTES)
    if name.endswith((".mhd", ".mha")):
        problem = metaimage_problem(path, raw)
        if problem:
            raise ImagingInputError(path, problem)
    _check_data_files(path, raw.decode("latin-1").splitlines())


def _check_data_files(path: str | PathLike, lines: list[str]) -> None:
    """ImagingInputError unless every data file a MetaImage / NRRD header names lies in the header's folder."""
    name = str(path).lower()
    nrrd = name.endswith((".nhdr", ".nrrd"))
    refs = _referenced_names(lines, _NRRD_FIELD if nrrd else _MHD_FIELD, stop_at_blank=nrrd)
    folder = Path(path).resolve().parent
    for ref in refs:
        target = (folder / ref).resolve() if not os.path.isabs(ref) else Path(ref).resolve()
        if target.parent != folder and folder not in target.parents:
            raise ImagingInputError(path, "header names a data file outside its own folder; refused")
        if "%" not in ref and target.exists() and not target.is_file():
            raise ImagingInputError(path, "header names a data file that is not a regular file; refused")
