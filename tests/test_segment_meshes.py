"""Surface meshes per label (medical/segment/meshes.py): analytic volumes, world geometry, STL/GLB round trip."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.segment.meshes import label_mesh, label_meshes, write_label_meshes

trimesh = pytest.importorskip("trimesh")

SHAPE = (30, 44, 40)  # z, y, x
SPACING = (0.8, 1.0, 1.5)  # mm along i, j, k: anisotropic
ROTATION = Rotation.from_euler("xyz", [20, -15, 30], degrees=True).as_matrix()  # oblique


def _grid() -> tuple[Volume, np.ndarray]:
    vol = Volume(np.zeros(SHAPE, np.uint8), spacing=SPACING, origin=(10.0, -20.0, 5.0), direction=ROTATION)
    k, j, i = np.meshgrid(*[np.arange(n) for n in SHAPE], indexing="ij")
    ijk1 = np.stack([i, j, k, np.ones_like(i)], -1).reshape(-1, 4).astype(float)
    world = (vol.index_to_world_lps() @ ijk1.T).T[:, :3]  # voxel centres, LPS mm, in array (z, y, x) order
    return vol, world


def _ellipsoid(semi_axes_mm, offset_mm=(0.0, 0.0, 0.0)) -> tuple[Volume, np.ndarray, np.ndarray]:
    """Label volume (1 inside) of an ellipsoid aligned with the grid's oblique axes; its centre (LPS mm)."""
    vol, world = _grid()
    centre = world.mean(axis=0) + np.asarray(offset_mm)
    local = (world - centre) @ ROTATION  # coordinates along the rotated axes, mm
    inside = ((local / np.asarray(semi_axes_mm)) ** 2).sum(axis=1) <= 1.0
    return vol.with_array(inside.reshape(SHAPE).astype(np.uint8)), centre, world[inside]


@pytest.mark.parametrize("semi_axes", [(12.0, 12.0, 12.0), (14.0, 10.0, 8.0)], ids=["sphere", "ellipsoid"])
def test_enclosed_volume_within_2_percent_of_analytic(semi_axes):
    labels, _, _ = _ellipsoid(semi_axes)
    mesh = label_mesh(labels, 1)
    analytic_ml = 4.0 / 3.0 * np.pi * np.prod(semi_axes) / 1000.0
    assert mesh.volume_ml > 0
    assert abs(mesh.volume_ml - analytic_ml) / analytic_ml < 0.02, (mesh.volume_ml, analytic_ml)
    # the surface of a sphere of radius r is 4 pi r^2; the voxel staircase adds area, so only a loose bound
    if len(set(semi_axes)) == 1:
        assert 1.0 <= mesh.area_mm2 / (4 * np.pi * semi_axes[0] ** 2) < 1.6


def test_vertices_in_world_lps_on_oblique_anisotropic_grid():
    labels, centre, inside_world = _ellipsoid((14.0, 10.0, 8.0), offset_mm=(4.0, -3.0, 2.0))
    mesh = label_mesh(labels, 1)
    # the mesh centroid is the mask's voxel-centre centroid in world space
    tm = trimesh.Trimesh(mesh.vertices, mesh.faces, process=False)
    np.testing.assert_allclose(tm.center_mass, inside_world.mean(axis=0), atol=0.3)
    np.testing.assert_allclose(tm.center_mass, centre, atol=0.5)
    # extent along each rotated axis: the mask's outermost voxel centres plus at most half a voxel
    mesh_local = (mesh.vertices - centre) @ ROTATION
    mask_local = (inside_world - centre) @ ROTATION
    for axis in range(3):
        for pick in (np.max, np.min):
            gap = abs(pick(mesh_local[:, axis])) - abs(pick(mask_local[:, axis]))
            assert -1e-6 <= gap <= SPACING[axis] / 2 + 1e-6, (axis, gap)
    # every vertex lies within half a voxel diagonal of a mask voxel centre
    from scipy.spatial import cKDTree

    dist, _ = cKDTree(inside_world).query(mesh.vertices)
    assert dist.max() <= 0.5 * np.linalg.norm(SPACING) + 1e-6


def test_two_labels_smoothing_and_stl_glb_round_trip(tmp_path):
    labels, _, _ = _ellipsoid((12.0, 12.0, 12.0))
    array = labels.array.copy()
    array[2:6, 2:8, 2:8] = 3  # a second label, a box 4 x 6 x 6 voxels
    labels = labels.with_array(array)
    meshes = label_meshes(labels, smoothing_iterations=10)
    assert sorted(meshes) == [1, 3]
    box_ml = 4 * 6 * 6 * np.prod(SPACING) / 1000.0
    assert abs(meshes[3].volume_ml - box_ml) / box_ml < 0.15  # chamfered edges and smoothing
    written = write_label_meshes(meshes, tmp_path, "scan")
    for label, info in written.items():
        for fmt in ("stl", "glb"):
            path = tmp_path / f"scan_{label}.{fmt}"
            assert info["files"][fmt] == str(path)
            loaded = trimesh.load(path, force="mesh")
            assert loaded.is_watertight
            assert abs(loaded.volume / 1000.0 - meshes[label].volume_ml) < 1e-3
            np.testing.assert_allclose(loaded.bounds, [meshes[label].vertices.min(0), meshes[label].vertices.max(0)],
                                       atol=1e-3)
    assert not list(tmp_path.glob(".partial*"))


