"""Images that may show identifying text in their pixels: quarantined unless the catalog allows them.

DICOM says so in three ways: BurnedInAnnotation (0028,0301) = YES, RecognizableVisualFeatures (0028,0302) =
YES, or the object is a secondary capture (SOP classes 1.2.840.10008.5.1.4.1.1.7 and .7.x: screenshots,
scanned documents, screen saves) or carries ``SCREEN SAVE`` in ImageType. Pixel text cannot be removed by
changing header attributes, so such a series is not ingested at all (a note names it) while the rest of the
patient carries on; ``inbox_checks.allow_burned_in_annotation: true`` in the catalog lets it through.
"""

from __future__ import annotations

SECONDARY_CAPTURE_PREFIX = "1.2.840.10008.5.1.4.1.1.7"
TAGS = ["BurnedInAnnotation", "RecognizableVisualFeatures", "SOPClassUID", "ImageType"]


def burned_in_reason(ds) -> str | None:
    """Why the pixels of the dataset ``ds`` (a pydicom Dataset, header only) may show identifying content,
    or None."""
    if str(ds.get("BurnedInAnnotation", "") or "").strip().upper() == "YES":
        return "BurnedInAnnotation is YES"
    if str(ds.get("RecognizableVisualFeatures", "") or "").strip().upper() == "YES":
        return "RecognizableVisualFeatures is YES"
    sop = str(ds.get("SOPClassUID", "") or "")
    if sop == SECONDARY_CAPTURE_PREFIX or sop.startswith(SECONDARY_CAPTURE_PREFIX + "."):
        return "a secondary capture (screenshot or scanned image)"
    image_type = ds.get("ImageType") or []
    values = [image_type] if isinstance(image_type, str) else list(image_type)
    if any("SCREEN SAVE" in str(v).upper() for v in values):
        return "a screen save (ImageType)"
    return None
