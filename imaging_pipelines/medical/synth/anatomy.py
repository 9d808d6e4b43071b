"""Real anatomy for the lesion generator: the MNI ICBM152 2009a T1 template and its tissue maps as one
label map of tissue classes.

Sources, in order: ``$IMAGING_SHARED_DATA/medical/mni152`` (default ``<project>/../shared/data``), else the
copies inside the ``nilearn`` wheel (``nilearn.datasets.load_mni152_*``: files shipped with the package, no
download). Volumes are 197 x 233 x 189 voxels of 1 mm, returned as :class:`Volume` in LPS millimetres (the
NIfTI RAS affine is converted by :meth:`Volume.from_nifti`).

Tissue labels (:data:`TISSUES`): 0 background (air), 1 CSF, 2 grey matter, 3 white matter inside the brain
mask (the class of largest probability; GM / WM maps are scaled to 0..1 and CSF probability = 1 - GM - WM).
The template is skull-stripped, so the head outside the brain is built by the generator as layers at
random distances from the brain (labels 4 meninges, 5 skull, 6 scalp fat, 7 skin; see
:func:`head_layers`) from :attr:`Anatomy.distance_mm`, the distance (mm) of each voxel to the brain mask,
and beyond them a zone of random blobs (labels 8-10, :func:`clutter`) standing in for the face, orbits and
neck that real scans contain and the template does not; below the brain, the same blobs fill an elliptic
cylinder (:func:`neck_zone`): the skull base, face and neck of a whole-head scan.
Every label gets its own random intensity (SynthSeg), so labels are classes of equal intensity, not claims
about tissue properties.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from imaging_pipelines.config.paths import PROJECT_ROOT
from imaging_pipelines.core.volume import Volume

TISSUES: dict[int, str] = {0: "background", 1: "csf", 2: "grey_matter", 3: "white_matter",
                           4: "meninges", 5: "skull", 6: "scalp_fat", 7: "skin",
                           8: "clutter_a", 9: "clutter_b", 10: "clutter_c"}
BRAIN_LABELS = (1, 2, 3)
HEAD_LABELS = (4, 5, 6, 7)  # the extra-cerebral layers, from the inside out
CLUTTER_LABELS = (8, 9, 10)  # random tissue beyond the layers (face, orbits, neck in real scans)
MNI_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
    "brain_mask": "mni152_brain_mask_t1gt0.2.nii.gz",
}


@dataclass(frozen=True)
class Anatomy:
    """The template as used by the generator (all Volumes on the same 1 mm LPS grid).

    ``t1``: template T1 (float32, arbitrary units); ``labels``: uint8 brain tissue labels 0..3 (:data:`TISSUES`);
    ``distance_mm``: float32 distance (mm) from each voxel to the nearest brain voxel (0 inside); ``source``: ``"shared"`` or ``"nilearn"``, where the files were read from.
    """

    t1: Volume
    labels: Volume
    distance_mm: Volume
    source: str

    def fingerprint(self) -> bytes:
        """Bytes that identify the anatomy (label map voxels and geometry), for model versions."""
        import hashlib

        h = hashlib.sha256(np.ascontiguousarray(self.labels.array).tobytes())
        h.update(repr((self.labels.spacing, self.labels.origin, self.labels.direction.tolist())).encode())
        return h.hexdigest().encode()


def shared_mni_folder() -> Path:
    """``$IMAGING_SHARED_DATA/medical/mni152`` (default ``<project>/../shared/data/medical/mni152``)."""
    shared = Path(os.environ.get("IMAGING_SHARED_DATA", Path(PROJECT_ROOT).parent / "shared" / "data"))
    return shared / "medical" / "mni152"


def _nilearn_images() -> dict[str, object]:
    try:
        from nilearn import datasets
    except ImportError as exc:  # pragma: no cover - nilearn is a dependency
        raise RuntimeError("the MNI152 templates need ../shared/data/medical/mni152 or the nilearn package") from exc
    return {"t1": datasets.load_mni152_template(resolution=1), "gm": datasets.load_mni152_gm_template(resolution=1),
            "wm": datasets.load_mni152_wm_template(resolution=1), "brain_mask": datasets.load_mni152_brain_mask(resolution=1)}


def _read_template() -> tuple[dict[str, Volume], str]:
    import nibabel as nib

    folder = shared_mni_folder()
    if all((folder / f).is_file() for f in MNI_FILES.values()):
        images, source = {k: nib.load(str(folder / f)) for k, f in MNI_FILES.items()}, "shared"
    else:
        images, source = _nilearn_images(), "nilearn"
    vols = {k: Volume.from_nifti(np.asarray(img.get_fdata(), dtype=np.float32), img.affine)  # type: ignore[attr-defined]
            for k, img in images.items()}
    shapes = {k: v.spatial_shape for k, v in vols.items()}
    if len(set(shapes.values())) != 1:
        raise ValueError(f"MNI152 templates from {source} are not on one grid: {shapes}")
    return vols, source


def tissue_labels(gm: np.ndarray, wm: np.ndarray, brain: np.ndarray) -> np.ndarray:
    """uint8 brain tissue labels 1 CSF, 2 GM, 3 WM inside ``brain`` (bool), 0 outside, from GM / WM
    probabilities scaled to 0..1 (the class of largest probability; CSF = 1 - GM - WM)."""
    gm, wm = np.clip(gm, 0, 1), np.clip(wm, 0, 1)
    csf = np.clip(1.0 - gm - wm, 0, 1)
    labels = np.zeros(gm.shape, dtype=np.uint8)
    tissue = np.argmax(np.stack([csf, gm, wm]), axis=0).astype(np.uint8) + 1
    labels[brain] = tissue[brain]
    return labels


def head_layers(labels: np.ndarray, distance_mm: np.ndarray, thickness_mm: tuple[float, ...]) -> np.ndarray:
    """``labels`` with the extra-cerebral layers painted where it is background: a voxel at distance ``d``
    (mm) from the brain gets :data:`HEAD_LABELS` ``[n]`` when ``d`` lies in the ``n``-th of the consecutive
    shells of widths ``thickness_mm`` (mm, one per head label), and stays 0 (air) beyond the last."""
    if len(thickness_mm) != len(HEAD_LABELS):
        raise ValueError(f"thickness_mm needs {len(HEAD_LABELS)} widths (mm); got {thickness_mm}")
    out = labels.copy()
    outer = np.cumsum(np.asarray(thickness_mm, dtype=float))
    free = (labels == 0) & (distance_mm > 0)
    layer = np.searchsorted(outer, distance_mm, side="left")
    for n, value in enumerate(HEAD_LABELS):
        out[free & (layer == n)] = value
    return out


def clutter(labels: np.ndarray, distance_mm: np.ndarray, start_mm: float, extent_mm: float, noise: np.ndarray) -> np.ndarray:
    """``labels`` with the background voxels at distances ``start_mm`` .. ``start_mm + extent_mm`` (mm) from the
    brain split into :data:`CLUTTER_LABELS` by the terciles of the smooth field ``noise`` (same shape)."""
    zone = (labels == 0) & (distance_mm > start_mm) & (distance_mm <= start_mm + extent_mm)
    return fill_clutter(labels, zone, noise)


def fill_clutter(labels: np.ndarray, zone: np.ndarray, noise: np.ndarray) -> np.ndarray:
    """``labels`` with the voxels of ``zone`` (bool, same shape) split into :data:`CLUTTER_LABELS` by the
    terciles of the smooth field ``noise`` there."""
    out = labels.copy()
    if zone.any():
        cuts = np.quantile(noise[zone], [1 / 3, 2 / 3])
        out[zone] = np.asarray(CLUTTER_LABELS, dtype=np.uint8)[np.digitize(noise[zone], cuts)]
    return out


def neck_zone(points_mm: np.ndarray, centre_mm: tuple[float, float, float], level_mm: float,
              radii_mm: tuple[float, float]) -> np.ndarray:
    """bool: template points (``(3, ...)`` LPS mm, components (x, y, z)) more than ``level_mm`` below (in S)
    ``centre_mm`` and inside the elliptic cylinder of semi-axes ``radii_mm`` (L, P) around it: the skull base,
    face and neck, solid tissue in a real head scan where the skull-stripped template has air."""
    x, y, z = (points_mm[a] - centre_mm[a] for a in range(3))
    return (z < -level_mm) & ((x / radii_mm[0]) ** 2 + (y / radii_mm[1]) ** 2 < 1.0)


@functools.lru_cache(maxsize=1)
def load_anatomy() -> Anatomy:
    """The MNI152 anatomy (cached per process): T1 and tissue labels on the template's 1 mm LPS grid."""
    vols, source = _read_template()
    from scipy import ndimage

    t1 = vols["t1"]
    scale = {k: max(float(vols[k].array.max()), 1e-6) for k in ("gm", "wm")}
    brain = (vols["brain_mask"].array > 0.5) | (t1.array > 0)
    labels = tissue_labels(vols["gm"].array / scale["gm"], vols["wm"].array / scale["wm"], brain)
    distance = ndimage.distance_transform_edt(labels == 0, sampling=t1.spacing[::-1]).astype(np.float32)
    return Anatomy(t1=t1.with_array(t1.array.astype(np.float32)), labels=t1.with_array(labels),
                   distance_mm=t1.with_array(distance), source=source)
