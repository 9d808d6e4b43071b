"""The demo's brain atlas: the MNI152 T1 template (undeformed, no lesions) and its brain mask, on the demo's
3 mm grid centred on world (0, 0, 0), the MNI152 brain centre that the demo patients (:mod:`~.mni_head`)
are built around."""

from __future__ import annotations

from pathlib import Path

from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.tools.demo.mni_head import mni_template_on_grid

ATLAS_SHAPE = (56, 64, 56)  # z, y, x voxels
ATLAS_SPACING = (3.0, 3.0, 3.0)  # mm (x, y, z)


def write_demo_atlas(folder: str | Path) -> tuple[Path, Path]:
    """Write ``atlas_t1.nii.gz`` (the MNI152 T1 template in its own units, skull-stripped) and
    ``atlas_brain_mask.nii.gz`` (uint8 0/1: the template's brain, CSF included) into ``folder``, on an
    identity-direction (LPS) 3 mm grid centred on world (0, 0, 0)."""
    folder = Path(folder)
    image, brain = mni_template_on_grid(ATLAS_SHAPE, ATLAS_SPACING)
    return write_nifti(image, folder / "atlas_t1.nii.gz"), write_nifti(brain, folder / "atlas_brain_mask.nii.gz")
