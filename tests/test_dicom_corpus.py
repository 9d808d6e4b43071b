"""dcm2niix reference corpus (dcm_qa_more, 57 Ref NIfTIs from 46 series of the dcm_qa_* suites).

Each row of ``series.tsv`` is converted with ``imaging-pipelines convert`` (in process) and must reproduce its
Ref NIfTI: same voxels after closest-canonical reorientation and every volume corner within 1e-3 mm (any output
of the folder may match). The whole corpus takes a few seconds, so it runs in the default suite.
Data: $IMAGING_SHARED_DATA or <repo>/../shared/data.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from tests.dcm_corpus import corpus_rows, match_reference

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
CORPUS = SHARED / "medical" / "dcm_qa_more"
ROWS = corpus_rows(CORPUS)


@pytest.fixture(scope="module")
def out_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("dcm_qa_more")


@pytest.mark.parametrize("row", ROWS or [None], ids=lambda r: r["ref_nifti"].split("/", 1)[0] + ":" +
                         Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_reference_reproduced(row, out_root):
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS} (set IMAGING_SHARED_DATA)")
    folder = CORPUS / row["input_dir"]
    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(folder, CORPUS / row["ref_nifti"], out)
    assert name is not None, f"{row['ref_nifti']} ({row['feature']}) not reproduced: {why}"


DWI_ROWS = [r for r in ROWS if (CORPUS / r["ref_nifti"].replace(".nii.gz", ".bvec")).exists()]


@pytest.mark.parametrize("row", DWI_ROWS or [None], ids=lambda r: Path(r["ref_nifti"]).name.split(".")[0] if r else "missing")
def test_bval_bvec_as_dcm2niix(row, out_root):
    """Diffusion series: .bval/.bvec beside our NIfTI describe the same b-values and gradient directions (patient
    space, up to polarity) as dcm2niix's, volume by volume."""
    if row is None:
        pytest.skip(f"reference corpus not found: {CORPUS} (set IMAGING_SHARED_DATA)")
    from tests.dcm_corpus import gradient_mismatch

    out = out_root / hashlib.sha1(row["input_dir"].encode()).hexdigest()[:10]
    name, why = match_reference(CORPUS / row["input_dir"], CORPUS / row["ref_nifti"], out)
    assert name is not None, why
    problem = gradient_mismatch(out / name, CORPUS / row["ref_nifti"])
    assert problem is None, f"{row['ref_nifti']}: {problem}"
