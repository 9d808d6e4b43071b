"""Volume geometry conversions, NIfTI/NRRD reading, OME-Zarr round trips and atomic publication."""

from __future__ import annotations

import json
import shutil

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk
import zarr
from upath import UPath

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.medical.io.image_files import read_image_file, write_nifti
from imaging_pipelines.medical.io.ome_zarr import pyramid_factors, read_volume_store, write_volume_store
from imaging_pipelines.core.storage import atomic_store, wait_for_background_removals
from imaging_pipelines.core.volume import Volume


def oblique_volume(t: int | None = None) -> Volume:
    rng = np.random.default_rng(0)
    angle = np.deg2rad(17.0)
    direction = np.array([[np.cos(angle), 0, np.sin(angle)], [0, 1, 0], [-np.sin(angle), 0, np.cos(angle)]])
    shape = (t, 12, 40, 36) if t else (12, 40, 36)
    return Volume(
        rng.integers(-1000, 2000, shape).astype(np.int16),
        spacing=(0.8, 0.9, 2.5), origin=(-10.5, 20.25, 33.0), direction=direction, time_step=2.0 if t else None,
    )


def test_world_mapping_follows_lps_convention():
    v = oblique_volume()
    ijk = np.array([3, 5, 7])
    expected = np.array(v.origin) + v.direction @ (np.array(v.spacing) * ijk)
    assert np.allclose(v.index_to_world_lps() @ [*ijk, 1], [*expected, 1])
    ras = v.to_nifti_affine() @ [*ijk, 1]
    assert np.allclose(ras[:3], expected * [-1, -1, 1])  # RAS = LPS with x, y negated


def test_sitk_round_trip_matches_sitk_physical_points():
    v = oblique_volume()
    img = v.to_sitk()
    assert np.allclose(img.TransformIndexToPhysicalPoint((3, 5, 7)), (v.index_to_world_lps() @ [3, 5, 7, 1])[:3])
    back = Volume.from_sitk(img)
    assert back.same_geometry(v, atol_mm=1e-9) and np.array_equal(back.array, v.array)
    series = oblique_volume(t=3)
    back4 = Volume.from_sitk(series.to_sitk())
    assert back4.is_timeseries and back4.time_step == 2.0 and back4.same_geometry(series)


def test_nifti_round_trip_keeps_affine_and_time(tmp_path):
    v = oblique_volume(t=4)
    write_nifti(v, tmp_path / "x.nii.gz")
    img = nib.load(tmp_path / "x.nii.gz")
    assert np.allclose(img.affine, v.to_nifti_affine()) and img.shape == (36, 40, 12, 4)
    back = read_image_file(tmp_path / "x.nii.gz")
    assert back.same_geometry(v) and np.array_equal(back.array, v.array) and back.time_step == pytest.approx(2.0)


def test_nrrd_matches_sitk_geometry(shared_data):
    path = shared_data / "medical" / "brain_tumour_mr" / "brain1_image.nrrd"
    v = read_image_file(path)
    img = sitk.ReadImage(str(path))
    assert v.spatial_shape == img.GetSize()[::-1]
    assert np.allclose(v.index_to_world_lps() @ [10, 20, 3, 1], [*img.TransformIndexToPhysicalPoint((10, 20, 3)), 1])


def test_nifti_with_nans_warns_naming_the_file(tmp_path):
    data = np.ones((8, 8, 4), np.float32)
    data[1, 2, 3] = np.nan
    nib.save(nib.Nifti1Image(data, np.eye(4)), tmp_path / "sub-9_bold.nii.gz")
    v = read_image_file(tmp_path / "sub-9_bold.nii.gz")
    assert any("sub-9_bold.nii.gz" in w and "1 NaN" in w for w in v.warnings)


def test_unreadable_and_oversized_files_raise_clear_errors(tmp_path):
    (tmp_path / "junk.nii.gz").write_bytes(b"not gzip at all")
    with pytest.raises(ImagingInputError, match="junk.nii.gz: cannot read NIfTI"):
        read_image_file(tmp_path / "junk.nii.gz")
    hdr = nib.Nifti1Header()
    hdr.set_data_shape((30000, 30000, 30000))
    hdr.set_data_dtype(np.uint8)
    with open(tmp_path / "huge.nii", "wb") as fh:
        fh.write(hdr.binaryblock + b"\0" * 4)
    with pytest.raises(ImagingInputError, match="huge.nii: header claims .* voxels"):
        read_image_file(tmp_path / "huge.nii")


