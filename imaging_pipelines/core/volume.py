"""The `Volume` value type: a voxel array that carries its geometry.

Conventions (the same as SimpleITK / ITK, and used everywhere in this package):

* ``array`` is indexed ``[k, j, i]`` (z, y, x), or ``[t, k, j, i]`` for a time series:
  the layout of ``SimpleITK.GetArrayFromImage`` and of OME-Zarr's ``(t, z, y, x)`` axes.
* ``spacing``, ``origin`` and the columns of ``direction`` are given in index order
  ``(i, j, k)``, i.e. ``spacing[0]`` is the step along the array's *last* axis.
* World coordinates are patient **LPS** millimetres (DICOM / ITK convention):
  ``world = origin + direction @ (spacing * [i, j, k])``.
* ``direction`` is a 3x3 matrix whose column ``c`` is the unit vector of index axis ``c``.
* NIfTI affines are RAS; the LPS <-> RAS flip lives only in :func:`Volume.to_nifti_affine`
  and :func:`Volume.from_nifti_affine`.
* ``time_step`` is the interval between volumes in seconds (``None`` for 3D volumes).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from imaging_pipelines.core.small_matrix import matmul

LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True, eq=False)
class Volume:
    """A 3D (or 3D + time) image with its voxel-to-world geometry in LPS millimetres."""

    array: np.ndarray
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: np.ndarray = field(default_factory=lambda: np.eye(3))
    time_step: float | None = None
    warnings: tuple[str, ...] = ()
    attributes: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim not in (3, 4):
            raise ValueError(f"Volume array must be 3D or 4D (t, z, y, x); got shape {self.array.shape}")
        direction = np.asarray(self.direction, dtype=float).reshape(3, 3)
        object.__setattr__(self, "direction", direction)
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "origin", tuple(float(o) for o in self.origin))
        if any(s <= 0 or not np.isfinite(s) for s in self.spacing):
            raise ValueError(f"Volume spacing must be positive and finite; got {self.spacing}")

    # ----------------------------------------------------------------- properties
    @property
    def is_timeseries(self) -> bool:
        return self.array.ndim == 4

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """Shape of one 3D volume in array order (z, y, x)."""
        return tuple(self.array.shape[-3:])  # type: ignore[return-value]

    @property
    def n_timepoints(self) -> int:
        return self.array.shape[0] if self.is_timeseries else 1

    def index_to_world_lps(self) -> np.ndarray:
        """4x4 matrix mapping homogeneous (i, j, k, 1) to LPS world millimetres."""
        m = np.eye(4)
        m[:3, :3] = matmul(self.direction, np.diag(self.spacing))  # no BLAS (small_matrix)
        m[:3, 3] = self.origin
        return m

    def orientation_code(self) -> str:
        """Three-letter code of the world direction each index axis (i, j, k) points to, RAS+ style ("RAS", "LPS", ...)."""
        import nibabel as nib

        return "".join(nib.aff2axcodes(self.to_nifti_affine()))

    def with_array(self, array: np.ndarray) -> Volume:
        """Same geometry, new voxels (spatial shape must match)."""
        if tuple(array.shape[-3:]) != self.spatial_shape:
            raise ValueError(f"new array shape {array.shape} does not match spatial shape {self.spatial_shape}")
        return replace(self, array=array, time_step=self.time_step if array.ndim == 4 else None)

    def timepoint(self, t: int) -> Volume:
        """One 3D volume of a time series."""
        if not self.is_timeseries:
            return self
        return replace(self, array=self.array[t], time_step=None)

    # ----------------------------------------------------------------- NIfTI
    def to_nifti_affine(self) -> np.ndarray:
        """4x4 RAS affine for nibabel, for data indexed [i, j, k] (use :meth:`nifti_data`)."""
        m = self.index_to_world_lps()
        flip = np.eye(4)
        flip[:3, :3] = LPS_TO_RAS
        return matmul(flip, m)

    def nifti_data(self) -> np.ndarray:
        """The voxels in NIfTI/nibabel order [i, j, k] (or [i, j, k, t])."""
        return np.transpose(self.array, tuple(range(self.array.ndim))[::-1])

    @classmethod
    def from_nifti(
        cls, data: np.ndarray, affine_ras: np.ndarray, time_step: float | None = None, **kwargs: Any
    ) -> Volume:
        """Build a Volume from nibabel-ordered data [i, j, k(, t)] and its RAS affine."""
        data = np.asarray(data)
        if data.ndim == 5 and data.shape[3] == 1:  # NIfTI stores time as the 4th dim, components 5th
            data = data[:, :, :, 0, :]
        if data.ndim == 2:
            data = data[:, :, None]
        if data.ndim == 4 and data.shape[3] == 1:
            data = data[..., 0]
        if data.ndim not in (3, 4):
            raise ValueError(f"unsupported NIfTI data shape {data.shape}")
        spacing, origin, direction = cls.geometry_from_nifti_affine(affine_ras)
        array = np.transpose(data, tuple(range(data.ndim))[::-1])
        return cls(
            array=array,
            spacing=spacing,
            origin=origin,
            direction=direction,
            time_step=time_step if data.ndim == 4 else None,
            **kwargs,
        )

    @staticmethod
    def geometry_from_nifti_affine(affine_ras: np.ndarray) -> tuple[tuple, tuple, np.ndarray]:
        """Split a RAS affine into LPS (spacing, origin, direction). Shear is not representable and raises."""
        lps = LPS_TO_RAS @ np.asarray(affine_ras, dtype=float)[:3, :4]
        rot_zoom = lps[:, :3]
        spacing = np.linalg.norm(rot_zoom, axis=0)
        if np.any(spacing == 0):
            raise ValueError("affine has a zero-length axis")
        direction = rot_zoom / spacing
        if not np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
            raise ValueError("affine has shear; Volume needs orthogonal axes")
        return tuple(spacing), tuple(lps[:, 3]), direction

    # ----------------------------------------------------------------- SimpleITK
    def to_sitk(self):
        """A SimpleITK image (3D; a time series becomes a 4D image with unit time spacing = time_step)."""
        import SimpleITK as sitk

        img = sitk.GetImageFromArray(np.ascontiguousarray(self.array), isVector=False)
        if self.is_timeseries:
            img.SetSpacing((*self.spacing, float(self.time_step or 1.0)))
            img.SetOrigin((*self.origin, 0.0))
            d4 = np.eye(4)
            d4[:3, :3] = self.direction
            img.SetDirection(tuple(d4.ravel()))
        else:
            img.SetSpacing(self.spacing)
            img.SetOrigin(self.origin)
            img.SetDirection(tuple(self.direction.ravel()))
        return img

    @classmethod
    def from_sitk(cls, image, **kwargs: Any) -> Volume:
        """Build a Volume from a 3D or 4D SimpleITK image (4th dimension = time)."""
        import SimpleITK as sitk

        if image.GetNumberOfComponentsPerPixel() != 1:
            raise ValueError("vector-valued images are not supported")
        array = sitk.GetArrayFromImage(image)
        dim = image.GetDimension()
        if dim == 2:
            array = array[None]
            spacing = (*image.GetSpacing(), 1.0)
            origin = (*image.GetOrigin(), 0.0)
            d2 = np.asarray(image.GetDirection()).reshape(2, 2)
            direction = np.eye(3)
            direction[:2, :2] = d2
            return cls(array=array, spacing=spacing, origin=origin, direction=direction, **kwargs)
        if dim == 4:
            d4 = np.asarray(image.GetDirection()).reshape(4, 4)
            return cls(
                array=array,
                spacing=image.GetSpacing()[:3],
                origin=image.GetOrigin()[:3],
                direction=d4[:3, :3],
                time_step=image.GetSpacing()[3],
                **kwargs,
            )
        return cls(
            array=array,
            spacing=image.GetSpacing(),
            origin=image.GetOrigin(),
            direction=np.asarray(image.GetDirection()).reshape(3, 3),
            **kwargs,
        )

    # ----------------------------------------------------------------- misc
    def same_geometry(self, other: Volume, atol_mm: float = 1e-3) -> bool:
        """True when both volumes have the same spatial shape and voxel-to-world mapping (within atol_mm)."""
        if self.spatial_shape != other.spatial_shape:
            return False
        corners = np.array(
            [[i, j, k, 1.0] for i in (0, self.spatial_shape[2] - 1) for j in (0, self.spatial_shape[1] - 1)
             for k in (0, self.spatial_shape[0] - 1)]
        ).T
        a = self.index_to_world_lps() @ corners
        b = other.index_to_world_lps() @ corners
        return bool(np.max(np.abs(a - b)) <= atol_mm)

    def __repr__(self) -> str:
        return (
            f"Volume(shape={self.array.shape}, dtype={self.array.dtype}, spacing={tuple(round(s, 4) for s in self.spacing)},"
            f" orientation={self.orientation_code()}, time_step={self.time_step})"
        )


def require_same_grid(reference: Volume, other: Volume, what: str, hint: str) -> None:
    """Raise ValueError (naming ``what`` and both grids, then ``hint``) unless ``other`` is a 3D volume on
    ``reference``'s grid."""
    if other.is_timeseries:
        raise ValueError(f"{what} must be a 3D volume; got shape {other.array.shape}")
    if not reference.same_geometry(other):
        raise ValueError(
            f"{what} is not on the grid of the image (image {reference.spatial_shape} spacing {reference.spacing} "
            f"origin {reference.origin}; {what} {other.spatial_shape} spacing {other.spacing} origin "
            f"{other.origin}); {hint}"
        )
