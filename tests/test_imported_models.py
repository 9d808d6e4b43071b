"""Imported pretrained models (issue 14, items 2-3): an nnU-Net v2 trained-model folder (multi-class, planned
by nnU-Net on phantoms, checkpoints from nnU-Net's own network builder), a MONAI bundle and a project model
file, through `imaging-pipelines segment` and the per-patient `segmentation` asset. Label maps must be
identical to nnUNetPredictor / `python -m monai.bundle run` on the same file; the imported model is an
observable source asset upstream of the masks, and replacing a checkpoint marks them stale."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional extra segment-export)")

from typer.testing import CliRunner  # noqa: E402

from imaging_pipelines.cli import app  # noqa: E402
from imaging_pipelines.core.volume import Volume  # noqa: E402
from imaging_pipelines.medical.io.image_files import read_nifti, write_nifti  # noqa: E402
from imaging_pipelines.tools.demo.imported_models import phantom_case, write_tiny_monai_bundle  # noqa: E402

SCAN_SHAPE, SCAN_SPACING = (20, 30, 26), (6.0, 6.5, 8.0)  # (z, y, x) voxels; (x, y, z) mm: not the plans' grid


@pytest.fixture(scope="session")
def bundle(tmp_path_factory) -> Path:
    return write_tiny_monai_bundle(tmp_path_factory.mktemp("bundle") / "tiny_bundle")


@pytest.fixture(scope="session")
def scan(tmp_path_factory) -> Path:
    """A phantom NIfTI with a flipped, non-identity direction (LPS), off the models' training grid."""
    image, _ = phantom_case(7, shape=SCAN_SHAPE, spacing=SCAN_SPACING)
    flipped = Volume(array=image.array, spacing=image.spacing, origin=(40.0, -60.0, 10.0),
                     direction=np.diag([-1.0, 1.0, -1.0]))
    return write_nifti(flipped, tmp_path_factory.mktemp("scan") / "scan.nii.gz")


def run_cli(*args: str):
    return CliRunner().invoke(app, ["segment", *args])


def nnunet_direct(model: Path, files: list[Path], out: Path, folds=(0,), mirroring=False,
                  checkpoint: str = "checkpoint_final.pth") -> list[np.ndarray]:
    """nnUNetPredictor run directly on the files (its own reader and writer), as a user would."""
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=False, device=torch.device("cpu"), allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(model), use_folds=folds, checkpoint_name=checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    truncated = [str(out / f"case{i}") for i in range(len(files))]
    predictor.predict_from_files_sequential([[str(f)] for f in files], truncated, save_probabilities=False)
    return [read_nifti(t + ".nii.gz").array for t in truncated]