def test_absent_label_and_bad_input():
    labels, _, _ = _ellipsoid((8.0, 8.0, 8.0))
    assert label_mesh(labels, 7) is None
    with pytest.raises(ValueError, match="3D label volume"):
        label_mesh(Volume(np.zeros((2, 4, 4, 4), np.uint8)), 1)


@pytest.mark.parametrize("meshes", [False, True])
def test_catalog_option_writes_meshes_beside_the_nifti_mask(tmp_path, meshes):
    from types import SimpleNamespace

    from imaging_pipelines.config.segmentation import SegmentationConfig
    from imaging_pipelines.medical.stages.segmentation import write_take_away_outputs
    from imaging_pipelines.medical.stages.segmentation_data import SegmentationInput

    assert SegmentationConfig().meshes is False  # off by default
    labels, _, _ = _ellipsoid((10.0, 8.0, 6.0))
    image = labels.with_array(labels.array.astype(np.float32) * 100)
    dataset = SimpleNamespace(id="ds", formats=["nifti"],
                              segmentation=SegmentationConfig(method="otsu", dicom_seg=False, meshes=meshes))
    case = SegmentationInput(partition="p1", name="t1w", image=image, reference=None)
    surfaces: list[dict] = []
    written = write_take_away_outputs(dataset, tmp_path, "p1", case, image, labels, [], surfaces=surfaces)
    folder = tmp_path / "ds" / "segmentation_masks" / "p1"
    expected = {"t1w.nii.gz"} | ({"t1w_1.stl", "t1w_1.glb"} if meshes else set())
    assert {p.name for p in folder.iterdir()} == expected
    assert sorted(str(folder / name) for name in expected) == sorted(written)
    if meshes:
        loaded = trimesh.load(folder / "t1w_1.stl", force="mesh")
        assert abs(loaded.volume / 1000 - label_mesh(labels, 1).volume_ml) < 1e-3
        assert [(r["image"], r["label"]) for r in surfaces] == [("t1w", 1)]  # the asset's "surfaces" metadata rows
        assert surfaces[0]["enclosed_volume_ml"] == pytest.approx(label_mesh(labels, 1).volume_ml, abs=1e-3)
        assert surfaces[0]["area_mm2"] == pytest.approx(label_mesh(labels, 1).area_mm2, abs=0.1)
    else:
        assert surfaces == []


def test_surface_view_renders_each_label_in_its_colour_where_the_label_lies():
    """The report's 3D view: a PNG whose label colours appear, and where a label is absent its colour is not."""
    import io

    from PIL import Image

    from imaging_pipelines.report.figures import label_colour
    from imaging_pipelines.report.surface_view import render_surfaces, surface_meshes, surface_rows

    labels, _, _ = _ellipsoid((12.0, 9.0, 7.0))
    two = labels.array.copy()
    two[:, :, : SHAPE[2] // 2] *= 3  # half of the ellipsoid becomes label 3
    meshes = surface_meshes(labels.with_array(two))
    assert sorted(meshes) == [1, 3]
    rows = surface_rows(meshes, {1: "lesion", 3: "oedema"})
    assert [r["class"] for r in rows] == ["lesion", "oedema"] and all(r["enclosed_volume_ml"] > 0 for r in rows)
    rgb = np.asarray(Image.open(io.BytesIO(render_surfaces(meshes, {1: "lesion", 3: "oedema"}, "t1w"))).convert("RGB"))

    def share(value: int) -> float:  # fraction of pixels close to a shade of the label's colour
        colour = np.array([int(label_colour(value)[i:i + 2], 16) for i in (1, 3, 5)], float)
        unit = colour / np.linalg.norm(colour)
        pixels = rgb.reshape(-1, 3).astype(float)
        norms = np.linalg.norm(pixels, axis=1)
        cosine = (pixels @ unit) / np.where(norms > 0, norms, 1)
        return float(((cosine > 0.995) & (norms > 60) & (pixels.std(axis=1) > 20)).mean())

    assert share(1) > 0.01 and share(3) > 0.01
    assert share(2) < 0.001  # no label 2: its colour is absent
    few = surface_meshes(labels.with_array(two), max_faces=2000)  # a coarser lattice keeps big surfaces cheap
    assert sum(len(m.faces) for m in few.values()) < sum(len(m.faces) for m in meshes.values())


def test_patient_report_surfaces_section_from_a_segmentation_store(tmp_path):
    """The report section reads the stored segmentation label, draws it and tabulates area and volume."""
    from imaging_pipelines.medical.io.ome_zarr import write_volume_store
    from imaging_pipelines.report.patient import surfaces_section

    labels, _, _ = _ellipsoid((12.0, 9.0, 7.0))
    image = labels.with_array(labels.array.astype(np.float32) * 100)
    store = tmp_path / "segmentation" / "p1.zarr"
    write_volume_store(store, {"t1w": image, "t2w": image}, {"stage": "segmentation"},
                       labels={"t1w": {"segmentation": labels}, "t2w": {"segmentation": labels.with_array(labels.array * 0)}})
    summary, warnings = {}, []
    section = surfaces_section(store, {"t1w": image, "t2w": image}, {1: "lesion"}, summary, warnings)
    assert section.id == "surfaces" and len(section.figures) == 1 and not warnings
    assert "t2w: empty segmentation, no surface" in section.text
    (_, rows), = section.tables
    assert summary["surfaces"] == 1 and rows[0]["class"] == "lesion" and rows[0]["image"] == "t1w"
    assert rows[0]["enclosed_volume_ml"] == pytest.approx(label_mesh(labels, 1).volume_ml, abs=1e-3)
