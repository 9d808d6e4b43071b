"""Classical intensity-based registration with SimpleITK: rigid, affine, B-spline and Demons.

Every function registers ``moving`` onto ``fixed`` and returns a
:class:`~imaging_pipelines.medical.register.result.RegistrationResult` whose ``transform`` maps FIXED physical
points (LPS mm) to MOVING physical points, whose ``displacement`` samples that mapping on the fixed grid,
and whose ``metrics`` hold ``ncc_before/after``, ``mi_before/after`` ("before" = moving resampled onto
the fixed grid with the identity transform), ``jacobian_min/max/mean/std``, ``folding_fraction`` and
``runtime_s``.

All randomness is seeded (metric sampling uses ``seed``); with the same number of threads a run repeats
bit for bit. Rigid and affine stages run single-threaded by default (cheap with sampled metrics).
Resolution pyramids shrink by whole voxel factors and smooth with Gaussian sigmas in mm.
"""

from __future__ import annotations

import time
from contextlib import contextmanager

import numpy as np
import SimpleITK as sitk

from imaging_pipelines.medical.register import warp
from imaging_pipelines.medical.register.metrics import jacobian_stats, linear_jacobian_stats, similarity
from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume

INITIALIZERS = {"geometry": sitk.CenteredTransformInitializerFilter.GEOMETRY,
                "moments": sitk.CenteredTransformInitializerFilter.MOMENTS}


# ----------------------------------------------------------------------------------- shared pieces
def _float_image(volume: Volume) -> sitk.Image:
    return sitk.Cast(volume.to_sitk(), sitk.sitkFloat32)


