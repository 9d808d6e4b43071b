"""Offscreen 3D view of segmentation surfaces for the patient report (matplotlib ``mplot3d``, Agg canvas; no
network, no GPU, no viewer plug-in: the PNG is embedded in the self-contained HTML page).

Meshes come from :func:`imaging_pipelines.medical.segment.meshes.label_meshes`: vertices in world LPS mm
(x grows to the patient's left, y to posterior, z to superior). The view looks from the patient's
anterior-right, above (azimuth and elevation below), axes are labelled in LPS mm and scaled equally so
shapes are not distorted. Faces are flat-shaded by a fixed light; each label has the report's colour
(:func:`~imaging_pipelines.report.figures.label_colour`). Large surfaces are contoured on a coarser
marching-cubes lattice (``max_faces``) so a report stays fast.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.patches import Patch
from mpl_toolkits.mplot3d.art3d import Poly3DCollection

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.report.figures import label_colour, new_figure, png_bytes

AZIMUTH_DEG = -60.0  # matplotlib azimuth of the camera around the S axis
ELEVATION_DEG = 20.0
LIGHT_LPS = np.array([-0.4, -0.6, 0.7])  # light from anterior-right-superior
MAX_FACES = 40_000


def surface_meshes(labels: Volume, max_faces: int = MAX_FACES) -> dict:
    """``{label value: LabelMesh}`` of every non-zero label of ``labels`` (LPS mm), contoured at the
    finest marching-cubes step (1, 2, 3 voxels) whose meshes have at most ``max_faces`` faces in all."""
    from imaging_pipelines.medical.segment.meshes import label_meshes

    meshes: dict = {}
    for step in (1, 2, 3):
        meshes = label_meshes(labels, step_size=step)
        if sum(len(m.faces) for m in meshes.values()) <= max_faces:
            break
    return meshes


def _shade(rgb: tuple[float, float, float], normals: np.ndarray) -> np.ndarray:
    light = LIGHT_LPS / np.linalg.norm(LIGHT_LPS)
    lambert = np.clip(np.abs(normals @ light), 0.0, 1.0)  # two-sided: inner faces seen through gaps are lit too
    intensity = 0.35 + 0.65 * lambert
    return np.clip(np.outer(intensity, rgb), 0.0, 1.0)


def render_surfaces(meshes: Mapping[int, object], label_names: Mapping[int, str] | None = None,
                    title: str = "") -> bytes:
    """PNG of the meshes (``{label: LabelMesh}``, vertices LPS mm) seen from anterior-right-superior, axes in
    LPS mm with equal scale and a legend naming each label (``label_names``: value -> name)."""
    fig = new_figure(5.0, 4.6)
    ax = fig.add_subplot(1, 1, 1, projection="3d")
    lows, highs, legend = [], [], []
    for value, mesh in sorted(meshes.items()):
        triangles = mesh.vertices[mesh.faces]  # (m, 3 corners, 3 coordinates)
        normals = np.cross(triangles[:, 1] - triangles[:, 0], triangles[:, 2] - triangles[:, 0])
        lengths = np.linalg.norm(normals, axis=1, keepdims=True)
        normals = normals / np.where(lengths > 0, lengths, 1.0)
        colour = to_rgb(label_colour(value))
        ax.add_collection3d(Poly3DCollection(triangles, facecolors=_shade(colour, normals), edgecolors="none"))
        legend.append(Patch(color=colour, label=(label_names or {}).get(value, f"label {value}")))
        lows.append(mesh.vertices.min(axis=0))
        highs.append(mesh.vertices.max(axis=0))
    if lows:
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        centre, half = (low + high) / 2.0, max(float((high - low).max()) / 2.0, 1.0) * 1.05
        for setter, c in zip((ax.set_xlim, ax.set_ylim, ax.set_zlim), centre):
            setter(c - half, c + half)
        ax.set_box_aspect((1, 1, 1))
        ax.legend(handles=legend, loc="upper left", fontsize=7)
    ax.view_init(elev=ELEVATION_DEG, azim=AZIMUTH_DEG)
    ax.set_xlabel("x: R -> L (mm)", fontsize=7)
    ax.set_ylabel("y: A -> P (mm)", fontsize=7)
    ax.set_zlabel("z: I -> S (mm)", fontsize=7)
    ax.tick_params(labelsize=6)
    if title:
        ax.set_title(title, fontsize=9)
    return png_bytes(fig)


def surface_rows(meshes: Mapping[int, object], label_names: Mapping[int, str] | None = None) -> list[dict]:
    """One :func:`~imaging_pipelines.medical.segment.meshes.mesh_summary` row per mesh (area mm^2, volume mL)."""
    from imaging_pipelines.medical.segment.meshes import mesh_summary

    return [mesh_summary(mesh, dict(label_names or {})) for _, mesh in sorted(meshes.items())]
