"""Arrange the 2D images of one stack into a 3D or 4D grid and derive its geometry (LPS mm).

Slices are ordered only by ImagePositionPatient projected on the slice normal (ascending), so the
origin is the first slice along the normal and the slice spacing is positive. Several images at the
same position with equal counts per position form a time series (4D), ordered by ``time_key``.
"""

from __future__ import annotations

import statistics
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from imaging_pipelines.core.small_matrix import dot3, norm3, rows_dot

from .dicom_gaps import GapPlan, gap_plan
from .dicom_slices import SliceRecord

POSITION_TOL_MM = 0.01  # two images closer than this along the normal are at the same position


@dataclass
class StackLayout:
    """grid[t][k] is the record shown at time t, slice k; geometry in ITK index order (i, j, k), LPS."""

    grid: list[list[SliceRecord]]
    spacing: tuple[float, float, float]
    origin: tuple[float, float, float]
    direction: np.ndarray
    warnings: list[str] = field(default_factory=list)
    gaps: GapPlan | None = None  # missing slices to interpolate (see dicom_gaps)

    @property
    def is_4d(self) -> bool:
        return len(self.grid) > 1


def _cluster_positions(records: list[SliceRecord], normal: np.ndarray) -> list[list[SliceRecord]]:
    """Records sorted along the normal, grouped by (nearly) equal position, each group in time order."""
    dist = [dot3(r.position, normal) for r in records]
    order = sorted(range(len(records)), key=lambda n: (dist[n], records[n].time_key))
    groups: list[list[int]] = []
    for n in order:
        if groups and dist[n] - dist[groups[-1][0]] <= POSITION_TOL_MM:
            groups[-1].append(n)
        else:
            groups.append([n])
    clustered = [[records[n] for n in g] for g in groups]
    by_volume = _acquisitions_are_volumes(clustered)
    return [sorted(g, key=lambda r: ((r.acquisition or 0) if by_volume else 0, r.time_key)) for g in clustered]


def _acquisitions_are_volumes(groups: list[list[SliceRecord]]) -> bool:
    """True when AcquisitionNumber labels whole volumes (every position once per acquisition number, in every
    acquisition), so it can order the time points; False when it varies within volumes (some Philips DWI)."""
    if len(groups) < 1 or not all(len(g) > 1 for g in groups):
        return False
    per_position = [sorted(r.acquisition for r in g if r.acquisition is not None) for g in groups]
    if any(len(p) != len(g) or len(set(p)) != len(p) for p, g in zip(per_position, groups)):
        return False
    return all(p == per_position[0] for p in per_position)


def split_by_acquisition(records: list[SliceRecord]) -> list[list[SliceRecord]] | None:
    """If repeated positions are not a clean time series but each acquisition is a clean stack, split by acquisition."""
    normal = records[0].normal
    counts = {len(g) for g in _cluster_positions(records, normal)}
    if counts == {1} or len(counts) == 1:
        return None
    by_acq: dict = {}
    for r in records:
        by_acq.setdefault(r.acquisition, []).append(r)
    if len(by_acq) < 2:
        return None
    parts = list(by_acq.values())
    for part in parts:
        if {len(g) for g in _cluster_positions(part, normal)} != {1}:
            return None
    return [parts[i] for i in sorted(range(len(parts)), key=lambda i: (by_acq_key(parts[i])))]


def by_acq_key(part: list[SliceRecord]):
    a = part[0].acquisition
    return (a is None, a if a is not None else 0)