def _pyramid(levels: int) -> tuple[list[int], list[float]]:
    """Shrink factors 2**(levels-1) .. 1 and smoothing sigmas (mm) half of them, the finest unsmoothed: 4,2,1 / 2,1,0."""
    shrink = [2 ** (levels - 1 - level) for level in range(levels)]
    return shrink, [float(s // 2) for s in shrink]


def _mattes_method(levels: int, sampling: float, bins: int, seed: int, threads: int | None) -> sitk.ImageRegistrationMethod:
    """Mattes mutual information on a random ``sampling`` fraction of voxels, multi-resolution, linear interpolation."""
    reg = sitk.ImageRegistrationMethod()
    reg.SetMetricAsMattesMutualInformation(numberOfHistogramBins=bins)
    if sampling < 1.0:
        reg.SetMetricSamplingStrategy(reg.RANDOM)
        reg.SetMetricSamplingPercentage(sampling, seed + 1)  # ITK seed 0 means "wall clock": not repeatable
    else:
        reg.SetMetricSamplingStrategy(reg.NONE)
    reg.SetInterpolator(sitk.sitkLinear)
    shrink, sigmas = _pyramid(levels)
    reg.SetShrinkFactorsPerLevel(shrinkFactors=shrink)
    reg.SetSmoothingSigmasPerLevel(smoothingSigmas=sigmas)
    reg.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    if threads is not None:
        reg.SetNumberOfThreads(threads)
    return reg


def _linear_stage(fixed: sitk.Image, moving: sitk.Image, transform: sitk.Transform, *, levels: int, iterations: int,
                  sampling: float, bins: int, seed: int, threads: int | None) -> sitk.Transform:
    """Optimise a rigid/affine ``transform`` (in place) with regular-step gradient descent, scales from physical shift."""
    reg = _mattes_method(levels, sampling, bins, seed, threads)
    reg.SetOptimizerAsRegularStepGradientDescent(
        learningRate=1.0, minStep=1e-3, numberOfIterations=iterations, relaxationFactor=0.5,
        gradientMagnitudeTolerance=1e-8,
    )
    reg.SetOptimizerScalesFromPhysicalShift()
    reg.SetInitialTransform(transform, inPlace=True)
    with global_threads(threads):
        reg.Execute(fixed, moving)
    return transform


@contextmanager
def global_threads(threads: int | None):
    """Run with SimpleITK's global default thread count set to ``threads`` (None: unchanged).

    The registration method's own thread setting does not reach every part of the sampled metric; only
    the global default makes a seeded run repeat exactly.
    """
    if threads is None:
        yield
        return
    previous = sitk.ProcessObject_GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(threads)
    try:
        yield
    finally:
        sitk.ProcessObject_SetGlobalDefaultNumberOfThreads(previous)


def build_result(method: str, fixed: Volume, moving: Volume, transform: sitk.Transform, stages: list[str],
                 started: float) -> RegistrationResult:
    """A RegistrationResult for a fixed -> moving ``transform``: warped moving image, displacement field on the
    fixed grid, similarity before/after, Jacobian statistics, ``runtime_s`` since ``started`` (perf_counter)."""
    warped = warp.resample(moving, fixed, transform)
    before = similarity(fixed, warp.resample(moving, fixed, None))
    after = similarity(fixed, warped)
    metrics = {"ncc_before": before["ncc"], "ncc_after": after["ncc"], "mi_before": before["mi"], "mi_after": after["mi"]}
    if hasattr(transform, "GetMatrix"):  # rigid / affine: constant Jacobian, the transform says it all
        displacement = None
        metrics.update(linear_jacobian_stats(np.array(transform.GetMatrix())))
    else:
        displacement = warp.displacement_field(transform, fixed)
        metrics.update(jacobian_stats(displacement, fixed.spacing, fixed.direction))
    metrics["runtime_s"] = time.perf_counter() - started
    return RegistrationResult(method=method, warped=warped, transform=transform, displacement=displacement,
                              metrics=metrics, stages=stages)


def _affine_transform(fixed: sitk.Image, moving: sitk.Image, *, levels: int, iterations: int, sampling: float,
                      bins: int, seed: int, initializer: str, threads: int | None) -> sitk.AffineTransform:
    """Rigid (Euler3D from a centred initialiser) then affine, both by :func:`_linear_stage`."""
    rigid = sitk.CenteredTransformInitializer(fixed, moving, sitk.Euler3DTransform(), INITIALIZERS[initializer])
    rigid = sitk.Euler3DTransform(rigid)
    options = dict(levels=levels, iterations=iterations, sampling=sampling, bins=bins, seed=seed, threads=threads)
    _linear_stage(fixed, moving, rigid, **options)
    affine = sitk.AffineTransform(3)
    affine.SetCenter(rigid.GetCenter())
    affine.SetMatrix(rigid.GetMatrix())
    affine.SetTranslation(rigid.GetTranslation())
    return _linear_stage(fixed, moving, affine, **options)


def _initial_affine(fixed_image: sitk.Image, moving_image: sitk.Image, initial: sitk.Transform | None, seed: int,
                    threads: int | None) -> tuple[sitk.Transform, list[str]]:
    """``initial`` when given (stage "initial"), else a default rigid + affine registration."""
    if initial is not None:
        return initial, ["initial"]
    affine = _affine_transform(fixed_image, moving_image, levels=3, iterations=200, sampling=0.1, bins=50,
                               seed=seed, initializer="geometry", threads=threads)
    return affine, ["rigid", "affine"]


# ----------------------------------------------------------------------------------- rigid / affine
def register_rigid(fixed: Volume, moving: Volume, *, levels: int = 3, iterations: int = 200, sampling: float = 0.1,
                   bins: int = 50, seed: int = 0, initializer: str = "geometry", threads: int | None = 1
                   ) -> RegistrationResult:
    """Rigid (Euler3D: rotation about a centre + translation) registration by Mattes mutual information.

    ``levels`` resolution levels (shrink 4, 2, 1 / smoothing 2, 1, 0 mm for 3), at most ``iterations``
    regular-step gradient-descent steps per level, metric on a random ``sampling`` fraction of voxels
    drawn with ``seed``, ``bins`` histogram bins. ``initializer``: "geometry" (align image centres) or
    "moments" (align centres of mass).
    """
    started = time.perf_counter()
    fixed_image, moving_image = _float_image(fixed), _float_image(moving)
    rigid = sitk.CenteredTransformInitializer(fixed_image, moving_image, sitk.Euler3DTransform(),
                                              INITIALIZERS[initializer])
    rigid = sitk.Euler3DTransform(rigid)
    _linear_stage(fixed_image, moving_image, rigid, levels=levels, iterations=iterations, sampling=sampling,
                  bins=bins, seed=seed, threads=threads)
    return build_result("rigid", fixed, moving, rigid, ["rigid"], started)


def register_affine(fixed: Volume, moving: Volume, *, levels: int = 3, iterations: int = 200, sampling: float = 0.1,
                    bins: int = 50, seed: int = 0, initializer: str = "geometry", threads: int | None = 1
                    ) -> RegistrationResult:
    """Rigid registration, then a full 12-parameter AffineTransform started from it; parameters as :func:`register_rigid`."""
    started = time.perf_counter()
    affine = _affine_transform(_float_image(fixed), _float_image(moving), levels=levels, iterations=iterations,
                               sampling=sampling, bins=bins, seed=seed, initializer=initializer, threads=threads)
    return build_result("affine", fixed, moving, affine, ["rigid", "affine"], started)


# ----------------------------------------------------------------------------------- B-spline
def register_bspline(fixed: Volume, moving: Volume, *, mesh_size_mm: float = 30.0, iterations: int = 30,
                     levels: int = 2, sampling: float = 0.02, bins: int = 50, metric: str = "mattes", seed: int = 0,
                     initial: sitk.Transform | None = None, threads: int | None = None) -> RegistrationResult:
    """Rigid -> affine -> cubic B-spline free-form deformation, returned as one CompositeTransform.

    Coarse to fine: level ``l`` of ``levels`` works on images shrunk by 2**(levels-1-l) (smoothed by half
    that in mm) with a fresh B-spline of about ``mesh_size_mm * 2**(levels-1-l)`` mm control-point
    spacing, composed on top of the coarser levels (hierarchical refinement: the finest level ends at
    ``mesh_size_mm``). ``metric``: "mattes" (mutual information, ``bins`` bins; any modality) or
    "correlation" (same modality), on a random ``sampling`` fraction of voxels drawn with ``seed``.
    L-BFGS-B with at most ``iterations`` iterations per level. ``initial`` (fixed -> moving) replaces the
    rigid + affine stages.
    """
    started = time.perf_counter()
    fixed_image, moving_image = _float_image(fixed), _float_image(moving)
    initial, stages = _initial_affine(fixed_image, moving_image, initial, seed, threads)

    extent_mm = [n * s for n, s in zip(fixed_image.GetSize(), fixed_image.GetSpacing())]
    transforms = [initial]
    for shrink, sigma_mm in zip(*_pyramid(levels)):
        mesh = [max(1, round(e / (mesh_size_mm * shrink))) for e in extent_mm]
        bspline = sitk.BSplineTransformInitializer(fixed_image, transformDomainMeshSize=mesh, order=3)
        reg = _mattes_method(1, sampling, bins, seed, threads)
        if metric == "correlation":
            reg.SetMetricAsCorrelation()
        elif metric != "mattes":
            raise ValueError(f"metric must be 'mattes' or 'correlation', not {metric!r}")
        reg.SetShrinkFactorsPerLevel(shrinkFactors=[shrink])
        reg.SetSmoothingSigmasPerLevel(smoothingSigmas=[sigma_mm])
        reg.SetOptimizerAsLBFGSB(gradientConvergenceTolerance=1e-5, numberOfIterations=iterations,
                                 maximumNumberOfCorrections=5, maximumNumberOfFunctionEvaluations=4 * iterations,
                                 costFunctionConvergenceFactor=1e7)
        reg.SetInitialTransform(bspline, inPlace=True)
        # the moving image pre-warped through the stages so far (ITK cannot differentiate through a B-spline
        # used as moving-initial transform); the new B-spline is applied first: previous(bspline(p))
        prewarped = sitk.Resample(moving_image, fixed_image, sitk.CompositeTransform(transforms), sitk.sitkLinear,
                                  0.0, sitk.sitkFloat32)
        reg.Execute(fixed_image, prewarped)
        transforms.append(bspline)
    composite = sitk.CompositeTransform(transforms)  # applied last-first: initial(b_coarse(...(b_fine(p))))
    return build_result("bspline", fixed, moving, composite, [*stages, "bspline"], started)


# ----------------------------------------------------------------------------------- Demons
def _shrink_smooth(image: sitk.Image, shrink: int, sigma_mm: float) -> sitk.Image:
    """Gaussian smoothing (sigma in mm) then integer shrinking; the identity for shrink 1 / sigma 0."""
    if sigma_mm > 0:
        image = sitk.SmoothingRecursiveGaussian(image, sigma_mm)
    return sitk.Shrink(image, [shrink] * 3) if shrink > 1 else image


def register_demons(fixed: Volume, moving: Volume, *, iterations: int = 50, smoothing_sigma: float = 1.5,
                    levels: int = 2, histogram_levels: int = 256, match_points: int = 7, seed: int = 0,
                    initial: sitk.Transform | None = None, threads: int | None = None) -> RegistrationResult:
    """Rigid -> affine -> fast symmetric-forces Demons (same modality only), composed into one CompositeTransform.

    The moving image is resampled through the initial transform onto the fixed grid and its intensities
    matched to the fixed image (``histogram_levels`` bins, ``match_points`` quantiles). Demons then runs
    ``iterations`` per level over ``levels`` resolution levels (shrink 2**(levels-1) .. 1, smoothing
    shrink/2 mm), each level starting from the coarser field; the displacement field is smoothed with a
    Gaussian of ``smoothing_sigma`` voxels (of the level, ITK's convention) after every iteration.
    ``initial`` (fixed -> moving) replaces the rigid + affine stages; ``seed`` seeds their sampling.
    """
    started = time.perf_counter()
    fixed_image, moving_image = _float_image(fixed), _float_image(moving)
    initial, stages = _initial_affine(fixed_image, moving_image, initial, seed, threads)

    moved = sitk.Resample(moving_image, fixed_image, initial, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    moved = sitk.HistogramMatching(moved, fixed_image, numberOfHistogramLevels=histogram_levels,
                                   numberOfMatchPoints=match_points, thresholdAtMeanIntensity=True)

    demons = sitk.FastSymmetricForcesDemonsRegistrationFilter()
    demons.SetNumberOfIterations(iterations)
    demons.SetSmoothDisplacementField(True)
    demons.SetStandardDeviations(smoothing_sigma)
    if threads is not None:
        demons.SetNumberOfThreads(threads)
    field = None
    for shrink, sigma_mm in zip(*_pyramid(levels)):
        level_fixed = _shrink_smooth(fixed_image, shrink, sigma_mm)
        level_moving = _shrink_smooth(moved, shrink, sigma_mm)
        if field is None:
            field = sitk.Image(level_fixed.GetSize(), sitk.sitkVectorFloat64)
            field.CopyInformation(level_fixed)
        else:  # the coarser field, linearly interpolated onto this level's grid (values are mm: no rescaling)
            field = sitk.Resample(field, level_fixed, sitk.Transform(3, sitk.sitkIdentity), sitk.sitkLinear, 0.0,
                                  sitk.sitkVectorFloat64)
        field = demons.Execute(level_fixed, level_moving, field)  # the last level (shrink 1) is the fixed grid
    composite = sitk.CompositeTransform([initial, sitk.DisplacementFieldTransform(field)])  # initial(p + u(p))
    return build_result("demons", fixed, moving, composite, [*stages, "demons"], started)
