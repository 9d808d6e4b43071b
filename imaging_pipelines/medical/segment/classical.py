"""Classical (non-learned) segmentation baselines built on SimpleITK.

Every function takes a 3D :class:`~imaging_pipelines.core.volume.Volume` and returns a label Volume
(``uint8``, or ``uint16`` when there are more than 255 labels; 0 = background) on the **same voxel
grid** as its input, plus a small JSON-friendly report ``dict`` (thresholds, parameters, object counts).

Conventions are those of :mod:`imaging_pipelines.core.volume`: arrays are ``[z, y, x]``; seeds are voxel
indices in ITK order ``(i, j, k)``; physical quantities are millimetres (distances), mL (volumes) and
patient LPS mm (positions). SimpleITK filters run with the volume's spacing, so radii given in mm and
arrival times are physical.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.medical.preprocess.masks import check_mask, otsu_foreground
from imaging_pipelines.core.volume import Volume

THRESHOLD_FILTERS = {
    "otsu": sitk.OtsuThresholdImageFilter,
    "max_entropy": sitk.MaximumEntropyThresholdImageFilter,
    "li": sitk.LiThresholdImageFilter,
    "triangle": sitk.TriangleThresholdImageFilter,
}


@dataclass(frozen=True)
class ObjectStats:
    """Shape (and optional intensity) statistics of one labelled object.

    ``volume_ml`` is the voxel count times the voxel volume (product of spacings, mm^3) / 1000;
    ``centroid_lps_mm`` is the physical centroid (patient LPS mm); ``bounding_box_ijk`` is
    ``(i0, j0, k0, size_i, size_j, size_k)`` in voxel indices; ``elongation`` is the ratio of the two
    largest principal axes (1 for a sphere; NaN when undefined, e.g. a single voxel).
    """

    label: int
    voxel_count: int
    volume_ml: float
    centroid_lps_mm: tuple[float, float, float]
    bounding_box_ijk: tuple[int, int, int, int, int, int]
    elongation: float
    mean_intensity: float | None = None
    max_intensity: float | None = None


# ----------------------------------------------------------------------------- helpers
def _as_3d(volume: Volume, what: str = "volume") -> Volume:
    if volume.is_timeseries:
        raise ValueError(f"{what} must be a 3D volume; got shape {volume.array.shape}")
    return volume


def _float_image(volume: Volume) -> sitk.Image:
    return _as_3d(volume).with_array(volume.array.astype(np.float32)).to_sitk()


def _mask_image(volume: Volume, mask: Volume | None) -> sitk.Image | None:
    """The mask as a ``uint8`` 0/1 SimpleITK image on the volume's grid (None stays None)."""
    if mask is None:
        return None
    m = check_mask(volume, mask)
    return volume.with_array(m.astype(np.uint8)).to_sitk()


def _label_volume(reference: Volume, labels: np.ndarray) -> Volume:
    """A label Volume (uint8 or uint16) with the geometry of ``reference``."""
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    dtype = np.uint8 if top <= np.iinfo(np.uint8).max else np.uint16
    if top > np.iinfo(np.uint16).max:
        raise ValueError(f"{top} labels do not fit in uint16")
    return Volume(
        array=labels.astype(dtype), spacing=reference.spacing, origin=reference.origin, direction=reference.direction
    )


def _clean_binary(binary: sitk.Image, opening_radius_vox: int, min_size_vox: int) -> sitk.Image:
    """Binary opening with a ball of ``opening_radius_vox`` voxels, then removal of components < ``min_size_vox``."""
    binary = sitk.Cast(binary > 0, sitk.sitkUInt8)
    if opening_radius_vox > 0:
        binary = sitk.BinaryMorphologicalOpening(binary, [int(opening_radius_vox)] * 3, sitk.sitkBall)
    if min_size_vox > 0:
        components = sitk.RelabelComponent(sitk.ConnectedComponent(binary), minimumObjectSize=int(min_size_vox))
        binary = sitk.Cast(components > 0, sitk.sitkUInt8)
    return binary


