"""Synthetic chest-radiograph-like 2D images with a known class signal (for classifier tests and the demo).

Each image is ``(y, x)`` float32, bright = dense (as displayed, MONOCHROME2), row 0 at the top, the
patient's right on the left of the image (a PA view as usually displayed). Anatomy, all randomised per
image: a soft-tissue torso on air, two dark lung fields with curved ribs and vessel texture, the spine and
mediastinum, the heart overlapping the left lung, the diaphragm domes. The positive class ("opacity")
adds a consolidation: a smooth bright blob inside one lung field, of random size, place and strength; its
``mask`` (where the blob reaches a quarter of its peak, inside the lung) is the planted signal. Both
classes then get a random exposure (gain, gamma, a gradient), blur and noise, so intensity histograms alone
tell little. Seeded: same arguments, same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import ndimage

from imaging_pipelines.core.storage import atomic_file, write_text_atomic

CLASSES = {"normal": 0, "opacity": 1}


@dataclass(frozen=True)
class SyntheticRadiographs:
    images: np.ndarray  # (n, y, x) float32
    labels: np.ndarray  # (n,) int64 class values (0 normal, 1 opacity)
    masks: np.ndarray  # (n, y, x) bool planted opacity (all False for normal images)


def _soft(inside: np.ndarray, width: float) -> np.ndarray:
    """A soft step from a signed 'inside' field (> 0 inside), edge width in the field's units."""
    return 1.0 / (1.0 + np.exp(np.clip(-inside / width, -60, 60)))


def _ellipse(u, v, cu, cv, au, av) -> np.ndarray:
    """Signed inside-ness of an ellipse (1 at the centre, 0 on the border, negative outside)."""
    return 1.0 - ((u - cu) / au) ** 2 - ((v - cv) / av) ** 2


def radiograph(rng: np.random.Generator, size: int = 64, positive: bool = False) -> tuple[np.ndarray, np.ndarray]:
    """One synthetic radiograph ``(size, size)`` and its planted-opacity mask (see the module docstring)."""
    v, u = np.mgrid[-1:1:size * 1j, -1:1:size * 1j].astype(np.float32)  # v down, u to the image's right
    j = lambda s: rng.uniform(-s, s)  # noqa: E731 (small jitter)
    torso = _soft(_ellipse(u, v, j(0.04), 0.1 + j(0.04), 0.86 + j(0.06), 1.05 + j(0.05)), 0.05)
    image = 0.42 * torso
    lungs = np.zeros_like(u)
    dome = 0.55 + j(0.06) + 0.12 * u ** 2
    for side in (-1, 1):
        lung = _soft(_ellipse(u, v, side * (0.4 + j(0.04)), -0.08 + j(0.05), 0.27 + j(0.04), 0.62 + j(0.06)), 0.06)
        lungs = np.maximum(lungs, lung * _soft(dome + (0.04 if side > 0 else 0) - v, 0.03))
    image -= 0.28 * lungs
    ribs = 0.5 + 0.5 * np.sin(2 * np.pi * (v * (5.5 + j(0.6)) + 0.35 * u ** 2 + rng.uniform(0, 1)))
    vessels = ndimage.gaussian_filter(rng.standard_normal((size, size)), size / 40).astype(np.float32)
    image += lungs * (0.05 * ribs ** 3 + 0.25 * vessels / (np.abs(vessels).max() + 1e-6) * 0.12)
    image += 0.22 * _soft(0.11 + j(0.02) - np.abs(u - j(0.02)), 0.02) * torso  # spine and mediastinum
    image += 0.2 * _soft(_ellipse(u, v, 0.14 + j(0.05), 0.32 + j(0.05), 0.26 + j(0.04), 0.22 + j(0.03)), 0.08)
    mask = np.zeros((size, size), bool)
    if positive:
        inside = np.argwhere(lungs > 0.8)
        cy, cx = inside[int(rng.integers(len(inside)))]
        sigma = size * rng.uniform(0.08, 0.11)
        yy, xx = np.mgrid[0:size, 0:size]
        blob = np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / (2 * sigma ** 2)).astype(np.float32) * lungs
        image += rng.uniform(0.18, 0.3) * blob
        mask = (blob >= 0.25) & (lungs > 0.5)
    # acquisition: exposure gradient, gain, gamma, blur, noise
    image = np.clip(image + 0.05, 0, None) * (1 + 0.15 * (u * rng.uniform(-1, 1) + v * rng.uniform(-1, 1)))
    image = (image / image.max()) ** rng.uniform(0.7, 1.4) * rng.uniform(0.6, 1.4)
    image = ndimage.gaussian_filter(image, rng.uniform(0.3, 1.0) * size / 128)
    image = image + rng.normal(0, rng.uniform(0.01, 0.03), image.shape)
    return image.astype(np.float32), mask


