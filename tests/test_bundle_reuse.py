"""A MONAI bundle kept in the process (issue 14, speed row): the first image runs as ``monai.bundle.run``, later
images through the same parsed workflow with the network kept. Every label map must equal a fresh bare
``monai.bundle.run`` of the same file; a replaced ``model.pt`` is a new version with its new weights; a bundle
whose network the ``initialize`` expressions use falls back to ``monai.bundle.run`` per image."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("monai")

from imaging_pipelines.config.segmentation import ImportedModelConfig  # noqa: E402
from imaging_pipelines.core.volume import Volume  # noqa: E402
from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti  # noqa: E402
from imaging_pipelines.medical.segment.imported_model import clear_model_cache, open_model, segment_image  # noqa: E402
from imaging_pipelines.medical.segment.monai_bundle import BundleModel  # noqa: E402
from imaging_pipelines.tools.demo.imported_models import phantom_case, write_tiny_monai_bundle  # noqa: E402


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_monai_bundle(tmp_path_factory.mktemp("reuse") / "bundle")


def images() -> list[Volume]:
    """Two different phantoms on different grids (one flipped, LPS), off the bundle's 6 mm grid."""
    first, _ = phantom_case(7, shape=(20, 30, 26), spacing=(6.0, 6.5, 8.0))
    second, _ = phantom_case(8, shape=(24, 22, 30), spacing=(5.0, 7.0, 6.0))
    second = Volume(array=second.array, spacing=second.spacing, origin=(40.0, -60.0, 10.0),
                    direction=np.diag([-1.0, 1.0, -1.0]))
    return [first, second]


def bare_run(bundle: Path, image: Volume, tmp: Path) -> np.ndarray:
    """The label map a fresh ``monai.bundle.run`` (what ``python -m monai.bundle run`` calls) writes."""
    from monai.bundle import run

    data, out = tmp / "data", tmp / "out"
    write_nifti(image, data / "scan.nii.gz")
    run(config_file=str(bundle / "configs" / "inference.json"), meta_file=str(bundle / "configs" / "metadata.json"),
        bundle_root=str(bundle), dataset_dir=str(data), output_dir=str(out), device="$torch.device('cpu')")
    (written,) = list(out.rglob("*.nii.gz"))
    return read_nifti(written).array


def test_cached_bundle_equals_fresh_runs_for_first_and_later_images(bundle, tmp_path):
    clear_model_cache()
    spec = ImportedModelConfig(kind="monai_bundle", path=str(bundle))
    for i, image in enumerate(images()):  # the first and a later image through one cached model
        model = open_model(spec, "cpu")
        ours = segment_image(model, image).array
        theirs = bare_run(bundle, image, tmp_path / f"bare{i}")
        assert np.array_equal(ours, theirs.astype(ours.dtype)), f"image {i} differs from monai.bundle.run"
        assert len(np.unique(ours)) >= 2


def test_later_images_reuse_the_network_of_the_first(bundle, monkeypatch):
    """The network is built and its checkpoint loaded for the first image only: the later image runs the same
    network object, with the bundle's CheckpointLoader replaced by AlreadyLoaded; what a case made (its
    dataset, evaluator) is released after it."""
    from monai.handlers import CheckpointLoader
    from monai.networks.nets import UNet

    from imaging_pipelines.medical.segment.bundle_workflow import AlreadyLoaded

    built, loads, ran = [], [], []
    real_init, real_load = UNet.__init__, CheckpointLoader.__call__
    monkeypatch.setattr(UNet, "__init__", lambda self, *a, **k: (built.append(1), real_init(self, *a, **k))[1])
    monkeypatch.setattr(CheckpointLoader, "__call__", lambda self, engine: (loads.append(1), real_load(self, engine))[1])
    model = BundleModel(bundle, "cpu")
    first, second = images()
    model.predict(first)
    kept = dict(model.workflow.kept)
    assert model.reuse and set(kept) == {"network_def", "network", "handlers::0"}, model.reuse_note
    assert isinstance(kept["handlers::0"], AlreadyLoaded) and kept["network"] is kept["network_def"]
    assert (len(built), len(loads)) == (1, 1)
    kept["network"].register_forward_hook(lambda module, args, out: ran.append(module))
    second_mask = model.predict(second)
    assert (len(built), len(loads)) == (1, 1) and ran and all(m is kept["network"] for m in ran)
    assert model.workflow.cases == 2 and second_mask.array.shape == second.array.shape
    assert not model.workflow.workflow.parser.ref_resolver.resolved_content  # the case's objects are released


