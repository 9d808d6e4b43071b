"""One entry point for every registration backend: ``register(fixed, moving, method, **params)``."""

from __future__ import annotations

from typing import Any, Callable

from imaging_pipelines.medical.register import classical, elastix
from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume

_BACKENDS: dict[str, Callable[..., RegistrationResult]] = {
    "rigid": classical.register_rigid,
    "affine": classical.register_affine,
    "bspline": classical.register_bspline,
    "demons": classical.register_demons,
    "elastix": elastix.register_elastix,  # needs the optional `itk-elastix` package (imported when called)
}
METHODS: tuple[str, ...] = tuple(_BACKENDS)


def register(fixed: Volume, moving: Volume, method: str = "rigid", **params: Any) -> RegistrationResult:
    """Register ``moving`` onto ``fixed`` with one of :data:`METHODS`; ``params`` go to that backend's function.

    The result's transform maps fixed-space points to moving-space points (LPS mm); see
    :mod:`imaging_pipelines.medical.register.result`.
    """
    try:
        backend = _BACKENDS[method]
    except KeyError:
        raise ValueError(f"unknown registration method {method!r}; choose one of {', '.join(METHODS)}") from None
    return backend(fixed, moving, **params)
