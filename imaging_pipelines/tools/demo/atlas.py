"""The demo's brain atlas: a clean phantom template (no bias, noise or lesions) and its brain mask."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imaging_pipelines.tools.demo.phantom import BRAIN_CSF, brain_like_phantom, centered_origin
from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.core.volume import Volume

ATLAS_SHAPE = (56, 64, 56)  # z, y, x voxels
ATLAS_SPACING = (3.0, 3.0, 3.0)  # mm (x, y, z)


def write_demo_atlas(folder: str | Path) -> tuple[Path, Path]:
    """Write ``atlas_t1.nii.gz`` (a.u.) and ``atlas_brain_mask.nii.gz`` (0/1: everything inside the skull)
    into ``folder``, on an identity-direction (LPS) 3 mm grid centred on world (0, 0, 0)."""
    folder = Path(folder)
    image, labels = brain_like_phantom(ATLAS_SHAPE, ATLAS_SPACING, seed=0, noise_sigma=0.0,
                                       with_bias=False, with_lesions=False)
    origin = centered_origin(ATLAS_SHAPE, ATLAS_SPACING)
    geometry = dict(spacing=ATLAS_SPACING, origin=origin)
    brain = (labels >= BRAIN_CSF).astype(np.uint8)
    return (write_nifti(Volume(image, **geometry), folder / "atlas_t1.nii.gz"),
            write_nifti(Volume(brain, **geometry), folder / "atlas_brain_mask.nii.gz"))