# ----------------------------------------------------------------------------- thresholds
def threshold_segmentation(
    volume: Volume,
    method: str = "otsu",
    mask: Volume | None = None,
    opening_radius_vox: int = 1,
    min_size_vox: int = 20,
    number_of_histogram_bins: int = 256,
) -> tuple[Volume, dict[str, Any]]:
    """Binary segmentation (``uint8`` 0/1) of the voxels **above** an automatic histogram threshold.

    ``method`` is ``"otsu"``, ``"max_entropy"``, ``"li"`` or ``"triangle"`` (the SimpleITK filters of the
    same names). With ``mask`` (a 0/1 Volume on the same grid) the histogram is computed inside the mask
    only and the result is restricted to it. Then a binary opening with a ball of ``opening_radius_vox``
    voxels (0: none) and removal of connected components (face connectivity) smaller than
    ``min_size_vox`` voxels (0: none). Report: ``method``, ``threshold`` (image units), ``n_components``.
    """
    if method not in THRESHOLD_FILTERS:
        raise ValueError(f"method must be one of {sorted(THRESHOLD_FILTERS)}; got {method!r}")
    image = _float_image(volume)
    mask_img = _mask_image(volume, mask)
    f = THRESHOLD_FILTERS[method]()
    f.SetInsideValue(0)  # ITK: "inside" = at or below the threshold
    f.SetOutsideValue(1)
    f.SetNumberOfHistogramBins(int(number_of_histogram_bins))
    if mask_img is not None:
        f.SetMaskValue(1)
        f.SetMaskOutput(True)
        binary = f.Execute(image, mask_img)
        binary = sitk.Mask(binary, mask_img)
    else:
        binary = f.Execute(image)
    binary = _clean_binary(binary, opening_radius_vox, min_size_vox)
    out = sitk.GetArrayFromImage(binary).astype(np.uint8)
    report = {"method": method, "threshold": float(f.GetThreshold()), "n_components": _count_components(binary)}
    return _label_volume(volume, out), report


def _count_components(binary: sitk.Image) -> int:
    cc = sitk.ConnectedComponentImageFilter()
    cc.Execute(binary)
    return int(cc.GetObjectCount())


# ----------------------------------------------------------------------------- watershed
def watershed_segmentation(
    volume: Volume,
    mask: Volume | None = None,
    level: float | None = None,
    markers: Volume | None = None,
    landscape: str = "gradient",
    sigma_mm: float | None = None,
) -> tuple[Volume, dict[str, Any]]:
    """Marker-based morphological watershed (SimpleITK ``MorphologicalWatershedFromMarkers``).

    ``landscape``:

    * ``"gradient"``: the flooded relief is the gradient magnitude of the image after Gaussian smoothing
      with ``sigma_mm`` (default: the largest voxel spacing). Regions follow intensity edges.
    * ``"distance"``: the relief is the signed Euclidean distance (mm, negative inside) of ``mask``, which is
      then required. Its minima are object centres: the classical way to split touching blobs.

    ``markers``: a label Volume on the same grid (0 = no marker); by default markers are the regional
    minima of the h-minima transform of the relief with depth ``level`` (relief units: image units per mm
    for ``"gradient"``, mm for ``"distance"``; default: 5 % of the relief's range, or 1 voxel spacing for
    ``"distance"``), each connected minimum one marker. With ``mask`` the output is zero outside the mask
    and markers outside the mask are ignored. Labels are renumbered 1..n. Report: ``n_labels``, ``level``.
    """
    image = _float_image(volume)
    mask_img = _mask_image(volume, mask)
    if landscape == "gradient":
        sigma = float(max(volume.spacing) if sigma_mm is None else sigma_mm)
        relief = sitk.GradientMagnitudeRecursiveGaussian(image, sigma=sigma)
    elif landscape == "distance":
        if mask_img is None:
            raise ValueError("landscape='distance' needs a mask")
        relief = sitk.SignedMaurerDistanceMap(
            mask_img, insideIsPositive=False, squaredDistance=False, useImageSpacing=True
        )
        relief = sitk.Cast(relief, sitk.sitkFloat32)
    else:
        raise ValueError(f"landscape must be 'gradient' or 'distance'; got {landscape!r}")

    if markers is not None:
        if not volume.same_geometry(_as_3d(markers, "markers")):
            raise ValueError("markers are not on the image grid")
        marker_array = markers.array.astype(np.uint32)
        used_level = None
    else:
        relief_array = sitk.GetArrayViewFromImage(relief)
        if level is None:
            if landscape == "distance":
                level = float(min(volume.spacing))
            else:
                level = 0.05 * float(relief_array.max() - relief_array.min())
        used_level = float(level)
        minima = sitk.RegionalMinima(
            sitk.HMinima(relief, used_level), backgroundValue=0, foregroundValue=1, fullyConnected=False, flatIsMinima=True
        )
        marker_array = sitk.GetArrayFromImage(sitk.ConnectedComponent(minima)).astype(np.uint32)
    if mask_img is not None:
        marker_array = marker_array * (sitk.GetArrayViewFromImage(mask_img) > 0)
    marker_img = sitk.GetImageFromArray(marker_array)
    marker_img.CopyInformation(relief)

    ws = sitk.MorphologicalWatershedFromMarkers(relief, marker_img, markWatershedLine=False, fullyConnected=False)
    labels = sitk.GetArrayFromImage(ws).astype(np.int64)
    if mask_img is not None:
        labels = labels * (sitk.GetArrayViewFromImage(mask_img) > 0)
    present = np.unique(labels[labels > 0])
    lut = np.zeros(int(labels.max()) + 1, dtype=np.int64)
    lut[present] = np.arange(1, present.size + 1)
    labels = lut[labels]
    report = {"landscape": landscape, "level": used_level, "n_labels": int(present.size)}
    return _label_volume(volume, labels), report


