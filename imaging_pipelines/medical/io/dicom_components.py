"""Which image component a DICOM image holds (magnitude, phase, real, imaginary, field map in Hz), per dcm2niix.

Images of different components are never stacked together; each becomes its own volume, named with dcm2niix's
suffixes ``_ph``, ``_real``, ``_imaginary`` and ``_fieldmaphz`` (magnitude: no suffix).

Rules (dcm2niix ``nii_dicom.cpp``):

* GE B0 field maps (internal pulse sequence name (0019,109E) ``B0map`` or pulse sequence name (0019,109C)
  ``3db0map``, with LocationsInAcquisition (0021,104F) = N slices): images with InstanceNumber <= N are the field
  map in Hz, the others the magnitude;
* GE image type (0043,102F): 1 phase, 2 real, 3 imaginary;
* ImageType / FrameType values ``P``/``PHASE``, ``R``/``REAL``, ``I``/``IMAGINARY``; ``B0`` with ``MAP``: field map;
* enhanced objects: ComplexImageComponent (0008,9208).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

GE_PULSE_SEQUENCE = 0x0019109C
GE_INTERNAL_PULSE_SEQUENCE = 0x0019109E
GE_LOCATIONS_IN_ACQUISITION = 0x0021104F
GE_IMAGE_TYPE = 0x0043102F
GE_USER_DATA_12 = 0x001910B3
GE_RTIA_TIMER = 0x0021105E
COMPONENT_TAGS = [GE_PULSE_SEQUENCE, GE_INTERNAL_PULSE_SEQUENCE, GE_LOCATIONS_IN_ACQUISITION, GE_IMAGE_TYPE,
                  GE_USER_DATA_12, GE_RTIA_TIMER]

SUFFIX = {"": "", "magnitude": "", "phase": "_ph", "real": "_real", "imaginary": "_imaginary", "fieldmap_hz": "_fieldmaphz"}


def _private(ds: Any, tag: int) -> Any:
    elem = ds.get(tag) if hasattr(ds, "get") else None
    if elem is None:
        return None
    value = getattr(elem, "value", elem)
    if isinstance(value, bytes):
        if len(value) in (2, 4):
            return int.from_bytes(value, "little", signed=True)
        return value.decode("ascii", "replace").strip("\x00 ")
    return value


def _int(value: Any) -> int | None:
    try:
        return int(float(value)) if value not in (None, "") else None
    except (TypeError, ValueError, OverflowError):
        return None


def from_image_type(image_type: Sequence[str], complex_component: str | None = None) -> str:
    """Component named by ImageType/FrameType values (also split at '_', e.g. Philips ``M_FFE``) or
    ComplexImageComponent; '' when none is named."""
    values = {part.strip().upper() for v in image_type for part in str(v).split("_")}
    cc = (complex_component or "").strip().upper()
    if "MAP" in values and values & {"B0", "FIELD"}:  # B0 / FIELD_MAP: a REAL image holding the field map in Hz
        return "fieldmap_hz"
    if cc in ("PHASE", "REAL", "IMAGINARY"):
        return cc.lower()
    if values & {"P", "PHASE"} or "PHASE MAP" in values:
        return "phase"
    if values & {"R", "REAL"}:
        return "real"
    if values & {"I", "IMAGINARY"}:
        return "imaginary"
    if values & {"M", "MAGNITUDE"} or cc == "MAGNITUDE":
        return "magnitude"
    return ""


def classic_component(ds: Any, image_type: Sequence[str]) -> str:
    """Component of a single-frame (classic) image, GE private tags first."""
    manufacturer = str(ds.get("Manufacturer", "") or "").upper()
    if manufacturer.startswith("GE"):
        seq = str(_private(ds, GE_INTERNAL_PULSE_SEQUENCE) or "").strip()
        pulse = str(_private(ds, GE_PULSE_SEQUENCE) or "").strip()
        n_loc = _int(_private(ds, GE_LOCATIONS_IN_ACQUISITION))
        n_images = _int(ds.get("ImagesInAcquisition"))
        instance = _int(ds.get("InstanceNumber"))
        if (seq == "B0map" or pulse == "3db0map") and n_loc and instance is not None and n_images != n_loc:
            return "fieldmap_hz" if instance <= n_loc else "magnitude"
        ge_type = _int(_private(ds, GE_IMAGE_TYPE))
        if ge_type in (0, 1, 2, 3):
            return ("magnitude", "phase", "real", "imaginary")[ge_type]
    return from_image_type(image_type)


def ge_pepolar(ds: Any) -> tuple[bool, bool]:
    """(image stored with reversed phase encoding, belongs to the reversed series) for GE ``epi_pepolar``.

    dcm2niix: user data 12 (0019,10B3) 1 = every volume reversed; 2 = odd TemporalPositionIdentifier reversed;
    3 = even (non-zero) ones reversed. Reversed images are stored upside down (rows flipped, geometry unchanged);
    in modes 2 and 3 they become a separate series (series number + 1000)."""
    if not str(ds.get("Manufacturer", "") or "").upper().startswith("GE"):
        return False, False
    if "epi_pepolar" not in str(_private(ds, GE_PULSE_SEQUENCE) or ""):
        return False, False
    mode = _int(_private(ds, GE_USER_DATA_12))
    volume = _int(ds.get("TemporalPositionIdentifier"))
    if mode == 1:
        return True, False
    if volume is not None and volume > 0 and ((mode == 2 and volume % 2 == 1) or (mode == 3 and volume % 2 == 0)):
        return True, True
    return False, False


def ge_slice_time(ds: Any) -> float | None:
    """GE RTIA timer (0021,105E): the image's acquisition time within the volume (s), used for SliceTiming."""
    if not str(ds.get("Manufacturer", "") or "").upper().startswith("GE"):
        return None
    value = _private(ds, GE_RTIA_TIMER)
    try:
        return float(value) if value not in (None, "") else None
    except (TypeError, ValueError):
        return None