def synthetic_radiographs(n: int, size: int = 64, seed: int = 0, positive_fraction: float = 0.5) -> SyntheticRadiographs:
    """``n`` images, each positive with probability ``positive_fraction`` (seeded by ``seed``)."""
    rng = np.random.default_rng([seed, 17])
    labels = (rng.random(n) < positive_fraction).astype(np.int64)
    pairs = [radiograph(np.random.default_rng([seed, 17, i]), size, bool(y)) for i, y in enumerate(labels)]
    return SyntheticRadiographs(np.stack([p[0] for p in pairs]), labels, np.stack([p[1] for p in pairs]))


DX_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image Storage - For Presentation


def write_radiograph_inbox(inbox: Path, labels_csv: Path, n: int, size: int = 64, seed: int = 0,
                           pixel_mm: float = 0.4) -> SyntheticRadiographs:
    """Write ``n`` synthetic radiographs as DX DICOM files (one synthetic patient each, ``CXR<i>``, in
    ``inbox/study_<i>/cxr.dcm``; 12-bit MONOCHROME2, ImagerPixelSpacing ``pixel_mm``) and the label table
    ``labels_csv`` (``patient_id,finding`` with ``normal`` / ``opacity``). Returns the images written."""
    import pydicom
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    data = synthetic_radiographs(n, size, seed)
    names = {v: k for k, v in CLASSES.items()}
    rows = ["patient_id,finding"]
    for i, (image, label) in enumerate(zip(data.images, data.labels)):
        pid = f"CXR{i:04d}"
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID = DX_SOP_CLASS, generate_uid()
        meta.TransferSyntaxUID, meta.ImplementationClassUID = ExplicitVRLittleEndian, generate_uid()
        folder = Path(inbox) / f"study_{i:04d}"  # folder names carry no identifier
        folder.mkdir(parents=True, exist_ok=True)
        ds = FileDataset(str(folder / "cxr.dcm"), {}, file_meta=meta, preamble=b"\0" * 128)
        ds.SOPClassUID, ds.SOPInstanceUID = DX_SOP_CLASS, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID, ds.PatientBirthDate, ds.PatientSex = f"SYNTHETIC^{pid}", pid, "19700101", "O"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
        ds.StudyDate, ds.StudyTime, ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "20240101", "120000", "DX", 1, 1
        ds.SeriesDescription, ds.BodyPartExamined, ds.ViewPosition = "chest pa", "CHEST", "PA"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = image.shape
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.ImagerPixelSpacing = [pixel_mm, pixel_mm]
        ds.PresentationIntentType = "FOR PRESENTATION"
        scaled = np.clip(image / max(float(np.percentile(image, 99.9)), 1e-6), 0, 1) * 4095
        ds.PixelData = np.rint(scaled).astype("<u2").tobytes()
        with atomic_file(folder / "cxr.dcm") as tmp:
            pydicom.dcmwrite(tmp, ds, enforce_file_format=True)
        rows.append(f"{pid},{names[int(label)]}")
    write_text_atomic(labels_csv, "\n".join(rows) + "\n")
    return data