# ----------------------------------------------------------------------------- fast marching
def fast_marching_segmentation(
    volume: Volume,
    seeds_ijk: list[tuple[int, int, int]],
    stopping_time: float = 100.0,
    sigma_mm: float | None = None,
    alpha: float | None = None,
    beta: float | None = None,
) -> tuple[Volume, dict[str, Any]]:
    """Region grown by fast marching (SimpleITK ``FastMarchingImageFilter``) from voxel seeds ``(i, j, k)``.

    The speed image is a sigmoid of the gradient magnitude (Gaussian derivative with ``sigma_mm``;
    default: the largest voxel spacing): ``speed = 1 / (1 + exp(-(g - beta) / alpha))`` with ``alpha < 0``
    so that speed is ~1 in flat regions and ~0 on edges. Defaults: ``beta`` is the midpoint between the
    median gradient at the seeds and the 99th-percentile gradient of the image, ``alpha = -(that range) / 6``.
    Spacing is used, so the arrival time is in mm / unit speed (about the geodesic distance inside the
    object); the segmentation is every voxel whose arrival time is below ``stopping_time`` (mm).
    Report: ``alpha``, ``beta``, ``stopping_time``, ``voxel_count``.
    """
    if not seeds_ijk:
        raise ValueError("fast marching needs at least one seed")
    shape_ijk = volume.spatial_shape[::-1]
    for seed in seeds_ijk:
        if len(seed) != 3 or not all(0 <= int(s) < n for s, n in zip(seed, shape_ijk)):
            raise ValueError(f"seed {seed} is outside the image (size i, j, k = {shape_ijk})")
    image = _float_image(volume)
    sigma = float(max(volume.spacing) if sigma_mm is None else sigma_mm)
    gradient = sitk.GradientMagnitudeRecursiveGaussian(image, sigma=sigma)
    g = sitk.GetArrayViewFromImage(gradient)
    if alpha is None or beta is None:
        g_inside = float(np.median([g[k, j, i] for i, j, k in seeds_ijk]))
        g_edge = float(np.percentile(g, 99))
        if g_edge <= g_inside:
            g_edge = g_inside + 1e-6
        beta = 0.5 * (g_inside + g_edge) if beta is None else beta
        alpha = -(g_edge - g_inside) / 6.0 if alpha is None else alpha
    speed = sitk.Sigmoid(gradient, alpha=float(alpha), beta=float(beta), outputMaximum=1.0, outputMinimum=0.0)

    fm = sitk.FastMarchingImageFilter()
    fm.SetTrialPoints([[int(s) for s in seed] + [0] for seed in seeds_ijk])  # (i, j, k, initial time)
    fm.SetStoppingValue(float(stopping_time) * 1.1)
    arrival = fm.Execute(speed)
    segmentation = sitk.GetArrayFromImage(arrival) < float(stopping_time)
    report = {
        "alpha": float(alpha),
        "beta": float(beta),
        "stopping_time": float(stopping_time),
        "voxel_count": int(segmentation.sum()),
    }
    return _label_volume(volume, segmentation.astype(np.uint8)), report