def test_ome_zarr_round_trip_is_exact_and_readable_by_ome_zarr(tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Reader

    vols = {"s001_t1": oblique_volume(), "s002_bold": oblique_volume(t=3)}
    path = UPath(tmp_path / "p1.zarr")
    write_volume_store(path, vols, {"dataset": "x"})
    back = read_volume_store(path)
    for name, v in vols.items():
        assert np.array_equal(back[name].array, v.array) and back[name].array.dtype == v.array.dtype
        assert back[name].same_geometry(v, atol_mm=1e-9) and back[name].time_step == v.time_step
    meta = json.loads((tmp_path / "p1.zarr" / "s001_t1" / "zarr.json").read_text())
    assert meta["attributes"]["ome"]["version"] == "0.5" and meta["zarr_format"] == 3
    nodes = list(Reader(parse_url(str(tmp_path / "p1.zarr" / "s001_t1")))())
    levels = nodes[0].data
    assert levels[0].shape == (12, 40, 36) and len(levels) == len(pyramid_factors((12, 40, 36))) > 1
    # coarser levels keep the physical extent: voxel centre shift matches the scale change
    level1 = read_volume_store(path, level=1)["s001_t1"]
    f = np.array(level1.spacing) / np.array(vols["s001_t1"].spacing)
    centre0 = vols["s001_t1"].index_to_world_lps() @ [*(f - 1) / 2, 1]
    assert np.allclose(level1.index_to_world_lps() @ [0, 0, 0, 1], centre0)


def test_store_documents_equal_those_zarr_and_ome_zarr_write(tmp_path):
    """The store is written with one ``zarr.create_hierarchy`` call from metadata built here; every group and
    array document equals the one zarr's ``create_array`` and ome-zarr's ``write_multiscales_metadata`` write
    for the same arguments (chunks, codecs, dimension names, OME multiscales and label attributes)."""
    from ome_zarr.format import FormatV05
    from ome_zarr.writer import write_multiscales_metadata

    from imaging_pipelines.medical.io.ome_zarr import level_chunks, ome_axes, store_compressors

    image = oblique_volume()
    label = image.with_array((image.array > np.median(image.array)).astype(np.uint8))
    write_volume_store(UPath(tmp_path / "p.zarr"), {"s1": image}, {"dataset": "x"}, labels={"s1": {"seg": label}},
                       arrays={"transforms/t": (np.arange(6.0).reshape(2, 3), {"kind": "affine"})})
    ours = tmp_path / "p.zarr"
    for group_path, vol in (("s1", image), ("s1/labels/seg", label)):
        doc = json.loads((ours / group_path / "zarr.json").read_text())
        ref = zarr.create_group(str(tmp_path / "ref" / group_path), zarr_format=3, overwrite=True)
        datasets = doc["attributes"]["ome"]["multiscales"][0]["datasets"]
        write_multiscales_metadata(ref, datasets, fmt=FormatV05(), axes=ome_axes(vol), name=group_path.split("/")[-1])
        assert doc["attributes"]["ome"]["multiscales"] == dict(ref.attrs)["ome"]["multiscales"]
        for level in datasets:
            array_doc = json.loads((ours / group_path / level["path"] / "zarr.json").read_text())
            shape = tuple(array_doc["shape"])
            ref_array = ref.create_array(level["path"], shape=shape, dtype=vol.array.dtype, chunks=level_chunks(vol, shape),
                                         compressors=store_compressors(), dimension_names=["z", "y", "x"])
            assert array_doc == json.loads((tmp_path / "ref" / group_path / level["path"] / "zarr.json").read_text())
            assert ref_array.shape == shape
    assert json.loads((ours / "s1" / "labels" / "zarr.json").read_text())["attributes"]["ome"]["labels"] == ["seg"]
    plain = zarr.open_array(str(ours / "transforms" / "t"), mode="r")
    assert np.array_equal(plain[...], np.arange(6.0).reshape(2, 3)) and plain.attrs["kind"] == "affine"
    assert zarr.open_group(str(ours), mode="r").attrs["imaging_pipelines"]["arrays"] == ["transforms/t"]


def test_failed_write_leaves_previous_store_untouched(tmp_path):
    path = UPath(tmp_path / "p.zarr")
    write_volume_store(path, {"a": oblique_volume()})
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "p.zarr").rglob("*") if p.is_file()}

    class Boom(RuntimeError):
        pass

    with pytest.raises(Boom):
        with atomic_store(path) as staging:
            zarr.create_group(str(staging), zarr_format=3)
            raise Boom()
    after = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "p.zarr").rglob("*") if p.is_file()}
    assert before == after
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]  # no staging left behind


