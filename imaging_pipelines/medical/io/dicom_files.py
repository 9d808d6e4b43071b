"""Reading DICOM files: which elements are parsed (per file and once per stack), size-capped reads, identity.

Only the elements the reader uses are parsed; the per-stack details (BIDS sidecar, radiograph presentation,
Siemens protocol values) are read once from each stack's first file. Uncompressed little-endian files are
scanned without pydicom (:mod:`imaging_pipelines.medical.io.dicom_raw`, same values); every other file, and any
file that scan declines, is parsed by pydicom (``specific_tags``), imported only then.
"""

from __future__ import annotations

import io
import os
import re
from typing import Any

from . import dicom_raw
from .dicom_components import COMPONENT_TAGS
from .dicom_diffusion import DIFFUSION_TAGS
from .dicom_mosaic import UIH_IMAGES_IN_GRID, UIH_VFRAME_SEQUENCE
from .dicom_radiograph import PLANAR_KEYWORDS
from .dicom_raw_tags import KEYWORD_TAGS
from .dicom_sidecar import SIDECAR_KEYWORDS, SIEMENS_BANDWIDTH_PER_PIXEL_PE

_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)+$")


class NotDicom(Exception):
    """The file is not DICOM (skipped)."""


# Top-level elements the reader uses (parsing only these is ~35% faster than a full parse).
READ_TAGS = [
    "SOPClassUID", "StudyInstanceUID", "SeriesInstanceUID", "PatientID", "Modality", "SeriesNumber",
    "SeriesDescription", "Manufacturer", "ManufacturerModelName", "MagneticFieldStrength", "RepetitionTime",
    "EchoTime", "FlipAngle", "SliceThickness", "SpacingBetweenSlices", "ImageType", "BodyPartExamined",
    "AcquisitionNumber", "AcquisitionTime", "InstanceNumber", "TemporalPositionIdentifier", "EchoNumbers",
    "ImagePositionPatient", "ImageOrientationPatient", "PixelSpacing", "ImagerPixelSpacing", "RescaleSlope",
    "RescaleIntercept", "NumberOfFrames", "SharedFunctionalGroupsSequence", "PerFrameFunctionalGroupsSequence",
    "Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "PlanarConfiguration", "BitsAllocated",
    "BitsStored", "HighBit", "PixelRepresentation", "ExtendedOffsetTable", "ExtendedOffsetTableLengths",
    "PixelData", "FloatPixelData", "DoubleFloatPixelData",
    # Siemens: CSA header private blocks and NumberOfImagesInMosaic
    0x00190010, 0x0019100A, 0x00290010, 0x00290011, 0x00290012, 0x00291010, 0x00291020, 0x00291110,
    0x00291120, 0x00291210, 0x00291220,
    # Philips private scale slope (precise floating-point values); GE image components / field maps
    0x2005100E, "ImagesInAcquisition", *COMPONENT_TAGS, UIH_IMAGES_IN_GRID, UIH_VFRAME_SEQUENCE,
    # planar images (radiographs): spacing calibration and presentation
    "ImagerPixelSpacing", *DIFFUSION_TAGS,
]

# Read once per stack, from its first file (BIDS sidecar, radiograph presentation): see read_details.
DETAIL_TAGS = [
    "Manufacturer", "ManufacturerModelName", "ImageType", "PhotometricInterpretation", "VOILUTSequence",
    *PLANAR_KEYWORDS, *SIDECAR_KEYWORDS, SIEMENS_BANDWIDTH_PER_PIXEL_PE, 0x00290010, 0x00291010,
]



def _tag_set(tags: list) -> frozenset[int]:
    return frozenset(KEYWORD_TAGS[t][0] if isinstance(t, str) else int(t) for t in tags)


READ_TAG_SET = _tag_set(READ_TAGS)
DETAIL_TAG_SET = _tag_set(DETAIL_TAGS)


class SizeCappedFile:
    """A binary file whose ``read(n)`` never requests more than the bytes left in it.

    A corrupt element length (up to 4 GiB) would otherwise make the read allocate that many bytes up front.
    """

    def __init__(self, fp):
        self._fp = fp
        self._size = os.fstat(fp.fileno()).st_size

    def read(self, n: int | None = -1) -> bytes:
        if n is None or n < 0:
            return self._fp.read()
        return self._fp.read(max(0, min(n, self._size - self._fp.tell())))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._fp, name)

    def __enter__(self) -> SizeCappedFile:
        return self

    def __exit__(self, *exc) -> None:
        self._fp.close()