def test_segment_command_equals_nnunet_predictor(nnunet_model, scan, tmp_path):
    out = tmp_path / "out"
    result = run_cli(str(scan), str(out), "--model", str(nnunet_model), "--folds", "0", "--no-mirroring",
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    ours = read_nifti(out / "scan.nii.gz")
    (direct,) = nnunet_direct(nnunet_model, [scan], tmp_path / "direct")
    assert np.array_equal(ours.array, direct)
    assert len(np.unique(direct)) == 3, "the multi-class model must predict all three labels here"
    source = read_nifti(scan)
    assert ours.same_geometry(source)  # on SRC's own grid (flipped direction included)
    manifest = json.loads((out / "scan.manifest.json").read_text())
    assert manifest["labels"] == {"1": "lesion", "2": "tissue"} and manifest["device"] == "cpu"
    assert manifest["model"]["kind"] == "nnunet" and len(manifest["model"]["version"]) == 16
    voxel_ml = float(np.prod(source.spacing)) / 1000
    assert manifest["segments"]["tissue"]["volume_ml"] == pytest.approx(np.sum(direct == 2) * voxel_ml, rel=1e-6)
    assert set(manifest["timings_s"]) == {"read", "load_model", "predict", "total"}


def test_segment_command_with_another_checkpoint_equals_nnunet_predictor(nnunet_model, scan, tmp_path):
    """A folder shipped with checkpoint_best.pth only: the error names the missing file and what the fold
    holds; ``--checkpoint`` (nnUNetv2_predict's -chk) picks it, and every fold holding it is ensembled."""
    folder = shutil.copytree(nnunet_model, tmp_path / "best_only")
    for fold in folder.glob("fold_*"):
        (fold / "checkpoint_final.pth").rename(fold / "checkpoint_best.pth")
    missing = run_cli(str(scan), str(tmp_path / "m.nii.gz"), "--model", str(folder), "--device", "cpu")
    assert missing.exit_code == 1 and "fold_0/checkpoint_final.pth" in missing.output
    assert "checkpoint_best.pth" in missing.output and "--checkpoint" in missing.output
    result = run_cli(str(scan), str(tmp_path / "mask.nii.gz"), "--model", str(folder), "--no-mirroring",
                     "--checkpoint", "checkpoint_best.pth", "--device", "cpu")
    assert result.exit_code == 0, result.output
    folds = tuple(sorted(int(f.name[5:]) for f in folder.glob("fold_*")))
    (direct,) = nnunet_direct(folder, [scan], tmp_path / "direct", folds=folds, checkpoint="checkpoint_best.pth")
    assert len(folds) == 2 and np.array_equal(read_nifti(tmp_path / "mask.nii.gz").array, direct)


@pytest.mark.slow
def test_segment_command_ensemble_and_mirroring_equal_nnunet_predictor(nnunet_model, scan, tmp_path):
    result = run_cli(str(scan), str(tmp_path / "mask.nii.gz"), "--model", str(nnunet_model), "--device", "cpu")
    assert result.exit_code == 0, result.output
    (direct,) = nnunet_direct(nnunet_model, [scan], tmp_path / "direct", folds=(0, 1), mirroring=True)
    assert np.array_equal(read_nifti(tmp_path / "mask.nii.gz").array, direct)


def test_segment_command_equals_monai_bundle_run(bundle, scan, tmp_path):
    data, out = tmp_path / "data", tmp_path / "bundle_out"
    data.mkdir()
    shutil.copyfile(scan, data / "scan.nii.gz")
    # the bundle's own command line, as a user runs it (python-fire parses the flags)
    bare = subprocess.run([sys.executable, "-m", "monai.bundle", "run",
                           "--config_file", str(bundle / "configs" / "inference.json"),
                           "--meta_file", str(bundle / "configs" / "metadata.json"), "--bundle_root", str(bundle),
                           "--dataset_dir", str(data), "--output_dir", str(out), "--device", "$torch.device('cpu')"],
                          capture_output=True, text=True, timeout=300)
    assert bare.returncode == 0, bare.stderr[-3000:]
    (written,) = list(out.rglob("*.nii.gz"))
    result = run_cli(str(scan), str(tmp_path / "mask.nii.gz"), "--model", str(bundle), "--device", "cpu")
    assert result.exit_code == 0, result.output
    ours, theirs = read_nifti(tmp_path / "mask.nii.gz"), read_nifti(written)
    assert np.array_equal(ours.array, theirs.array.astype(ours.array.dtype))
    assert ours.same_geometry(theirs) and len(np.unique(ours.array)) >= 2


def test_a_bundle_with_a_yaml_inference_config_equals_monai_bundle_run(bundle, scan, tmp_path):
    """Several model-zoo bundles ship ``configs/inference.yaml``: found, hashed, and run like the JSON one."""
    import yaml
    from monai.bundle import run

    from imaging_pipelines.config.segmentation import ImportedModelConfig
    from imaging_pipelines.medical.segment.model_files import inspect_model

    folder = shutil.copytree(bundle, tmp_path / "yaml_bundle")
    config = json.loads((folder / "configs" / "inference.json").read_text())
    (folder / "configs" / "inference.yaml").write_text(yaml.safe_dump(config))
    (folder / "configs" / "inference.json").unlink()
    files = inspect_model(ImportedModelConfig(kind="monai_bundle", path=str(folder)))
    assert folder / "configs" / "inference.yaml" in files.files and files.labels
    data, out = tmp_path / "data", tmp_path / "bare_out"
    data.mkdir()
    shutil.copyfile(scan, data / "scan.nii.gz")
    run(config_file=str(folder / "configs" / "inference.yaml"), meta_file=str(folder / "configs" / "metadata.json"),
        bundle_root=str(folder), dataset_dir=str(data), output_dir=str(out), device="$torch.device('cpu')")
    (written,) = list(out.rglob("*.nii.gz"))
    result = run_cli(str(scan), str(tmp_path / "mask.nii.gz"), "--model", str(folder), "--device", "cpu")
    assert result.exit_code == 0, result.output
    ours, theirs = read_nifti(tmp_path / "mask.nii.gz"), read_nifti(written)
    assert np.array_equal(ours.array, theirs.array.astype(ours.array.dtype)) and len(np.unique(ours.array)) >= 2
    (folder / "configs" / "inference.yaml").write_text("network: [unclosed\n")
    broken = run_cli(str(scan), str(tmp_path / "m2.nii.gz"), "--model", str(folder), "--device", "cpu")
    assert broken.exit_code == 1 and "inference.yaml" in broken.output and "YAML" in broken.output


def test_segment_command_with_a_project_model_file(scan, tmp_path):
    from imaging_pipelines.medical.segment.unet import Plan, SegmentationModel, predict

    model = SegmentationModel(plan=Plan([[3, 3, 3]] * 3, [[1, 1, 1], [2, 2, 2], [2, 2, 2]], [4, 8, 16], [16, 16, 16]),
                              n_classes=3, label_values=[0, 1, 5], version="abc")
    model.save(tmp_path / "dynunet-abc.pt")
    result = run_cli(str(scan), str(tmp_path / "mask.nii.gz"), "--model", str(tmp_path / "dynunet-abc.pt"),
                     "--device", "cpu")
    assert result.exit_code == 0, result.output
    expected = predict(SegmentationModel.load(tmp_path / "dynunet-abc.pt"), read_nifti(scan), device="cpu")
    assert np.array_equal(read_nifti(tmp_path / "mask.nii.gz").array, expected.array)


def test_dicom_source_named_by_series_number_and_modality(nnunet_model, tmp_path):
    from imaging_pipelines.tools.demo.dicom_writer import write_dicom_series
    from tests.pipeline_helpers import identity

    image, _ = phantom_case(3, shape=(12, 24, 20), spacing=(8.0, 8.0, 10.0))
    write_dicom_series(image.with_array(np.rint(image.array).astype(np.int16)), tmp_path / "dicom",
                       patient=identity("PAT123", "SMITH^ANNA"), series_number=4, series_description="T1 SMITH ANNA")
    out = tmp_path / "out"
    result = run_cli(str(tmp_path / "dicom"), str(out), "--model", str(nnunet_model), "--folds", "0",
                     "--no-mirroring", "--device", "cpu")
    assert result.exit_code == 0, result.output
    names = sorted(p.name for p in out.iterdir())
    assert "s004_mr.nii.gz" in names and "s004_mr.manifest.json" in names
    assert "s004_mr.seg.dcm" in names and "s004_mr.sr.dcm" in names  # DICOM source: SEG + TID 1500 SR
    text = "".join(p.read_text(errors="ignore") for p in out.glob("*.json")) + result.output + " ".join(names)
    text += "".join(p.read_bytes().decode("latin-1") for p in out.glob("*.dcm"))
    assert not any(v in text.upper() for v in ("SMITH", "ANNA", "PAT123", "T1 SMITH"))
    import pydicom

    from imaging_pipelines.medical.deid import profile_violations
    from imaging_pipelines.medical.segment.dicom_seg import read_dicom_seg_labels

    mask = read_nifti(out / "s004_mr.nii.gz")
    seg = read_dicom_seg_labels(out / "s004_mr.seg.dcm", mask)
    back = np.zeros(mask.spatial_shape, np.uint8)
    names_by_number = seg.attributes["segment_names"]
    labels = json.loads((out / "s004_mr.manifest.json").read_text())["labels"]
    for number, name in names_by_number.items():
        back[seg.array == int(number)] = int(next(v for v, n in labels.items() if n == name))
    assert np.array_equal(back, mask.array.astype(np.uint8))  # the SEG reproduces the label map
    source_series = pydicom.dcmread(next((tmp_path / "dicom").iterdir())).SeriesInstanceUID
    for dcm in ("s004_mr.seg.dcm", "s004_mr.sr.dcm"):
        ds = pydicom.dcmread(out / dcm)
        assert not profile_violations(ds, pseudonym=str(ds.PatientID)), dcm
        assert source_series in ds.to_json()  # references the source series


def test_bad_model_folder_and_bad_arguments(nnunet_model, bundle, scan, tmp_path):
    broken = tmp_path / "broken_nnunet"
    shutil.copytree(nnunet_model, broken)
    (broken / "fold_0" / "checkpoint_final.pth").unlink()
    result = run_cli(str(scan), str(tmp_path / "m.nii.gz"), "--model", str(broken), "--folds", "0")
    assert result.exit_code == 1 and "fold_0/checkpoint_final.pth" in result.output and "missing" in result.output
    no_meta = tmp_path / "broken_bundle"
    shutil.copytree(bundle, no_meta)
    (no_meta / "configs" / "metadata.json").unlink()
    result = run_cli(str(scan), str(tmp_path / "m.nii.gz"), "--model", str(no_meta))
    assert result.exit_code == 1 and "configs/metadata.json" in result.output
    assert run_cli(str(scan), str(tmp_path / "m.nii.gz"), "--model", str(bundle), "--device", "tpu").exit_code == 2
    unknown = run_cli(str(scan), str(tmp_path / "m.nii.gz"), "--model", "no_such_model_or_dataset")
    assert unknown.exit_code == 2 and "no_such_model_or_dataset" in unknown.output
    missing = run_cli(str(tmp_path / "nope.nii.gz"), str(tmp_path / "m.nii.gz"), "--model", str(bundle))
    assert missing.exit_code == 1 and "nope.nii.gz" in missing.output


def test_catalog_errors_name_the_field(tmp_path, monkeypatch):
    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.core.errors import CatalogError
    from tests.conftest import write_catalog

    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    (tmp_path / "inbox").mkdir()
    bad = {
        "no_model": {"method": "imported"},
        "bad_kind": {"method": "imported", "model": {"kind": "tensorflow", "path": "m"}},
        "typo": {"method": "imported", "model": {"kind": "nnunet", "path": "m", "fold": [0]}},
        "url": {"method": "imported", "model": {"kind": "nnunet", "path": "https://example.org/m.zip"}},
    }
    for name, seg in bad.items():
        catalog = write_catalog(tmp_path / name, name, inbox="../inbox", segmentation=json.dumps(seg))
        with pytest.raises(CatalogError) as info:
            load_catalog(catalog, data_roots=[tmp_path])
        fields = {field for _, field, _ in info.value.errors}
        assert any(f.startswith("segmentation") for f in fields), (name, info.value.errors)
        if name == "bad_kind":
            assert "segmentation.model.kind" in fields
        if name == "typo":
            assert "segmentation.model.fold" in fields
    good = write_catalog(tmp_path / "good", "good", inbox="../inbox", segmentation=json.dumps(
        {"method": "imported", "model": {"kind": "nnunet", "path": "../models/tiny"}}))
    (ds,) = load_catalog(good, data_roots=[tmp_path])
    assert ds.segmentation.model.path == str((tmp_path / "good" / "models" / "tiny").absolute())
    assert ds.segmentation.input == "ingested" and ds.segmentation.postprocess.fill_holes is False


def test_catalog_model_by_name_and_configuration_check(nnunet_model, scan, tmp_path, monkeypatch):
    from imaging_pipelines.config.segmentation import ImportedModelConfig
    from imaging_pipelines.core.errors import ImagingInputError
    from imaging_pipelines.medical.segment.imported_model import open_model
    from tests.conftest import write_catalog

    seg = {"method": "imported", "model": {"kind": "nnunet", "path": str(nnunet_model), "folds": [1],
                                           "use_mirroring": False, "configuration": "3d_fullres"}}
    (tmp_path / "inbox").mkdir()
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", f"{tmp_path}:{nnunet_model.parent}")
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(write_catalog(tmp_path, "brain_ds", segmentation=json.dumps(seg))))
    result = run_cli(str(scan), str(tmp_path / "out"), "--model", "brain_ds", "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads((tmp_path / "out" / "scan.manifest.json").read_text())
    assert manifest["model"]["folds"] == [1] and manifest["labels"] == {"1": "lesion", "2": "tissue"}
    (direct,) = nnunet_direct(nnunet_model, [scan], tmp_path / "direct", folds=(1,))
    assert np.array_equal(read_nifti(tmp_path / "out" / "scan.nii.gz").array, direct)
    with pytest.raises(ImagingInputError, match="configuration '3d_fullres', not '2d'"):
        open_model(ImportedModelConfig(kind="nnunet", path=str(nnunet_model), configuration="2d"), "cpu")


def test_open_model_keeps_a_loaded_model_until_its_files_change(bundle, tmp_path):
    """A second open of the same files and settings hands back the loaded model (no new load); a changed
    file is a new version, loaded afresh; clear_model_cache forgets them all."""
    from imaging_pipelines.config.segmentation import ImportedModelConfig
    from imaging_pipelines.medical.segment.imported_model import clear_model_cache, open_model

    folder = shutil.copytree(bundle, tmp_path / "bundle")
    spec = ImportedModelConfig(kind="monai_bundle", path=str(folder))
    first = open_model(spec, "cpu")
    again = open_model(spec, "cpu")
    assert again.predict is first.predict and again.version == first.version
    (folder / "configs" / "note.txt").write_text("a new file under configs/ is hashed into the version")
    changed = open_model(spec, "cpu")
    assert changed.version != first.version and changed.predict is not first.predict
    clear_model_cache()
    assert open_model(spec, "cpu").predict is not changed.predict


def test_segment_command_notes_an_implausibly_small_brain(scan, tmp_path, monkeypatch):
    """A brain-gated model whose brain is far smaller than a whole brain (e.g. on a skull-stripped scan) gets a
    warning in the manifest's notes; the threshold is raised here so that any brain counts as too small."""
    from imaging_pipelines.medical.segment import brain_gate
    from imaging_pipelines.medical.segment.unet import SegmentationModel, plan_dynunet_2d

    model = SegmentationModel(plan=plan_dynunet_2d(2.0, (16, 16), base_filters=4, max_filters=8), n_classes=3,
                              label_values=[0, 0, 1], normalization="percentile", spacing_mm=[2.0] * 3,
                              brain_gate=True, version="gated")
    model.save(tmp_path / "gated.pt")
    monkeypatch.setattr(brain_gate, "MIN_PLAUSIBLE_BRAIN_ML", 1e9)
    result = run_cli(str(scan), str(tmp_path / "out"), "--model", str(tmp_path / "gated.pt"), "--device", "cpu")
    assert result.exit_code == 0, result.output
    manifest = json.loads(next((tmp_path / "out").glob("*.manifest.json")).read_text())
    assert any("mL of brain" in note and "skull-stripped" in note for note in manifest["notes"]), manifest["notes"]
    monkeypatch.setattr(brain_gate, "MIN_PLAUSIBLE_BRAIN_ML", 0.0)
    again = run_cli(str(scan), str(tmp_path / "out2"), "--model", str(tmp_path / "gated.pt"), "--device", "cpu")
    assert again.exit_code == 0, again.output
    assert not json.loads(next((tmp_path / "out2").glob("*.manifest.json")).read_text())["notes"]