def test_interrupted_publish_is_recovered(tmp_path):
    path = UPath(tmp_path / "p.zarr")
    write_volume_store(path, {"a": oblique_volume()})
    # a process killed between the two renames of a publish leaves the old store renamed aside
    (tmp_path / "p.zarr").rename(tmp_path / "p.zarr.replaced-deadbeef")
    back = read_volume_store(path)
    assert np.array_equal(back["a"].array, oblique_volume().array)


def test_replaced_store_is_deleted_off_the_critical_path_and_leftovers_are_swept(tmp_path):
    path = UPath(tmp_path / "p.zarr")
    v = oblique_volume()
    write_volume_store(path, {"a": v})
    write_volume_store(path, {"a": v.with_array(v.array // 2)})  # the old store goes aside, deleted in background
    wait_for_background_removals()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]
    assert np.array_equal(read_volume_store(path)["a"].array, v.array // 2)
    # a process killed before its background deletion ran leaves the replaced store beside the published one:
    # the next read of that store removes it and keeps the published data
    shutil.copytree(tmp_path / "p.zarr", tmp_path / "p.zarr.replaced-0a1b2c3d")
    assert np.array_equal(read_volume_store(path)["a"].array, v.array // 2)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.zarr"]


def test_fsspec_storage_root_round_trip_and_replace():
    """A non-local storage root (fsspec memory://) works the same way: write, replace, read back."""
    path = UPath("memory://imaging-test/ds/ingested_scans/p1.zarr")
    v = oblique_volume()
    write_volume_store(path, {"a": v})
    write_volume_store(path, {"a": v.with_array(v.array // 2)})
    back = read_volume_store(path)["a"]
    assert np.array_equal(back.array, v.array // 2) and back.same_geometry(v)
    assert [p.split("/")[-1] for p in path.fs.ls("memory://imaging-test/ds/ingested_scans", detail=False)] == ["p1.zarr"]


KILL_WRITER = """
import sys, numpy as np
from upath import UPath
from imaging_pipelines.medical.io.ome_zarr import write_volume_store
from imaging_pipelines.core.volume import Volume
big = Volume(np.random.default_rng(1).integers(0, 4000, (96, 512, 512)).astype(np.int16))
write_volume_store(UPath(sys.argv[1]), {"a": big})  # a fraction of a second of chunk writes: killed part-way
"""


def test_sigkill_during_write_keeps_previous_store(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    path = UPath(tmp_path / "p.zarr")
    write_volume_store(path, {"a": oblique_volume()})
    before = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "p.zarr").rglob("*") if p.is_file()}
    proc = subprocess.Popen([sys.executable, "-c", KILL_WRITER, str(path)])
    try:
        deadline = time.time() + 60
        while not list(tmp_path.glob("p.zarr.staging-*")):  # the writer is inside the store write
            assert time.time() < deadline and proc.poll() is None
            time.sleep(0.02)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    current = {p.relative_to(tmp_path): p.read_bytes() for p in (tmp_path / "p.zarr").rglob("*") if p.is_file()}
    assert current == before, "the killed write changed the published store"
    assert np.array_equal(read_volume_store(path)["a"].array, oblique_volume().array)
    write_volume_store(path, {"a": oblique_volume(t=2)})  # a re-run publishes normally
    assert read_volume_store(path)["a"].is_timeseries


def test_labels_and_extra_arrays_round_trip(tmp_path):
    from imaging_pipelines.medical.io.ome_zarr import read_array, read_labels, store_attributes

    v = oblique_volume()
    mask = v.with_array((v.array > 500).astype(np.uint8) * 3)
    field = np.random.default_rng(2).normal(size=v.spatial_shape + (3,)).astype(np.float32)
    path = UPath(tmp_path / "p.zarr")
    write_volume_store(path, {"t1": v}, labels={"t1": {"brain": mask}},
                       arrays={"fields/t1_displacement": (field, {"units": "mm"}), "transforms/t1": (np.frombuffer(b"abc", np.uint8), {})})
    labels = read_labels(path, "t1")
    assert np.array_equal(labels["brain"].array, mask.array) and labels["brain"].same_geometry(v)
    coarse = read_volume_store(path)  # images only; labels don't show up as images
    assert list(coarse) == ["t1"]
    arr, attrs = read_array(path, "fields/t1_displacement")
    assert np.array_equal(arr, field) and attrs == {"units": "mm"}
    assert bytes(read_array(path, "transforms/t1")[0]) == b"abc"
    assert store_attributes(path)["arrays"] == ["fields/t1_displacement", "transforms/t1"]
    # label pyramid levels only contain existing label values
    lvl1 = zarr.open_group(str(tmp_path / "p.zarr"), mode="r")["t1/labels/brain/1"][...]
    assert set(np.unique(lvl1)) <= {0, 3}
