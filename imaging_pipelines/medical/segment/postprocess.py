"""Post-processing of label maps: small-component removal (mL), keep the N largest components, hole filling.

Works per label value on a label Volume; components use face connectivity; volumes in millilitres from
the voxel spacing (mm). Holes are filled slice-independently in 3D (``BinaryFillhole``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.core.volume import Volume


@dataclass
class PostprocessReport:
    removed_components: int = 0
    removed_ml: float = 0.0
    filled_ml: float = 0.0


def postprocess_labels(labels: Volume, min_component_ml: float = 0.0, keep_largest: int = 0,
                       fill_holes: bool = True) -> tuple[Volume, PostprocessReport]:
    """Clean every non-zero label of ``labels`` (uint8); returns the cleaned Volume and what changed. With
    nothing asked (no minimum size, no N largest, no hole filling) the labels come back as they are (as uint8,
    the array itself when it already is), without a pass over them."""
    array = np.asarray(labels.array)
    if min_component_ml <= 0 and keep_largest <= 0 and not fill_holes:
        return labels.with_array(array.astype(np.uint8, copy=False)), PostprocessReport()
    voxel_ml = float(np.prod(labels.spacing)) / 1000.0
    out = array.copy()
    report = PostprocessReport()
    removing = min_component_ml > 0 or keep_largest > 0
    present = np.flatnonzero(np.bincount(array.ravel())) if array.dtype in (np.uint8, np.uint16) else np.unique(array)
    for value in [int(v) for v in present if v != 0]:
        if not removing:  # nothing to drop: every component is kept, no labelling needed
            kept = array == value
        else:
            mask = labels.with_array((array == value).astype(np.uint8)).to_sitk()
            components = sitk.ConnectedComponent(mask, False)
            min_vox = int(np.ceil(min_component_ml / voxel_ml)) if min_component_ml > 0 else 0
            relabelled = sitk.RelabelComponent(components, minimumObjectSize=min_vox, sortByObjectSize=True)
            kept = sitk.GetArrayFromImage(relabelled)
            if keep_largest:
                kept[kept > keep_largest] = 0
            kept = kept > 0
            removed = (array == value) & ~kept
            if removed.any():
                n_before = int(sitk.GetArrayViewFromImage(components).max())
                n_after = int(np.unique(sitk.GetArrayViewFromImage(relabelled)[kept]).size)
                report.removed_components += n_before - n_after
                report.removed_ml += float(removed.sum()) * voxel_ml
        if fill_holes and kept.any():
            filled_image = sitk.BinaryFillhole(labels.with_array(kept.astype(np.uint8)).to_sitk(), fullyConnected=False)
            filled = sitk.GetArrayFromImage(filled_image) > 0
            new = filled & ~kept & (out == 0)  # fill background holes only, never over another label
            report.filled_ml += float(new.sum()) * voxel_ml
            kept |= new
        out[(array == value) & ~kept] = 0
        out[kept] = value
    return labels.with_array(out.astype(np.uint8)), report
