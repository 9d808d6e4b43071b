"""Atlas-based brain masks: register an atlas image to a subject and carry the atlas mask across."""

from __future__ import annotations

from dataclasses import dataclass
from os import PathLike
from typing import Any

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.io.image_files import read_image_file
from imaging_pipelines.register import warp
from imaging_pipelines.register.api import register
from imaging_pipelines.register.result import RegistrationResult
from imaging_pipelines.volume import Volume


@dataclass(frozen=True)
class Atlas:
    """A template image and its binary mask (uint8, 1 inside) on the same grid."""

    image: Volume
    mask: Volume


def load_atlas(image_path: str | PathLike, mask_path: str | PathLike) -> Atlas:
    """Read an atlas image and mask (NIfTI/NRRD/MHA); a mask on another grid is resampled onto the image's (nearest)."""
    image = read_image_file(image_path)
    mask = read_image_file(mask_path)
    mask = mask.with_array((mask.array > 0).astype(np.uint8))
    if not mask.same_geometry(image):
        mask = warp.resample(mask, image, None, interpolator=sitk.sitkNearestNeighbor)
    return Atlas(image=image, mask=mask)


def brain_mask_from_atlas(subject: Volume, atlas: Atlas, method: str = "affine",
                          **params: Any) -> tuple[Volume, RegistrationResult]:
    """The atlas mask on the subject's grid (uint8, nearest neighbour) and the atlas -> subject registration.

    The atlas image is the MOVING image and the subject the FIXED one, so the result's transform maps
    subject points to atlas points; ``method`` and ``params`` go to :func:`imaging_pipelines.register.api.register`.
    """
    result = register(subject, atlas.image, method=method, **params)
    return warp.warp_labels(atlas.mask, subject, result), result
