"""Optional elastix backend (itk-elastix): the classic affine + B-spline parameter maps.

Install with ``pip install -c constraints.txt 'imaging_pipelines[elastix]'``. ``itk`` is imported only
inside these functions, so the rest of the package never needs it.

elastix's transform, like ours, maps FIXED points to MOVING points; its deformation field (transformix)
is the displacement ``point_in_moving - point_in_fixed`` in LPS mm on the fixed grid, i.e. exactly our
convention. The result's ``transform`` is a SimpleITK DisplacementFieldTransform built from that field, so
:mod:`~imaging_pipelines.medical.register.warp` and :mod:`~imaging_pipelines.medical.register.transform_io` work with it.
"""

from __future__ import annotations

import tempfile
import time
from typing import Any

import numpy as np

from imaging_pipelines.medical.register import warp
from imaging_pipelines.medical.register.classical import build_result
from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume

INSTALL_HINT = "elastix backend needs: pip install -c constraints.txt 'imaging_pipelines[elastix]'"


def _itk() -> Any:
    try:
        import itk  # noqa: PLC0415 - the optional dependency is imported only here
    except ImportError as exc:
        raise ImportError(INSTALL_HINT) from exc
    return itk


def available() -> bool:
    """True when ``itk`` with elastix can be imported."""
    try:
        _itk().ElastixRegistrationMethod  # noqa: B018 - loads the elastix module
    except (ImportError, AttributeError):
        return False
    return True


def to_itk(volume: Volume) -> Any:
    """A float32 itk.Image with the volume's spacing, origin and direction (LPS, index order i, j, k)."""
    itk = _itk()
    image = itk.image_from_array(np.ascontiguousarray(volume.array, dtype=np.float32))
    image.SetSpacing([float(s) for s in volume.spacing])
    image.SetOrigin([float(o) for o in volume.origin])
    image.SetDirection(itk.matrix_from_array(np.ascontiguousarray(volume.direction, dtype=np.float64)))
    return image


def parameter_maps(*, resolutions: int = 3, iterations: int = 256, grid_spacing_mm: float = 20.0,
                   samples: int = 2048, seed: int = 0) -> Any:
    """elastix's default affine map then its default B-spline map (AdvancedMattesMutualInformation +
    bending energy, AdaptiveStochasticGradientDescent), ``resolutions`` levels, ``iterations`` per level,
    final control-point spacing ``grid_spacing_mm`` mm, ``samples`` random samples per iteration, ``seed``."""
    itk = _itk()
    maps = itk.ParameterObject.New()
    for name in ("affine", "bspline"):
        extra = (float(grid_spacing_mm),) if name == "bspline" else ()
        params = maps.GetDefaultParameterMap(name, resolutions, *extra)
        params["MaximumNumberOfIterations"] = [str(iterations)]
        params["NumberOfSpatialSamples"] = [str(samples)]
        params["RandomSeed"] = [str(seed)]
        params["WriteResultImage"] = ["false"]
        maps.AddParameterMap(params)
    return maps


def register_elastix(fixed: Volume, moving: Volume, *, resolutions: int = 3, iterations: int = 256,
                     grid_spacing_mm: float = 20.0, samples: int = 2048, seed: int = 0,
                     threads: int | None = None) -> RegistrationResult:
    """Affine then B-spline registration with elastix; see :func:`parameter_maps` for the parameters.

    Fills the same ``metrics`` as the SimpleITK methods (similarity before/after, Jacobian statistics of
    the displacement field on the fixed grid, ``runtime_s``).
    """
    itk = _itk()
    started = time.perf_counter()
    fixed_itk, moving_itk = to_itk(fixed), to_itk(moving)
    maps = parameter_maps(resolutions=resolutions, iterations=iterations, grid_spacing_mm=grid_spacing_mm,
                          samples=samples, seed=seed)
    options = {"number_of_threads": threads} if threads else {}
    _, result_maps = itk.elastix_registration_method(fixed_itk, moving_itk, parameter_object=maps,
                                                     log_to_console=False, **options)
    with tempfile.TemporaryDirectory() as scratch:  # transformix writes deformationField.nii to its output directory
        field = itk.transformix_deformation_field(moving_itk, result_maps, output_directory=scratch)
    displacement = np.asarray(itk.array_from_image(field), dtype=np.float32)  # (z, y, x, 3) LPS mm

    transform = warp.displacement_field_transform(displacement, fixed)
    return build_result("elastix", fixed, moving, transform, ["affine", "bspline"], started)
