"""DICOM TID 1500 measurement reports (Comprehensive 3D SR) for the segments of a DICOM SEG, with highdicom.

:func:`write_measurement_report` writes one ``Imaging Measurement Report`` whose Imaging Measurements hold,
per segment, a TID 1411 Volumetric ROI Measurements group that references the segment of the SEG (its SOP
instance and segment number) and the source series (Source Series for Segmentation), with:

* **Volume** (SCT 118565006) in mL: voxel count x voxel volume (``prod(spacing)`` mm^3 / 1000);
* **Voxel count** (private code ``99IMGPIPE voxel_count``, unit ``{voxels}``): voxels of the segment;
* **Mean / Minimum / Maximum** intensity (derivations SCT 373098007 / 255605001 / 56851009) of ``image``
  inside the segment: for CT the Attenuation Coefficient in Hounsfield units (UCUM ``[hnsf'U]``), for MR
  the MR signal intensity, otherwise the image intensity, both unitless (UCUM ``1``). Empty segments get
  volume and count 0 and no intensity.

Segment numbers follow :func:`imaging_pipelines.medical.segment.dicom_seg.write_dicom_seg`: 1..n in increasing
label value of ``segment_names``; the SEG's own segment labels are checked against them. Geometry: ``labels``
and ``image`` must share one grid (LPS mm, arrays ``[z, y, x]``). The report is de-identified like the SEG
(PS3.15 Basic Profile, :mod:`imaging_pipelines.medical.deid`), keeping the source and SEG UIDs it references,
and written atomically.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path

import numpy as np
import pydicom
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code
from pydicom.uid import generate_uid

from imaging_pipelines.core.storage import atomic_local_file
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.deid import DeidOptions, deidentify, reference_uids
from imaging_pipelines.medical.segment.dicom_seg import complete_type2

__all__ = ["segment_statistics", "write_measurement_report"]

VOXEL_COUNT = Code("voxel_count", "99IMGPIPE", "Voxel count")
IMAGE_INTENSITY = Code("image_intensity", "99IMGPIPE", "Image intensity")
MILLILITER = Code("mL", "UCUM", "milliliter")
VOXELS = Code("{voxels}", "UCUM", "voxels")
HOUNSFIELD = Code("[hnsf'U]", "UCUM", "Hounsfield unit")
NO_UNITS = Code("1", "UCUM", "no units")


def segment_statistics(labels: Volume, image: Volume, segment_names: Mapping[int, str]) -> list[dict]:
    """Per named label value in increasing order: ``{"number", "value", "name", "voxels", "volume_ml",
    "mean", "min", "max"}`` (intensities of ``image``, ``None`` for an empty segment)."""
    if not labels.same_geometry(image):
        raise ValueError("labels and image must lie on the same grid (shape, spacing, origin, direction)")
    array = np.asarray(labels.array)
    values = np.asarray(image.array, dtype=np.float64)
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    rows = []
    for number, value in enumerate(sorted(int(v) for v in segment_names), start=1):
        inside = array == value
        count = int(np.count_nonzero(inside))
        picked = values[inside]
        rows.append({"number": number, "value": value, "name": str(segment_names[value]), "voxels": count,
                     "volume_ml": count * voxel_ml,
                     "mean": float(picked.mean()) if count else None,
                     "min": float(picked.min()) if count else None,
                     "max": float(picked.max()) if count else None})
    return rows


def _intensity_concept(modality: str) -> tuple[Code, Code]:
    if modality == "CT":
        return codes.DCM.AttenuationCoefficient, HOUNSFIELD
    if modality == "MR":
        return codes.DCM.MRSignalIntensity, NO_UNITS
    return IMAGE_INTENSITY, NO_UNITS


def _measurements(row: dict, modality: str) -> list:
    import highdicom as hd

    items = [hd.sr.Measurement(name=codes.SCT.Volume, value=row["volume_ml"], unit=MILLILITER),
             hd.sr.Measurement(name=VOXEL_COUNT, value=row["voxels"], unit=VOXELS)]
    if row["voxels"]:
        name, unit = _intensity_concept(modality)
        for key, derivation in (("mean", codes.SCT.Mean), ("min", codes.SCT.Minimum), ("max", codes.SCT.Maximum)):
            items.append(hd.sr.Measurement(name=name, value=row[key], unit=unit, derivation=derivation))
    return items


def write_measurement_report(
    seg_file: Path,
    source_files: Sequence[str | Path],
    labels: Volume,
    image: Volume,
    out_path: Path,
    segment_names: Mapping[int, str],
    *,
    patient_pseudonym: str,
    algorithm_version: str,
    deid_options: DeidOptions | None = None,
) -> Path:
    """Write the TID 1500 report of ``labels``'s segments (module docstring) at ``out_path``; returns it.

    ``seg_file``: the DICOM SEG of ``labels`` (written by ``write_dicom_seg``); ``source_files``: the source
    series it references; ``image``: intensities on the labels' grid (HU for CT).
    """
    import highdicom as hd

    seg = pydicom.dcmread(str(seg_file), stop_before_pixels=True)
    if "SegmentSequence" not in seg:
        raise ValueError(f"{Path(seg_file).name}: not a DICOM SEG (no SegmentSequence)")
    if not source_files:
        raise ValueError("no source files given")
    sources = [complete_type2(pydicom.dcmread(str(f), stop_before_pixels=True)) for f in source_files]
    series = {str(s.SeriesInstanceUID) for s in sources}
    if len(series) != 1:
        raise ValueError(f"source files belong to {len(series)} series; pass the files of one series")
    rows = segment_statistics(labels, image, segment_names)
    seg_labels = {int(i.SegmentNumber): str(i.get("SegmentLabel", "")) for i in seg.SegmentSequence}
    for row in rows:
        if seg_labels.get(row["number"]) != row["name"][:64]:
            raise ValueError(f"{Path(seg_file).name}: segment {row['number']} is "
                             f"{seg_labels.get(row['number'])!r}, expected {row['name']!r}")
    modality = str(sources[0].get("Modality", "") or "")
    algorithm = hd.sr.AlgorithmIdentification(name="imaging_pipelines", version=str(algorithm_version)[:64])
    groups = [
        hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(uid=generate_uid(), identifier=f"segment {row['number']}"),
            referenced_segment=hd.sr.ReferencedSegment(
                sop_class_uid=str(seg.SOPClassUID), sop_instance_uid=str(seg.SOPInstanceUID),
                segment_number=row["number"],
                source_series=hd.sr.SourceSeriesForSegmentation(next(iter(series)))),
            finding_type=codes.SCT.Tissue if row["name"] != "lesion" else codes.SCT.Lesion,
            algorithm_id=algorithm,
            measurements=_measurements(row, modality),
        )
        for row in rows
    ]
    observer = hd.sr.ObservationContext(observer_device_context=hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=generate_uid(), name="imaging_pipelines")))
    report = hd.sr.MeasurementReport(observation_context=observer, procedure_reported=codes.SCT.ImagingProcedure,
                                     imaging_measurements=groups)
    sr = hd.sr.Comprehensive3DSR(
        evidence=[*sources, seg], content=report[0], series_instance_uid=generate_uid(), series_number=9002,
        sop_instance_uid=generate_uid(), instance_number=1, manufacturer="imaging_pipelines",
        is_complete=True, series_description="Measurement report",
    )
    options = deid_options or DeidOptions()
    keep = reference_uids([*sources, seg, sr])
    deidentify(sr, patient_pseudonym, replace(options, keep_uids=options.keep_uids | keep))
    out_path = Path(out_path)
    with atomic_local_file(out_path) as tmp:
        sr.save_as(tmp, enforce_file_format=True)
    return out_path
