"""Diffusion weighting of DICOM images: b-value (s/mm^2) and gradient direction, per vendor, and the FSL-style
``.bval`` / ``.bvec`` values of a 4D volume (directions in image space), as dcm2niix writes them.

Gradient sources (each turned into a unit vector in patient LPS coordinates):

* standard DiffusionBValue (0018,9087) / DiffusionGradientOrientation (0018,9089), top level or, in enhanced
  objects, in the frame's MRDiffusionSequence (0018,9117): LPS already;
* Siemens CSA ``B_value`` / ``DiffusionGradientDirection``: LPS;
* GE (0043,1039)[0] b-value, (0019,10BB/10BC/10BD) direction in image axes: with column phase encoding
  ``v1 * row + v2 * col - v3 * normal`` (row phase encoding: ``v2 * row - v1 * col - v3 * normal``), dcm2niix's
  ``geCorrectBvecs`` expressed in patient space (validated on axial data);
* UIH (0065,1009) b-value, (0065,1037) direction in image axes (row, col, normal);
* Philips (2001,1003) b-value, (2005,10B0/10B1/10B2) direction along RL, AP, FH (= LPS axes).

``.bvec`` components are along the written volume's voxel axes i, j, k (row, column, slice directions), with the
first one negated when the voxel-to-world matrix has a positive determinant (FSL convention, as dcm2niix).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imaging_pipelines.core.small_matrix import det3, matmul, norm3

PHILIPS_B = 0x20011003
PHILIPS_DIRECTION = (0x200510B0, 0x200510B1, 0x200510B2)  # RL, AP, FH: LPS axes
DIFFUSION_TAGS = ["DiffusionBValue", "DiffusionGradientOrientation", 0x00431039, 0x001910BB, 0x001910BC, 0x001910BD,
                  0x00651009, 0x00651037, "InPlanePhaseEncodingDirection", PHILIPS_B, *PHILIPS_DIRECTION]


def _numbers(value: Any) -> list[float] | None:
    if value is None:
        return None
    value = getattr(value, "value", value)
    if isinstance(value, bytes):  # FL/FD private element read without its VR
        if len(value) in (4, 8):
            import struct

            return [struct.unpack("<f" if len(value) == 4 else "<d", value)[0]]
        return None
    if isinstance(value, (str, int, float)):
        value = [value]
    try:
        out = [float(v) for v in value]
    except (TypeError, ValueError):
        return None
    return out if out and all(np.isfinite(out)) else None


def _unit(v: np.ndarray) -> np.ndarray | None:
    n = norm3(v)
    return v / n if n > 1e-6 else None


def _siemens_csa(ds: Any) -> tuple[float, np.ndarray | None] | None:
    if "SIEMENS" not in str(ds.get("Manufacturer", "") or "").upper():
        return None
    if "DIFFUSION" not in [str(v).upper() for v in (ds.get("ImageType") or [])]:
        return None
    from .dicom_mosaic import siemens_csa_image

    csa = siemens_csa_image(ds)
    if not csa:
        return None
    b = _numbers(csa.get("tags", {}).get("B_value", {}).get("items"))
    g = _numbers(csa.get("tags", {}).get("DiffusionGradientDirection", {}).get("items"))
    if b is None:
        return None
    return b[0], _unit(np.asarray(g[:3])) if g and len(g) >= 3 else None


def classic_gradient(ds: Any, row: np.ndarray, col: np.ndarray, normal: np.ndarray
                     ) -> tuple[float, np.ndarray | None] | None:
    """(b-value, LPS unit gradient or None for b=0 / isotropic) of a single-frame image, or None if not diffusion."""
    manufacturer = str(ds.get("Manufacturer", "") or "").upper()
    b = _numbers(ds.get("DiffusionBValue"))
    g = _numbers(ds.get("DiffusionGradientOrientation"))
    if b is not None and g and len(g) >= 3:
        return b[0], _unit(np.asarray(g[:3]))
    vendor = _vendor_gradient(ds, manufacturer, row, col, normal)
    if vendor is None and b is not None:
        return b[0], None
    return vendor


def _vendor_gradient(ds: Any, manufacturer: str, row: np.ndarray, col: np.ndarray, normal: np.ndarray
                     ) -> tuple[float, np.ndarray | None] | None:
    if manufacturer.startswith("GE"):
        bv = _numbers(ds.get(0x00431039))
        g = [_numbers(ds.get(t)) for t in (0x001910BB, 0x001910BC, 0x001910BD)]
        if bv is None or any(v is None for v in g):
            return None
        b0 = bv[0] % 1e9 if bv[0] >= 1e9 else bv[0]
        v1, v2, v3 = (v[0] for v in g)
        if str(ds.get("InPlanePhaseEncodingDirection", "COL") or "COL").upper().startswith("ROW"):
            world = v2 * row - v1 * col - v3 * normal
        else:
            world = v1 * row + v2 * col - v3 * normal
        return b0, _unit(world)
    if "PHILIPS" in manufacturer:
        bv = _numbers(ds.get(PHILIPS_B))
        g = [_numbers(ds.get(t)) for t in PHILIPS_DIRECTION]
        if bv is None:
            return None
        world = np.array([v[0] for v in g]) if all(v is not None for v in g) else np.zeros(3)
        return bv[0], _unit(world)
    if "UIH" in manufacturer:
        bv, g = _numbers(ds.get(0x00651009)), _numbers(ds.get(0x00651037))
        if bv is None:
            return None
        world = g[0] * row + g[1] * col + g[2] * normal if g and len(g) >= 3 else np.zeros(3)
        return bv[0], _unit(world)
    return _siemens_csa(ds)


def frame_gradient(diffusion_item: Any) -> tuple[float, np.ndarray | None] | None:
    """(b-value, LPS unit gradient or None) from an enhanced frame's MRDiffusionSequence item."""
    if diffusion_item is None:
        return None
    b = _numbers(diffusion_item.get("DiffusionBValue"))
    if b is None:
        return None
    seq = diffusion_item.get("DiffusionGradientDirectionSequence")
    g = _numbers(seq[0].get("DiffusionGradientOrientation")) if seq else None
    return b[0], _unit(np.asarray(g[:3])) if g and len(g) >= 3 else None


