"""Atlas-based brain masks: register an atlas image to a subject and carry the atlas mask across."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


from imaging_pipelines.config.atlases import AtlasConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.image_files import read_image_file
from imaging_pipelines.medical.register import warp
from imaging_pipelines.medical.register.api import register
from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume


@dataclass(frozen=True)
class Atlas:
    """A template image and its binary mask (uint8, 1 inside) on the same grid."""

    image: Volume
    mask: Volume


def brain_mask_from_atlas(subject: Volume, atlas: Atlas, method: str = "affine",
                          **params: Any) -> tuple[Volume, RegistrationResult]:
    """The atlas mask on the subject's grid (uint8, nearest neighbour) and the atlas -> subject registration.

    The atlas image is the MOVING image and the subject the FIXED one, so the result's transform maps
    subject points to atlas points; ``method`` and ``params`` go to :func:`imaging_pipelines.medical.register.api.register`.
    """
    result = register(subject, atlas.image, method=method, **params)
    return warp.warp_labels(atlas.mask, subject, result), result


def load_atlas(atlas: AtlasConfig) -> tuple[Volume, Volume]:
    """The atlas image and brain mask of a catalog atlas as Volumes (LPS mm); clear error naming a missing file."""
    paths = {f: atlas.resolved(f) for f in ("image", "mask")}
    for field, path in paths.items():
        if not path.is_file():
            raise ImagingInputError(path, f"atlas {atlas.name!r}: {field} file not found (see {atlas.source_file})")
    return read_image_file(paths["image"]), read_image_file(paths["mask"])
