"""Issue 17 memory goal on the 150-file GE EPI series (10x15x64x64 int16 = 1.17 MiB): what the conversion holds.

The read's own allocations (tracemalloc peak) stay under 2x the volume since the uncompressed pixel bytes are read
again from each file while the volume is filled (they were 2.80x, held for the whole series). The goal on the whole
process (RSS increase after imports < 3x the volume, as bench/bench_dicom_convert.py measures it) is not met: the
1.5x of library code pages (numpy, OpenBLAS / LAPACK) first run by the conversion alone leave too little of 3x for
a volume this small (bench/README.md has the breakdown). Data: $IMAGING_SHARED_DATA or <repo>/../shared/data.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tracemalloc
from pathlib import Path

import pytest

from imaging_pipelines.medical.io.dicom import read_dicom_folder

REPO = Path(__file__).resolve().parents[1]
GE = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data")) / \
    "medical" / "dcm_qa_nih" / "In" / "20180918GE" / "mr_0004"

# The bench's project child, reduced to the memory figure: RSS high-water after imports, then read + write. VmHWM
# (this process image's own high-water mark), not ru_maxrss: after fork + exec from pytest, ru_maxrss starts at the
# size of the (large) pytest process (the bench parent is kept small for that reason).
_CHILD = """
import json, sys
def hwm_kib():
    return next(int(ln.split()[1]) for ln in open("/proc/self/status") if ln.startswith("VmHWM"))
from imaging_pipelines.medical.io.dicom import read_dicom_folder
from imaging_pipelines.medical.io.image_files import write_nifti
import pydicom.pixels  # as the bench child: library loading is not conversion memory
before = hwm_kib()
res = read_dicom_folder(sys.argv[1])
for n, s in enumerate(res.series):
    write_nifti(s.volume, f"{sys.argv[2]}/{n:03d}.nii.gz")
print(json.dumps({"increase_kib": hwm_kib() - before, "nbytes": sum(s.volume.array.nbytes for s in res.series)}))
"""


@pytest.fixture
def ge_series() -> Path:
    if not GE.is_dir():
        pytest.skip(f"GE series not found: {GE} (set IMAGING_SHARED_DATA)")
    return GE


def test_read_allocations_under_2x_the_volume(ge_series):
    read_dicom_folder(ge_series)  # warm: modules imported, first-use caches filled
    tracemalloc.start()
    try:
        res = read_dicom_folder(ge_series)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    nbytes = sum(s.volume.array.nbytes for s in res.series)
    assert nbytes == 10 * 15 * 64 * 64 * 2
    assert peak < 2.0 * nbytes, f"read allocations peak at {peak / nbytes:.2f}x the volume (measured 1.39-1.48x)"


@pytest.mark.xfail(strict=True, reason="issue 17 goal not met: RSS increase 3.31-3.53x the 1.17 MiB volume, of which "
                                       "1.5x library code pages first run (bench/README.md)")
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/status")
def test_whole_process_rss_increase_under_3x_the_volume(ge_series, tmp_path):
    out = subprocess.run([sys.executable, "-c", _CHILD, str(ge_series), str(tmp_path)], capture_output=True,
                         text=True, cwd=REPO, env={**os.environ, "PYTHONPATH": str(REPO)}, check=True)
    fig = json.loads(out.stdout.strip().splitlines()[-1])
    ratio = fig["increase_kib"] * 1024 / fig["nbytes"]
    assert ratio < 3.0, f"RSS increase after imports {ratio:.2f}x the volume"
