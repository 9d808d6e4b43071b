"""The result of any registration method, in one shape for every backend.

Conventions: ``transform`` maps points of the FIXED image's physical space (LPS mm) to the MOVING image's
physical space (ITK's resampling convention), so ``resample(moving, reference=fixed, transform)`` gives
``warped``. ``displacement`` is the same mapping sampled on the fixed grid: array (z, y, x, 3) of LPS mm
offsets (x, y, z components) with ``point_in_moving = point_in_fixed + displacement``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imaging_pipelines.core.volume import Volume


@dataclass
class RegistrationResult:
    method: str
    warped: Volume  # moving image resampled onto the fixed grid
    transform: Any | None = None  # SimpleITK transform (fixed -> moving points); None for learned models
    displacement: np.ndarray | None = None  # (z, y, x, 3) LPS mm on the fixed grid
    metrics: dict[str, float] = field(default_factory=dict)  # similarity before/after, jacobian stats, runtime_s
    stages: list[str] = field(default_factory=list)  # e.g. ["rigid", "affine", "bspline"]
