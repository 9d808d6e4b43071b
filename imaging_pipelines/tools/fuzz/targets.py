"""One fuzz input: build it from a seed, write it to disk, call the project's reader and judge the outcome.

Outcomes: ``loaded`` (the reader returned an image), ``clean_error`` (it raised
:class:`~imaging_pipelines.core.errors.ImagingInputError`), ``other_exception`` (any other exception, or an
out-of-memory error anywhere in the chain or swallowed into a message: a finding). Crashes and hangs can only
be seen from outside the process (:mod:`.harness`).

The pseudo-reader ``selftest`` proves that the harness notices findings: its seeds are not mutated and
a file holding ``crash`` aborts the process, ``hang`` sleeps, ``raise`` raises KeyError.
"""

from __future__ import annotations

import random
import shutil
import time
import traceback
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.tools.fuzz.mutations import mutate_file
from imaging_pipelines.tools.fuzz.seeds import Seed

LOADED, CLEAN_ERROR, OTHER_EXCEPTION, CRASH, HANG = "loaded", "clean_error", "other_exception", "crash", "hang"
SELFTEST = "selftest"
# Signs of a failed allocation in an error message (libtiff's "Out of memory reading of <tag>" is not one:
# it is libtiff refusing an absurd tag count before allocating, and costs no memory).
_OOM_MARKERS = ("MemoryError", "Unable to allocate", "bad_alloc", "Cannot allocate memory")


@dataclass(frozen=True)
class FuzzCase:
    """A mutated input: the files to write (name, bytes) and what was done to which seed."""

    kind: str
    index: int
    seed_name: str
    files: tuple[tuple[str, bytes], ...]
    mutation: str


def make_case(corpus: Mapping[str, Sequence[Seed]], kind: str, index: int, campaign_seed: int) -> FuzzCase:
    """Input number ``index`` of reader ``kind`` in campaign ``campaign_seed`` (deterministic)."""
    rng = random.Random(f"{campaign_seed}:{kind}:{index}")
    seeds = corpus[kind]
    if kind == SELFTEST:
        seed = seeds[index % len(seeds)]
        return FuzzCase(kind, index, seed.name, seed.files, "none (selftest)")
    seed = seeds[rng.randrange(len(seeds))]
    files = list(seed.files)
    donors = [data for s in seeds for _, data in s.files]
    notes = []
    if kind == "dicom" and len(files) > 1 and rng.random() < 0.15:
        targets = range(len(files))  # damage every file of the series, not just one
    else:
        targets = [rng.randrange(len(files))]
    for i in targets:
        name, data, what = mutate_file(kind, files[i][0], files[i][1], random.Random(rng.random()), donors)
        files[i] = (name, data)
        notes.append(f"{name}: {what}")
    return FuzzCase(kind, index, seed.name, tuple(files), " | ".join(notes))


def write_case(case: FuzzCase, folder: Path) -> Path:
    """Write the case's files into ``folder`` (created); returns the path to hand to the reader."""
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in case.files:
        (folder / name).write_bytes(data)
    return folder if case.kind == "dicom" else folder / case.files[0][0]


def _selftest_reader(path: Path) -> None:
    """Misbehave on purpose as the file says (see the module docstring)."""
    import os

    what = path.read_bytes().strip()
    if what == b"crash":
        os.abort()
    if what == b"hang":
        time.sleep(3600)
    if what == b"raise":
        raise KeyError("selftest")
    if what == b"refuse":
        raise ImagingInputError(path, "selftest refusal")


def _oom_in(exc: BaseException | None) -> bool:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, MemoryError) or any(m in str(exc) for m in _OOM_MARKERS):
            return True
        exc = exc.__cause__ or exc.__context__
    return False


def call_reader(kind: str, path: Path) -> None:
    """Read ``path`` with the project's reader for ``kind``; raises what the reader raises."""
    if kind == "dicom":
        from imaging_pipelines.core.errors import ImagingInputError
        from imaging_pipelines.medical.io.dicom import read_dicom_folder
        from imaging_pipelines.medical.io.series_integrity import check_series_integrity

        try:  # the ingestion's header checks (duplicates, completeness, burned-in) see the same files first
            check_series_integrity(sorted(p for p in path.rglob("*") if p.is_file()))
        except ImagingInputError:
            pass  # a clear refusal; the series reader still gets the input
        result = read_dicom_folder(path)
        swallowed = [note.message for note in result.errors if any(m in note.message for m in _OOM_MARKERS)]
        if swallowed:  # an allocation failure reported as a bad file is still an unbounded allocation
            raise MemoryError(f"reader swallowed an allocation failure: {swallowed[0]}")
    elif kind in ("nifti", "nrrd_mha"):
        from imaging_pipelines.medical.io.image_files import read_image_file

        read_image_file(path)
    elif kind == "geotiff":
        from imaging_pipelines.remote_sensing.io import read_raster

        read_raster(path)
    elif kind == SELFTEST:
        _selftest_reader(path)
    else:
        raise ValueError(f"unknown reader kind {kind!r}")


def judge(exc: BaseException | None) -> tuple[str, str]:
    """(outcome, detail) for what a reader call raised (None: it returned)."""
    if exc is None:
        return LOADED, ""
    if isinstance(exc, ImagingInputError) and not _oom_in(exc):
        return CLEAN_ERROR, str(exc)[-300:]
    tb = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__, limit=-6))
    return OTHER_EXCEPTION, tb[-3000:]


def run_case(case: FuzzCase, workdir: Path) -> tuple[str, str]:
    """Write, read and judge one case inside ``workdir`` (removed afterwards)."""
    folder = workdir / f"case-{case.kind}-{case.index}"
    try:
        path = write_case(case, folder)
        try:
            call_reader(case.kind, path)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - judging every exception (SystemExit, panics too) is the point
            return judge(exc)
        return judge(None)
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def timed_run(case: FuzzCase, workdir: Path) -> tuple[str, str, float]:
    """:func:`run_case` plus its wall time in seconds."""
    t0 = time.perf_counter()
    outcome, detail = run_case(case, workdir)
    return outcome, detail, time.perf_counter() - t0