# ----------------------------------------------------------------------------- components
def connected_components(
    labels_or_mask: Volume, min_size_vox: int = 0, image: Volume | None = None
) -> tuple[Volume, list[ObjectStats]]:
    """Objects of a mask or label map, with per-object statistics (``LabelShapeStatisticsImageFilter``).

    A binary input (values 0/1) is split into connected components (face connectivity), numbered
    1..n by decreasing size; a label map (other values present) keeps its labels. Objects smaller than
    ``min_size_vox`` voxels are removed. With ``image`` (same grid) each object also gets the mean and
    maximum intensity. Returns the label Volume and one :class:`ObjectStats` per object, by label.
    """
    _as_3d(labels_or_mask, "labels_or_mask")
    array = labels_or_mask.array
    if np.any(array < 0):
        raise ValueError("labels must be non-negative")
    values = np.unique(array)
    if set(values.tolist()) <= {0, 1}:
        binary = labels_or_mask.with_array((array > 0).astype(np.uint8)).to_sitk()
        relabelled = sitk.RelabelComponent(
            sitk.ConnectedComponent(binary), minimumObjectSize=int(min_size_vox), sortByObjectSize=True
        )
        labels = sitk.GetArrayFromImage(relabelled).astype(np.int64)
    else:
        labels = array.astype(np.int64)
        if min_size_vox > 0:
            counts = np.bincount(labels.ravel())
            small = np.flatnonzero((counts > 0) & (counts < min_size_vox))
            labels = np.where(np.isin(labels, small[small > 0]), 0, labels)
    out = _label_volume(labels_or_mask, labels)
    if not out.array.any():
        return out, []

    label_img = out.to_sitk()
    shape = sitk.LabelShapeStatisticsImageFilter()
    shape.SetComputePerimeter(False)
    shape.Execute(label_img)
    intensity = None
    if image is not None:
        if not labels_or_mask.same_geometry(_as_3d(image, "image")):
            raise ValueError("image is not on the label grid")
        intensity = sitk.LabelIntensityStatisticsImageFilter()
        intensity.Execute(label_img, _float_image(image))
    voxel_ml = float(np.prod(out.spacing)) / 1000.0
    stats = []
    for lab in sorted(shape.GetLabels()):
        n = int(shape.GetNumberOfPixels(lab))
        try:
            elongation = float(shape.GetElongation(lab))
        except RuntimeError:
            elongation = float("nan")
        stats.append(
            ObjectStats(
                label=int(lab),
                voxel_count=n,
                volume_ml=n * voxel_ml,
                centroid_lps_mm=tuple(float(c) for c in shape.GetCentroid(lab)),
                bounding_box_ijk=tuple(int(b) for b in shape.GetBoundingBox(lab)),
                elongation=elongation if np.isfinite(elongation) else float("nan"),
                mean_intensity=None if intensity is None else float(intensity.GetMean(lab)),
                max_intensity=None if intensity is None else float(intensity.GetMaximum(lab)),
            )
        )
    return out, stats


# ----------------------------------------------------------------------------- lesion baseline
def eroded_head(volume: Volume, erosion_mm: float = 12.0) -> np.ndarray:
    """Boolean (z, y, x) brain region: :func:`otsu_foreground` eroded by ``erosion_mm`` (mm, ball per axis
    spacing), largest component. Raises when nothing is left."""
    head = otsu_foreground(volume).to_sitk()
    radius = [max(1, int(round(erosion_mm / s))) for s in volume.spacing]
    eroded = sitk.BinaryErode(head, radius, sitk.sitkBall)
    largest = sitk.RelabelComponent(sitk.ConnectedComponent(eroded), sortByObjectSize=True) == 1
    inside = sitk.GetArrayFromImage(largest) > 0
    if not inside.any():
        raise ValueError(f"brain mask is empty after a {erosion_mm} mm erosion of the head mask")
    return inside