def fsl_gradients(gradients: list[tuple[float, np.ndarray | None] | None],
                  direction: np.ndarray) -> tuple[list[float], np.ndarray] | None:
    """(b-values, 3 x n image-space unit vectors) of the volumes, or None when no volume is diffusion weighted.

    ``direction``: the volume's 3x3 LPS direction matrix (columns = voxel axes i, j, k)."""
    if not gradients or any(g is None for g in gradients) or not any(g[0] > 0 for g in gradients):
        return None
    flip_x = det3(direction) > 0
    bvals, vecs = [], []
    for b, g in gradients:
        bvals.append(float(b))
        if g is None or b <= 0:
            vecs.append(np.zeros(3))
            continue
        v = matmul(np.asarray(direction).T, np.asarray(g, dtype=float)[:, None])[:, 0]
        if flip_x:
            v[0] = -v[0]
        vecs.append(v / norm3(v))
    out = np.array(vecs).T
    out[np.abs(out) < 1e-7] = 0.0
    return bvals, out


def bval_bvec_text(bvals: list[float], bvecs: np.ndarray) -> tuple[str, str]:
    """The two files as dcm2niix writes them with BIDS output: ``%g`` values separated by spaces."""
    bval = " ".join(f"{b:g}" for b in bvals) + "\n"
    bvec = "".join(" ".join(f"{x:g}" for x in row) + "\n" for row in bvecs)
    return bval, bvec


def drop_derived_trace(grid: list[list[Any]]) -> tuple[list[list[Any]], int]:
    """The time points of a Philips diffusion stack without its derived isotropic (trace/ADC) volumes, which
    have b > 0 and no gradient direction (dcm2niix ``removeADC``), and how many were left out. Nothing is left out
    when fewer than two diffusion volumes would remain."""
    if len(grid) < 2:
        return grid, 0
    manufacturer = str(grid[0][0].source.dataset.get("Manufacturer", "") or "").upper()
    gradients = [row[0].gradient for row in grid]
    if "PHILIPS" not in manufacturer or any(g is None for g in gradients):
        return grid, 0
    trace = [n for n, (b, g) in enumerate(gradients) if b > 0 and g is None]
    if not trace or len(grid) - len(trace) < 2:
        return grid, 0
    return [row for n, row in enumerate(grid) if n not in trace], len(trace)
