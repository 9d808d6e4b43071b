"""Atlas brain prior for brain-gated lesion models: the MNI152 brain, registered onto a head scan.

A brain-gated network decides "brain" one slice at a time, and on slices that hold no brain at all (neck,
face, skull base of a whole-head scan) it can call the whole head cross-section brain, putting lesion
voxels there. :func:`atlas_brain_mask` gives an independent, anatomical answer: the skull-stripped MNI152
T1 template (:func:`~imaging_pipelines.medical.synth.anatomy.load_anatomy`, the same anatomy the lesion
generator draws from) is registered to the scan with a 12-parameter affine transform (Mattes mutual
information sampled only inside the template's brain, so the scan's skull, face and neck do not pull it),
and the template's brain mask is resampled onto the scan's grid. The gate of
:func:`~imaging_pipelines.medical.segment.brain_gate.gate_to_brain` then keeps the network's brain only
where the atlas agrees.

Coordinates: every image is a :class:`~imaging_pipelines.core.volume.Volume` with LPS world coordinates in
mm; the transform maps the scan's physical points to the template's. Mutual information makes the prior
independent of the scan's contrast (T1, T2, FLAIR, post-contrast). No dagster import here.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaging_pipelines.core.volume import Volume

TEMPLATE_SPACING_MM = 2.0  # the template is registered at 2 mm: the gate needs the brain's outline, not its folds
MIN_AGREEMENT = 0.5  # Dice of the atlas brain with the network's brain below which the registration is not trusted
SAMPLING_SEED = 1  # the metric's random sampling is seeded: the same scan gives the same prior


@dataclass(frozen=True)
class AtlasBrain:
    """``mask``: bool [z, y, x] on the scan's grid (the registered template brain); ``metric``: final
    mutual-information value (lower is better); ``volume_ml``: the mask's volume in mL."""

    mask: np.ndarray
    metric: float
    volume_ml: float


def atlas_brain_mask(image: Volume) -> AtlasBrain:
    """The MNI152 brain registered (affine, brain-masked Mattes MI, 3 levels) onto the 3D ``image``."""
    import SimpleITK as sitk

    from imaging_pipelines.medical.preprocess.resample import resample_to_spacing
    from imaging_pipelines.medical.synth.anatomy import load_anatomy

    anatomy = load_anatomy()
    template = resample_to_spacing(anatomy.t1, TEMPLATE_SPACING_MM, interpolator="linear", antialias=True)
    brain = resample_to_spacing(anatomy.labels.with_array((anatomy.labels.array > 0).astype(np.uint8)),
                                TEMPLATE_SPACING_MM, interpolator="nearest", antialias=False)
    fixed = sitk.Cast(image.to_sitk(), sitk.sitkFloat32)
    moving = sitk.Cast(template.to_sitk(), sitk.sitkFloat32)
    brain_image = sitk.Cast(brain.to_sitk(), sitk.sitkUInt8)
    initial = sitk.CenteredTransformInitializer(fixed, moving, sitk.AffineTransform(3),
                                                sitk.CenteredTransformInitializerFilter.MOMENTS)
    transform = sitk.AffineTransform(initial)
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=32)
    reg.SetMetricSamplingStrategy(reg.RANDOM)
    reg.SetMetricSamplingPercentage(0.2, SAMPLING_SEED)
    reg.SetMetricMovingMask(brain_image)
    reg.SetInterpolator(sitk.sitkLinear)
    reg.SetShrinkFactorsPerLevel([4, 2, 1])
    reg.SetSmoothingSigmasPerLevel([4.0, 2.0, 1.0])
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    reg.SetOptimizerAsRegularStepGradientDescent(learningRate=1.0, minStep=1e-3, numberOfIterations=200,
                                                 relaxationFactor=0.5)
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(transform, inPlace=True)
    reg.Execute(fixed, moving)
    warped = sitk.Resample(brain_image, fixed, transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mask = sitk.GetArrayFromImage(warped) > 0
    return AtlasBrain(mask=mask, metric=float(reg.GetMetricValue()),
                      volume_ml=float(mask.sum()) * float(np.prod(image.spacing)) / 1000.0)


def agreement(atlas: np.ndarray, network_brain: np.ndarray) -> float:
    """Dice of two bool brain masks on one grid (0 when both are empty)."""
    total = int(atlas.sum()) + int(network_brain.sum())
    return 2.0 * float((atlas & network_brain).sum()) / total if total else 0.0


def trusted_atlas_brain(image: Volume, network_brain: np.ndarray) -> tuple[np.ndarray | None, str]:
    """(prior, note): the atlas brain of ``image`` when its registration succeeded and the mask agrees with
    ``network_brain`` (bool, same grid) at Dice >= :data:`MIN_AGREEMENT`, else ``None`` (the caller gates with
    the network's brain alone); the note says which and why, for the label map's attributes."""
    try:
        atlas = atlas_brain_mask(image)
    except RuntimeError as exc:  # ITK: e.g. too few samples inside the brain on a tiny or empty image
        return None, f"network brain only: atlas registration failed ({str(exc).strip().splitlines()[-1][:160]})"
    score = agreement(atlas.mask, network_brain)
    if score < MIN_AGREEMENT:
        return None, (f"network brain only: the registered MNI152 brain ({atlas.volume_ml:.0f} mL) agrees with "
                      f"the network's at Dice {score:.2f} < {MIN_AGREEMENT}")
    return atlas.mask, f"network brain within the registered MNI152 brain ({atlas.volume_ml:.0f} mL, agreement {score:.2f})"
