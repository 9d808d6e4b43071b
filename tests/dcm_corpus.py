"""Shared helpers for the dcm2niix reference-corpus tests (dcm_qa_more): convert a folder, match a Ref NIfTI.

A reference matches one of our outputs of the same input folder when, after ``nibabel.as_closest_canonical``,
shapes and voxel values are equal and all 8 volume corners map to world (RAS mm) within 1e-3 mm.
"""

from __future__ import annotations

import csv
from functools import lru_cache
from pathlib import Path

import nibabel as nib
import numpy as np

CORNER_TOL_MM = 1e-3


def corpus_rows(root: Path) -> list[dict[str, str]]:
    tsv = root / "series.tsv"
    if not tsv.exists():
        return []
    with tsv.open() as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def corners(shape, affine) -> np.ndarray:
    ijk = np.array([[i, j, k, 1.0] for i in (0, shape[0] - 1) for j in (0, shape[1] - 1)
                    for k in (0, shape[2] - 1)]).T
    return (affine @ ijk)[:3]


def mismatch(ours: nib.Nifti1Image, ref: nib.Nifti1Image) -> str | None:
    """Why ``ours`` does not reproduce ``ref`` (None when it does)."""
    a, b = nib.as_closest_canonical(ours), nib.as_closest_canonical(ref)
    if a.shape != b.shape:
        return f"shape {a.shape} != {b.shape}"
    gap = float(np.max(np.abs(corners(a.shape, a.affine) - corners(b.shape, b.affine))))
    if gap > CORNER_TOL_MM:
        return f"corners differ by {gap:.4g} mm"
    va, vb = np.asanyarray(a.dataobj), np.asanyarray(b.dataobj)
    if not np.array_equal(va, vb):
        diff = np.abs(va.astype(np.float64) - vb.astype(np.float64))
        return f"voxels differ ({np.count_nonzero(diff)} of {diff.size}, max {diff.max():.4g}; {va.dtype} vs {vb.dtype})"
    return None


@lru_cache(maxsize=None)
def converted(folder: str, out: str) -> tuple[tuple[str, ...], str]:
    """Convert ``folder`` into ``out`` once; (written NIfTI paths, error text or '')."""
    from imaging_pipelines.medical.convert import convert

    try:
        written, _ = convert(folder, out)
    except Exception as exc:  # reported by the caller as the reason of the mismatch
        return (), f"{type(exc).__name__}: {exc}"
    return tuple(str(p) for p in written if str(p).endswith((".nii", ".nii.gz"))), ""


def match_reference(folder: Path, ref_path: Path, out: Path) -> tuple[str | None, str]:
    """(name of our matching output or None, explanation of each output's mismatch)."""
    written, error = converted(str(folder), str(out))
    if error:
        return None, error
    reasons = []
    ref = nib.load(ref_path)
    for path in written:
        why = mismatch(nib.load(path), ref)
        if why is None:
            return Path(path).name, ""
        reasons.append(f"{Path(path).name}: {why}")
    return None, "; ".join(reasons) or "no output"


def world_gradients(nifti: Path, bvec: Path) -> np.ndarray:
    """FSL bvecs of ``nifti`` as unit directions in patient space (RAS), n x 3 (zero rows for b=0)."""
    a = nib.load(nifti).affine[:3, :3]
    axes = a / np.linalg.norm(a, axis=0)
    b = np.loadtxt(bvec, ndmin=2).reshape(3, -1).copy()
    if np.linalg.det(a) > 0:  # FSL: the first component is along -i for a neurological (det > 0) affine
        b[0] = -b[0]
    return (axes @ b).T


def gradient_mismatch(ours: Path, ref: Path) -> str | None:
    """Why the .bval/.bvec beside NIfTI ``ours`` differ from those beside ``ref`` (None when equal): b-values
    within 1e-4 relative, directions in patient space within 1e-3 up to sign (gradient polarity is immaterial)."""
    stem = lambda p: Path(str(p)[: -len(".nii.gz")])  # noqa: E731
    ob, rb = stem(ours).with_suffix(".bval"), stem(ref).with_suffix(".bval")
    if not ob.exists():
        return "no .bval written"
    bo, br = np.loadtxt(ob, ndmin=1), np.loadtxt(rb, ndmin=1)
    if bo.shape != br.shape or not np.allclose(bo, br, rtol=1e-4, atol=1e-3):
        return f"b-values {bo.tolist()} != {br.tolist()}"
    go = world_gradients(ours, stem(ours).with_suffix(".bvec"))
    gr = world_gradients(ref, stem(ref).with_suffix(".bvec"))
    same = np.minimum(np.abs(go - gr).max(axis=1), np.abs(go + gr).max(axis=1))
    if same.max() > 1e-3:
        n = int(np.argmax(same))
        return f"gradient of volume {n} differs: {go[n].round(4).tolist()} vs {gr[n].round(4).tolist()}"
    return None


def _pe_world(nifti: Path, code: str) -> np.ndarray:
    """Unit patient-space (RAS) vector of a BIDS PhaseEncodingDirection code ('j-', 'i', ...) of ``nifti``."""
    a = nib.load(nifti).affine[:3, :3]
    v = a[:, "ijk".index(code[0])] / np.linalg.norm(a[:, "ijk".index(code[0])])
    return -v if code.endswith("-") else v


def _same_value(a, b) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same_value(x, y) for x, y in zip(a, b))
    if isinstance(a, bool) or isinstance(b, bool):
        return a == b
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= max(1e-4, 1e-4 * abs(b))
    return a == b


def sidecar_mismatches(ours: Path, ref: Path) -> list[str]:
    """Keys shared by our sidecar and dcm2niix's whose values differ (numbers within 1e-4 relative;
    PhaseEncodingDirection compared as a direction in patient space, since the two files' j axes are opposite;
    SliceTiming compared slice by slice in patient space, i.e. reversed when the files' k axes are opposite)."""
    import json

    stem = lambda p: Path(str(p)[: -len(".nii.gz")])  # noqa: E731
    mine = json.loads(stem(ours).with_suffix(".json").read_text())
    theirs = json.loads(stem(ref).with_suffix(".json").read_text())
    out = []
    for key in sorted(set(mine) & set(theirs)):
        if key in ("ConversionSoftware", "ConversionSoftwareVersion"):
            continue
        if key == "PhaseEncodingDirection":
            if not np.allclose(_pe_world(ours, mine[key]), _pe_world(ref, theirs[key]), atol=1e-3):
                out.append(f"{key}: {mine[key]} vs {theirs[key]} (different direction in patient space)")
        elif key == "SliceTiming":
            ref_times = list(theirs[key])
            ka, kb = nib.load(ours).affine[:3, 2], nib.load(ref).affine[:3, 2]
            if float(np.dot(ka, kb)) < 0:  # the files' slice axes run in opposite directions
                ref_times = ref_times[::-1]
            if not _same_value(mine[key], ref_times):
                out.append(f"{key}: {str(mine[key])[:80]} vs {str(ref_times)[:80]} (along our k axis)")
        elif key == "ImageType" and mine[key] == [*theirs[key], "MAGNITUDE"] and \
                theirs.get("ConversionSoftwareVersion", "v1.0.2026") < "v1.0.2023":
            continue  # dcm2niix of 2021-2022 did not append the MAGNITUDE component (today's dcm2niix does)
        elif not _same_value(mine[key], theirs[key]):
            out.append(f"{key}: {str(mine[key])[:80]} vs {str(theirs[key])[:80]}")
    return out
