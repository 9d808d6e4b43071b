#!/usr/bin/env python
"""Compare ``imaging-pipelines convert`` with the installed dcm2niix on any DICOM folders (e.g. dcm_qa_* suites).

For every folder below the given roots that holds files, runs ``dcm2niix -b y -z n`` and our ``convert`` into a
temporary folder and reports, for each NIfTI dcm2niix writes, whether one of ours has the same voxels (after
closest-canonical reorientation) and corners within 1e-3 mm (the test in tests/test_dicom_corpus.py).

Usage::

    .venv/bin/python bench/compare_dcm2niix.py DIR [DIR ...] [--dcm2niix PATH] [--keep OUT]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))


def _leaf_folders(root: Path) -> list[Path]:
    return sorted({p.parent for p in root.rglob("*") if p.is_file()})


def main() -> int:
    from tests.dcm_corpus import mismatch  # noqa: E402  (the corpus test's comparison)

    import nibabel as nib

    from imaging_pipelines.medical.convert import convert

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("roots", nargs="+", type=Path)
    parser.add_argument("--dcm2niix", default=shutil.which("dcm2niix") or str(Path(sys.executable).with_name("dcm2niix")))
    parser.add_argument("--keep", type=Path, help="write the conversions here instead of a temporary folder")
    args = parser.parse_args()
    work = args.keep or Path(tempfile.mkdtemp(prefix="cmp_dcm2niix_"))
    matched = total = 0
    for root in args.roots:
        for leaf in _leaf_folders(root):
            key = hashlib.sha1(str(leaf).encode()).hexdigest()[:10]
            ref_dir, our_dir = work / key / "dcm2niix", work / key / "ours"
            ref_dir.mkdir(parents=True, exist_ok=True)
            subprocess.run([args.dcm2niix, "-b", "y", "-z", "n", "-f", "%s_%p_%e_%z", "-o", str(ref_dir), str(leaf)],
                           capture_output=True, check=False)
            try:
                written, _ = convert(leaf, our_dir)
            except Exception as exc:  # reported, the run goes on
                written = []
                print(f"ERROR {leaf}: {type(exc).__name__}: {exc}")
            ours = [p for p in written if str(p).endswith(".nii.gz")]
            for ref in sorted(ref_dir.glob("*.nii")):
                total += 1
                reasons = []
                for path in ours:
                    try:
                        why = mismatch(nib.load(path), nib.load(ref))
                    except (TypeError, ValueError) as exc:  # e.g. RGB against greyscale
                        why = f"not comparable ({exc})"
                    if why is None:
                        matched += 1
                        print(f"OK    {leaf} {ref.name} = {path.name}")
                        break
                    reasons.append(f"{path.name}: {why}")
                else:
                    print(f"FAIL  {leaf} {ref.name}: {'; '.join(reasons)[:400] or 'no output'}")
    print(f"{matched}/{total} dcm2niix outputs reproduced (work folder: {work})")
    if not args.keep:
        shutil.rmtree(work, ignore_errors=True)
    return 0 if matched == total else 1


if __name__ == "__main__":
    raise SystemExit(main())