def _open_capped(path: str) -> SizeCappedFile:
    return SizeCappedFile(open(path, "rb"))


SMALL_FILE_BYTES = 16 << 20  # files up to this size are read into memory first: pydicom's many small reads are
# then served from a buffer (no file wrapper call each); a buffer never returns more than the file holds


def read_file(path: str) -> Any:
    """Parse a file's needed elements and pixel bytes in one read; raises NotDicom or other exceptions."""
    with _open_capped(path) as capped:
        stat = os.fstat(capped.fileno())
        small = stat.st_size <= SMALL_FILE_BYTES
        if small:
            buf = capped.read()
            raw = dicom_raw.parse(buf, READ_TAG_SET)
            if raw is not None:
                raw.filename = path
                raw.file_stamp = (stat.st_size, stat.st_mtime_ns)  # to see a change before pixels are read again
                return raw
        fp = io.BytesIO(buf) if small else capped
        head = fp.read(132)
        fp.seek(0)
        if len(head) == 132 and head[128:132] == b"DICM":
            import pydicom

            return pydicom.dcmread(fp, specific_tags=READ_TAGS)
        if not _may_start_dataset(head):
            raise NotDicom()
        import pydicom

        try:
            ds = pydicom.dcmread(fp, force=True, specific_tags=READ_TAGS)
            sop = str(ds.get("SOPClassUID", "") or "")
        except Exception as exc:
            raise NotDicom() from exc
        if not _UID_RE.match(sop):
            raise NotDicom()
        return ds


def _may_start_dataset(head: bytes) -> bool:
    """Whether a file without the DICM preamble may start a dataset holding a SOPClassUID (0008,0016): its first
    tag (elements come in ascending order) must then be in group 0000-0008, little or big endian."""
    if len(head) < 8:
        return False
    return head[1] == 0 and head[0] <= 8 or head[0] == 0 and head[1] <= 8


def read_details(path: str) -> Any:
    """The per-stack detail elements (:data:`DETAIL_TAGS`) of one file, or None when it cannot be read again."""
    try:
        with _open_capped(path) as fp:
            if os.fstat(fp.fileno()).st_size <= SMALL_FILE_BYTES:
                raw = dicom_raw.parse(fp.read(), DETAIL_TAG_SET)
                if raw is not None:
                    return raw
                fp.seek(0)
            import pydicom

            return pydicom.dcmread(fp, force=True, stop_before_pixels=True, specific_tags=DETAIL_TAGS)
    except Exception:
        return None


def convert_elements(ds) -> None:
    """Decode every parsed top-level element now (pydicom decodes lazily), so a malformed value raises here."""
    for _ in ds:
        pass
    meta = getattr(ds, "file_meta", None)
    if meta is not None:
        for _ in meta:
            pass


def read_identity(path: str) -> tuple[str, str] | None:
    """(PatientID, SeriesInstanceUID) from one header-only read (raw: PHI); None if the file is not DICOM."""
    import pydicom

    try:
        with _open_capped(path) as fp:
            head = fp.read(132)
            fp.seek(0)
            force = not (len(head) == 132 and head[128:132] == b"DICM")
            ds = pydicom.dcmread(fp, force=force, stop_before_pixels=True,
                                 specific_tags=["PatientID", "SOPClassUID", "SeriesInstanceUID"])
    except Exception:  # InvalidDicomError, OSError and pydicom's other errors on a broken file
        return None
    if force and not _UID_RE.match(str(ds.get("SOPClassUID", "") or "")):
        return None
    return str(ds.get("PatientID", "") or ""), str(ds.get("SeriesInstanceUID", "") or "")


def is_dicom_file(path: str) -> bool:
    """DICM magic at offset 128, or (no preamble) a parseable dataset with a valid SOPClassUID."""
    try:
        with _open_capped(path) as fp:
            head = fp.read(132)
            if len(head) == 132 and head[128:132] == b"DICM":
                return True
            fp.seek(0)
            import pydicom

            ds = pydicom.dcmread(fp, force=True, stop_before_pixels=True, specific_tags=["SOPClassUID"])
    except Exception:
        return False
    return bool(_UID_RE.match(str(ds.get("SOPClassUID", "") or "")))