def lesion_baseline(
    volume: Volume,
    brain_mask: Volume | None = None,
    method: str = "otsu",
    polarity: str = "both",
    k_sigma: float = 3.0,
    min_size_vox: int = 4,
    opening_radius_vox: int = 0,
    brain_erosion_mm: float = 12.0,
) -> tuple[Volume, dict[str, Any]]:
    """Hypo- and/or hyper-intense lesions inside the brain: binary ``uint8`` Volume (1 = lesion), same grid.

    1. Brain mask: ``brain_mask`` (0/1 Volume on the grid; best the parenchyma, grey + white matter,
       without CSF) or, when None, :func:`~imaging_pipelines.medical.preprocess.masks.otsu_foreground` eroded by
       ``brain_erosion_mm`` (mm) to drop scalp, skull and the outer CSF; ventricles then stay inside and
       dark/bright CSF can be mistaken for lesions.
    2. The normal tissue is split into a darker and a brighter class (grey / white matter) by the
       histogram threshold ``method`` (``"otsu"``, ``"max_entropy"``, ``"li"``, ``"triangle"``) inside the mask;
       each class gets a robust centre (median) and spread (1.4826 x MAD), in image units.
    3. Lesion candidates: ``polarity="hypo"`` voxels darker than ``median_dark - k_sigma * spread_dark``;
       ``"hyper"`` brighter than ``median_bright + k_sigma * spread_bright``; ``"both"`` either.
    4. Optional binary opening (ball of ``opening_radius_vox`` voxels; keep 0 at coarse, ~4 mm, spacing where
       lesions are only a few voxels across) and removal of components under ``min_size_vox`` voxels.

    The report holds the threshold, the class centres/spreads, the lower/upper lesion cut-offs and
    ``lesions``: the :class:`ObjectStats` of every lesion as dicts (volume in mL, centroid in LPS mm).
    """
    if polarity not in ("hypo", "hyper", "both"):
        raise ValueError(f"polarity must be 'hypo', 'hyper' or 'both'; got {polarity!r}")
    if method not in THRESHOLD_FILTERS:
        raise ValueError(f"method must be one of {sorted(THRESHOLD_FILTERS)}; got {method!r}")
    _as_3d(volume)
    inside = check_mask(volume, brain_mask) if brain_mask is not None else eroded_head(volume, brain_erosion_mm)

    values = volume.array.astype(np.float32)
    f = THRESHOLD_FILTERS[method]()
    f.SetInsideValue(0)
    f.SetOutsideValue(1)
    f.SetMaskValue(1)
    f.Execute(volume.with_array(values).to_sitk(), volume.with_array(inside.astype(np.uint8)).to_sitk())
    threshold = float(f.GetThreshold())
    tissue = values[inside]
    dark, bright = tissue[tissue <= threshold], tissue[tissue > threshold]
    if dark.size == 0 or bright.size == 0:
        raise ValueError("the brain mask's histogram has a single intensity class; cannot find lesions")
    centre_dark, centre_bright = float(np.median(dark)), float(np.median(bright))
    spread_dark = 1.4826 * float(np.median(np.abs(dark - centre_dark)))
    spread_bright = 1.4826 * float(np.median(np.abs(bright - centre_bright)))
    low_cut = centre_dark - k_sigma * spread_dark
    high_cut = centre_bright + k_sigma * spread_bright

    candidates = np.zeros(volume.spatial_shape, dtype=bool)
    if polarity in ("hypo", "both"):
        candidates |= values < low_cut
    if polarity in ("hyper", "both"):
        candidates |= values > high_cut
    candidates &= inside
    cleaned = _clean_binary(volume.with_array(candidates.astype(np.uint8)).to_sitk(), opening_radius_vox, min_size_vox)
    lesions = _label_volume(volume, sitk.GetArrayFromImage(cleaned).astype(np.uint8))
    _, stats = connected_components(lesions, image=volume)
    report = {
        "method": method,
        "polarity": polarity,
        "tissue_threshold": threshold,
        "dark_class": {"median": centre_dark, "spread": spread_dark},
        "bright_class": {"median": centre_bright, "spread": spread_bright},
        "low_cut": low_cut if polarity != "hyper" else None,
        "high_cut": high_cut if polarity != "hypo" else None,
        "brain_mask": "given" if brain_mask is not None else f"otsu_foreground eroded {brain_erosion_mm} mm",
        "n_lesions": len(stats),
        "lesion_volume_ml": float(sum(s.volume_ml for s in stats)),
        "lesions": [asdict(s) for s in stats],
    }
    return lesions, report