def test_replaced_model_file_is_a_new_version_with_new_weights(bundle, tmp_path):
    clear_model_cache()
    folder = shutil.copytree(bundle, tmp_path / "bundle")
    spec = ImportedModelConfig(kind="monai_bundle", path=str(folder))
    image = images()[1]
    old = open_model(spec, "cpu")
    before = segment_image(old, image).array
    other = write_tiny_monai_bundle(tmp_path / "other", seed=5)
    shutil.copyfile(other / "models" / "model.pt", folder / "models" / "model.pt")
    new = open_model(spec, "cpu")
    assert new.version != old.version and new.predict is not old.predict
    after = segment_image(new, image).array
    assert np.array_equal(after, bare_run(folder, image, tmp_path / "bare").astype(after.dtype))
    assert not np.array_equal(after, before), "the new weights gave the old label map"


def test_bundle_whose_initialize_uses_the_network_runs_bare_every_time(bundle, tmp_path):
    folder = shutil.copytree(bundle, tmp_path / "bundle")
    config_file = folder / "configs" / "inference.json"
    config = json.loads(config_file.read_text())
    config["initialize"] = ["$@network_def.train(False)"]
    config_file.write_text(json.dumps(config))
    model = BundleModel(folder, "cpu")
    first, second = images()
    model.predict(first)
    ours = model.predict(second).array
    assert np.array_equal(ours, bare_run(folder, second, tmp_path / "bare").astype(ours.dtype))
    assert not model.reuse and model.workflow is None and "initialize" in model.reuse_note


def test_scratch_nifti_is_written_whole_without_fsync(tmp_path, monkeypatch):
    """The bundle's input is a scratch file: written through the atomic writer (renamed whole into place) but
    not fsynced; a durable write (the default) fsyncs."""
    import os

    synced = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real_fsync(fd)))
    image = images()[1]
    scratch = write_nifti(image, tmp_path / "scratch" / "image.nii", durable=False)
    assert synced == [] and read_nifti(scratch).same_geometry(image)
    assert np.array_equal(read_nifti(scratch).array, image.array.astype(read_nifti(scratch).array.dtype))
    assert [p.name for p in scratch.parent.iterdir()] == ["image.nii"]  # no temporary file left
    write_nifti(image, tmp_path / "durable.nii")
    assert len(synced) >= 2  # the file and its folder


@pytest.mark.parametrize("dtype", [np.float32, np.int16, np.uint8])
def test_label_file_of_any_type_gives_the_same_label_map(tmp_path, monkeypatch, dtype):
    """Whatever type the bundle's label file has, the mask holds its values as uint8 on the input grid: a
    float file rounded (values a writer left off by a rounding error), an integer file taken as it is."""
    (tmp_path / "b" / "configs").mkdir(parents=True)
    (tmp_path / "b" / "configs" / "inference.json").write_text(json.dumps({"dataset": {"data": []}, "output_dir": "."}))
    image, labels = phantom_case(9, shape=(24, 40, 32), spacing=(4.0, 4.0, 5.0))
    written = labels.array.astype(dtype) - (np.float32(1e-3) if dtype == np.float32 else 0)  # 1.999: rounded, not cut

    def fake_run(self, image_file: Path, output_dir: Path) -> Path:
        return write_nifti(labels.with_array(written), output_dir / "seg.nii.gz")

    monkeypatch.setattr(BundleModel, "run_file", fake_run)
    mask = BundleModel(tmp_path / "b", "cpu").predict(image)
    assert mask.array.dtype == np.uint8 and np.array_equal(mask.array, labels.array) and mask.same_geometry(image)
    assert len(np.unique(mask.array)) >= 2
