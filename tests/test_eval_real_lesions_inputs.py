"""bench/eval_real_lesions.py refuses inputs it cannot score, before any model is trained or loaded: a
multi-channel image without ``--channel``, a label with none of the asked lesion values, an unreadable file.
Each gives exit code 2 and a message naming the file."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "eval_real_lesions.py"


@pytest.fixture(scope="module")
def bench_main():
    spec = importlib.util.spec_from_file_location("eval_real_lesions", BENCH)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.main


@pytest.fixture()
def case(tmp_path):
    """A 4-channel 16x24x20 image (the channels of an MSD-style case, last NIfTI axis) and a BraTS-style label."""
    image = np.random.default_rng(0).random((20, 24, 16, 4)).astype(np.float32)
    label = np.zeros((20, 24, 16), np.uint8)
    label[5:9, 5:9, 5:9] = 2
    label[9:11, 5:9, 5:9] = 1
    affine = np.diag([2.0, 2.0, 2.0, 1.0])
    nib.save(nib.Nifti1Image(image, affine), tmp_path / "img.nii.gz")
    nib.save(nib.Nifti1Image(label, affine), tmp_path / "lbl.nii.gz")
    return tmp_path / "img.nii.gz", tmp_path / "lbl.nii.gz"


def test_multichannel_image_needs_a_channel(bench_main, case, tmp_path, capsys):
    image, label = case
    missing_model = tmp_path / "never_read.pt"  # the check comes first: no model is loaded or trained
    assert bench_main(["--image", str(image), "--label", str(label), "--model", str(missing_model)]) == 2
    err = capsys.readouterr().err
    assert str(image) in err and "4 channels" in err and "--channel 0..3" in err
    assert bench_main(["--image", str(image), "--label", str(label), "--model", str(missing_model),
                       "--channel", "4"]) == 2


def test_label_values_must_occur_in_the_label(bench_main, case, tmp_path, capsys):
    image, label = case
    args = ["--image", str(image), "--label", str(label), "--model", str(tmp_path / "never_read.pt"),
            "--channel", "1"]
    assert bench_main(args + ["--label-values", "4"]) == 2
    err = capsys.readouterr().err
    assert str(label) in err and "[0, 1, 2]" in err
    assert bench_main(args + ["--label-values", "x"]) == 2


def test_unreadable_image_is_named(bench_main, case, tmp_path, capsys):
    _, label = case
    bad = tmp_path / "broken.nrrd"
    bad.write_text("not an image")
    assert bench_main(["--image", str(bad), "--label", str(label), "--model", str(tmp_path / "m.pt")]) == 2
    assert str(bad) in capsys.readouterr().err


def test_lesion_threshold_must_be_a_probability_or_argmax(bench_main, case, tmp_path, capsys):
    image, label = case
    args = ["--image", str(image), "--label", str(label), "--model", str(tmp_path / "never_read.pt"),
            "--channel", "1"]
    for bad in ("1.5", "0", "high"):
        assert bench_main(args + ["--lesion-threshold", bad]) == 2
        assert "--lesion-threshold" in capsys.readouterr().err