def layout_stack(records: list[SliceRecord]) -> StackLayout:
    """Sort, detect 4D, compute spacing/origin/direction and the warnings about the grid."""
    first = records[0]
    normal = first.normal
    warnings: list[str] = []
    groups = _cluster_positions(records, normal)
    counts = Counter(len(g) for g in groups)
    if len(counts) > 1:
        n_keep = 1
        dropped = [r.name for g in groups for r in g[1:]]
        dup = [g for g in groups if len(g) > 1]
        warnings.append(
            f"duplicate slice positions that do not form a complete time series "
            f"({len(dup)} of {len(groups)} positions repeated, e.g. {', '.join(r.name for r in dup[0])}); "
            f"kept the first image at each position and ignored {len(dropped)} file(s): "
            f"{_short_list(dropped)}"
        )
    else:
        n_keep = next(iter(counts))
    grid = [[g[t] for g in groups] for t in range(n_keep)]

    # Positions of the slices (first time point), projected on the normal.
    pos = np.array([r.position for r in grid[0]], dtype=float)
    dist = rows_dot(pos, normal)
    nz = len(grid[0])
    origin = pos[0]
    if nz == 1:
        dz = first.nominal_spacing or 1.0
    else:
        steps = np.diff(dist)
        typical = statistics.median(steps.tolist())  # not np.median: it imports numpy.ma (~18 ms, MiBs)
        tol = max(1e-3, 0.01 * typical)
        irregular = np.flatnonzero(np.abs(steps - typical) > tol)
        if irregular.size == 0:
            dz, origin = _uniform_step(grid[0], pos, dist, normal)
        else:
            dz = typical
            gaps = gap_plan(dist, typical) if not first.multiframe and first.tile is None else None
            if gaps is not None:
                for n in irregular[:10]:
                    warnings.append(
                        f"missing slices: gap of {float(steps[n]):.3f} mm between {grid[0][n].name} and "
                        f"{grid[0][n + 1].name} (expected {gaps.step:.3f} mm; "
                        f"{round(float(steps[n]) / gaps.step) - 1} slice(s) missing); resampled onto a uniform "
                        f"grid, interpolated slice(s) k = {', '.join(str(k) for k in gaps.filled[:20])}")
                return StackLayout(grid=grid, spacing=(float(first.pixel_spacing[1]), float(first.pixel_spacing[0]),
                                                       gaps.step),
                                   origin=tuple(float(x) for x in pos[0]),
                                   direction=np.column_stack([first.row_cos, first.col_cos, normal]),
                                   warnings=warnings, gaps=gaps)
            for n in irregular[:10]:
                gap = float(steps[n])
                missing = round(gap / typical) - 1 if typical > 0 else 0
                hint = f"; about {missing} slice(s) missing" if missing >= 1 else ""
                warnings.append(
                    f"non-uniform slice spacing: gap of {gap:.3f} mm between {grid[0][n].name} and "
                    f"{grid[0][n + 1].name} (expected {typical:.3f} mm{hint}); volume uses {typical:.3f} mm "
                    f"spacing, so slices after the gap are misplaced"
                )
            if irregular.size > 10:
                warnings.append(f"non-uniform slice spacing: {irregular.size - 10} more irregular gap(s)")
        # gantry tilt / shear: the slice-to-slice step is not along the normal
        step = (pos[-1] - pos[0]) / (nz - 1)
        along = dot3(step, normal)
        inplane = step - along * normal
        shift = norm3(inplane)
        if shift > max(1e-3, 1e-3 * abs(along)):
            angle = float(np.degrees(np.arctan2(shift, abs(along))))
            warnings.append(
                f"gantry tilt / sheared slice stack: each slice is shifted {shift:.3f} mm in-plane "
                f"({angle:.2f} degrees) from {grid[0][0].name} to {grid[0][-1].name}; not resampled, the volume "
                f"uses the slice spacing along the normal ({along:.3f} mm) so positions away from the first "
                f"slice are off by up to {shift * (nz - 1):.1f} mm"
            )
    if dz <= 0:
        dz = first.nominal_spacing or 1.0
    direction = np.column_stack([first.row_cos, first.col_cos, normal])
    spacing = (float(first.pixel_spacing[1]), float(first.pixel_spacing[0]), float(dz))
    return StackLayout(grid=grid, spacing=spacing, origin=tuple(float(x) for x in origin), direction=direction, warnings=warnings)


def _uniform_step(records: list[SliceRecord], pos: np.ndarray, dist: np.ndarray,
                  normal: np.ndarray) -> tuple[float, np.ndarray]:
    """(slice spacing mm, origin LPS) of a uniformly spaced stack.

    Single-frame files follow dcm2niix: the spacing is the distance between the image it reads first (lowest
    InstanceNumber, at one end of the stack) and its neighbour, and that image sits exactly at its position.
    Frames of multi-frame files and mosaic tiles use the mean spacing from the first to the last slice.
    """
    nz = len(records)
    if records[0].multiframe or records[0].tile is not None:
        return float((dist[-1] - dist[0]) / (nz - 1)), pos[0]
    if records[-1].time_key[3] < records[0].time_key[3]:  # the first image read is the last along the normal
        dz = float(dist[-1] - dist[-2])
        return dz, pos[-1] - (nz - 1) * dz * normal
    return float(dist[1] - dist[0]), pos[0]


def _short_list(names: list[str], limit: int = 5) -> str:
    if len(names) <= limit:
        return ", ".join(names)
    return ", ".join(names[:limit]) + f", ... ({len(names) - limit} more)"
