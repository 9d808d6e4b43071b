"""Fuzz the DICOM, NIfTI and GeoTIFF readers with mutated real and generated files.

Every input must either load or raise ``ImagingInputError``; any other exception, a crash of the worker
process or an input that takes longer than ``--timeout`` is a finding (saved under ``--findings``).
Workers run under an address-space limit (``--memory-limit-mib``) with the readers' allocation limit
``IMAGING_PIPELINES_MAX_IMAGE_BYTES`` set to ``--max-image-mib``, so unbounded allocations show up as findings.

    .venv/bin/python bench/fuzz_readers.py --inputs 10200 --workers 2            # ~3,400 inputs per reader
    .venv/bin/python bench/fuzz_readers.py --case dicom:123 --seed 0              # replay one input in-process
    .venv/bin/python bench/fuzz_readers.py --atheris dicom -- -runs=3000 -max_total_time=120

Exit status: 0 without findings, 1 with findings, 2 on usage errors.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from imaging_pipelines.tools.fuzz.harness import DEFAULT_MAX_IMAGE_BYTES, DEFAULT_MEMORY_LIMIT, run_campaign
from imaging_pipelines.tools.fuzz.seeds import EXTRA_KINDS, KINDS, build_corpus, default_shared_root, load_corpus
from imaging_pipelines.core.limits import MAX_IMAGE_BYTES_ENV

MIB = 2**20


def _parse(argv: list[str]) -> tuple[argparse.Namespace, list[str]]:
    extra: list[str] = []
    if "--" in argv:
        at = argv.index("--")
        argv, extra = argv[:at], argv[at + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--inputs", type=int, default=10200, help="number of mutated inputs, spread evenly over "
                        "the readers (default 10200)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed (default 0)")
    parser.add_argument("--timeout", type=float, default=10.0, help="seconds per input before it is a hang")
    parser.add_argument("--workers", type=int, default=2, help="worker processes (default 2)")
    parser.add_argument("--readers", default=",".join(KINDS), help=f"comma-separated readers (default "
                        f"{','.join(KINDS)}; also {','.join(EXTRA_KINDS)}: NRRD/MetaImage via SimpleITK)")
    parser.add_argument("--seed-files", type=Path, default=None,
                        help="folder of real seed files (the shared data root; default $IMAGING_SHARED_DATA or "
                             "../shared/data beside the project)")
    parser.add_argument("--no-real-seeds", action="store_true", help="use only generated seed files")
    parser.add_argument("--corpus", type=Path, default=None, help="where to write the seed corpus (default: temp)")
    parser.add_argument("--findings", type=Path, default=Path("test-artifacts/fuzz-findings"),
                        help="folder for the inputs of findings (default test-artifacts/fuzz-findings)")
    parser.add_argument("--memory-limit-mib", type=int, default=DEFAULT_MEMORY_LIMIT // MIB,
                        help="address-space limit per worker, MiB (default %(default)s)")
    parser.add_argument("--max-image-mib", type=int, default=DEFAULT_MAX_IMAGE_BYTES // MIB,
                        help=f"{MAX_IMAGE_BYTES_ENV} inside the workers, MiB (default %(default)s)")
    parser.add_argument("--json", type=Path, default=None, help="also write the report as JSON here")
    parser.add_argument("--case", default=None, metavar="KIND:NUMBER", help="run one input in this process and "
                        "print its outcome (reproduce a finding)")
    parser.add_argument("--atheris", choices=KINDS + EXTRA_KINDS, default=None, help="coverage-guided fuzzing of one reader with "
                        "atheris; libFuzzer options go after '--'")
    return parser.parse_args(argv), extra


def _corpus(args: argparse.Namespace, kinds: tuple[str, ...], tmp: str) -> Path:
    shared = None if args.no_real_seeds else (args.seed_files or default_shared_root())
    if shared is not None and not Path(shared).is_dir():
        sys.exit(f"seed-file folder {shared} does not exist")
    corpus = args.corpus or Path(tmp) / "corpus"
    names = build_corpus(corpus, shared, kinds)
    print(f"seed corpus {corpus} (real seeds from {shared or 'nowhere: generated only'}):")
    for kind in kinds:
        print(f"  {kind}: {', '.join(names[kind])}")
    return corpus


def _progress(every_s: float = 10.0):
    last = [0.0]

    def show(done: int, total: int, report) -> None:
        now = time.monotonic()
        if done == total or now - last[0] >= every_s:
            last[0] = now
            counts = " ".join(f"{k}={s.inputs}" for k, s in report.stats.items())
            findings = len(report.findings)
            print(f"[{report.wall_s:7.1f} s] {done}/{total} inputs ({done / max(report.wall_s, 1e-9):.1f}/s) "
                  f"{counts} findings={findings}", flush=True)
    return show


def run_one(corpus: Path, spec: str, seed: int, max_image_bytes: int) -> int:
    """Replay one input in this process; prints the mutation and the outcome."""
    from imaging_pipelines.tools.fuzz.targets import make_case, timed_run

    kind, _, number = spec.partition(":")
    os.environ[MAX_IMAGE_BYTES_ENV] = str(max_image_bytes)
    case = make_case(load_corpus(corpus, (kind,)), kind, int(number), seed)
    print(f"{kind} #{number} seed={case.seed_name}\nmutation: {case.mutation}")
    with tempfile.TemporaryDirectory() as tmp:
        outcome, detail, seconds = timed_run(case, Path(tmp))
    print(f"outcome: {outcome} in {seconds:.3f} s\n{detail}")
    return 0 if outcome in ("loaded", "clean_error") else 1


def instrument_readers() -> None:
    """Import the readers and their Python dependencies with atheris' coverage instrumentation.

    Must run before anything else imports them (so before the seed corpus is built).
    """
    import atheris

    with atheris.instrument_imports(include=["imaging_pipelines", "pydicom", "nibabel", "affine"]):
        import imaging_pipelines.medical.io.dicom  # noqa: F401
        import imaging_pipelines.medical.io.image_files  # noqa: F401
        import imaging_pipelines.remote_sensing.io  # noqa: F401  (imported for its instrumentation)


def run_atheris(corpus: Path, kind: str, libfuzzer_args: list[str], max_image_bytes: int, findings: Path) -> int:
    """Coverage-guided fuzzing of one reader (atheris / libFuzzer); seeds are the corpus files of ``kind``.

    libFuzzer ends the process itself; the counts of outcomes are printed every 500 inputs.
    """
    import logging
    import warnings

    import atheris

    from imaging_pipelines.tools.fuzz.targets import CLEAN_ERROR, LOADED, call_reader, judge

    os.environ[MAX_IMAGE_BYTES_ENV] = str(max_image_bytes)

    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)
    seed_dir = Path(tempfile.mkdtemp(prefix=f"atheris-{kind}-"))
    for seed in load_corpus(corpus, (kind,))[kind]:
        for name, data in seed.files:
            (seed_dir / f"{seed.name}__{name}").write_bytes(data)
    work = Path(tempfile.mkdtemp(prefix="atheris-work-"))
    counts = {LOADED: 0, CLEAN_ERROR: 0}

    def test_one_input(data: bytes) -> None:
        folder = work / "case"
        folder.mkdir(exist_ok=True)
        for old in folder.iterdir():
            old.unlink()
        if kind == "dicom":
            (folder / "input.dcm").write_bytes(data)
            path = folder
        else:
            if kind == "geotiff":
                name = "input.tif"
            elif kind == "nrrd_mha":
                name = "input.nrrd" if data[:4] == b"NRRD" else "input.mha"
            else:
                name = "input.nii.gz" if data[:2] == b"\x1f\x8b" else "input.nii"
            path = folder / name
            path.write_bytes(data)
        try:
            call_reader(kind, path)
            exc = None
        except (Exception, MemoryError) as caught:  # noqa: BLE001
            exc = caught
        outcome, detail = judge(exc)
        if outcome not in counts:
            raise RuntimeError(f"{kind} reader finding: {detail}") from exc
        counts[outcome] += 1
        if sum(counts.values()) % 500 == 0:
            print(f"atheris {kind}: {counts[LOADED]} loaded, {counts[CLEAN_ERROR]} clean errors, no finding",
                  flush=True)

    findings.mkdir(parents=True, exist_ok=True)
    defaults = ["-timeout=10", "-rss_limit_mb=3072", f"-artifact_prefix={findings}/atheris-{kind}-"]
    given = {a.split("=")[0] for a in libfuzzer_args}
    argv = [sys.argv[0], *[d for d in defaults if d.split("=")[0] not in given], *libfuzzer_args, str(seed_dir)]
    print(f"atheris on the {kind} reader: {' '.join(argv[1:])}", flush=True)
    atheris.Setup(argv, test_one_input)
    atheris.Fuzz()
    return 0


def main(argv: list[str] | None = None) -> int:
    args, extra = _parse(sys.argv[1:] if argv is None else argv)
    kinds = tuple(k.strip() for k in args.readers.split(",") if k.strip())
    unknown = set(kinds) - set(KINDS + EXTRA_KINDS)
    if unknown:
        print(f"unknown reader(s) {sorted(unknown)}; choose from {KINDS + EXTRA_KINDS}", file=sys.stderr)
        return 2
    max_image_bytes = args.max_image_mib * MIB
    with tempfile.TemporaryDirectory(prefix="fuzz-readers-") as tmp:
        if args.atheris:
            instrument_readers()
            corpus = _corpus(args, (args.atheris,), tmp)
            return run_atheris(corpus, args.atheris, extra, max_image_bytes, args.findings)
        if args.case:
            corpus = _corpus(args, (args.case.partition(":")[0],), tmp)
            return run_one(corpus, args.case, args.seed, max_image_bytes)
        corpus = _corpus(args, kinds, tmp)
        print(f"{args.inputs} inputs over {', '.join(kinds)}; seed {args.seed}, {args.workers} worker(s), "
              f"timeout {args.timeout:g} s, memory limit {args.memory_limit_mib} MiB, "
              f"{MAX_IMAGE_BYTES_ENV}={max_image_bytes}", flush=True)
        report = run_campaign(corpus, args.inputs, kinds=kinds, seed=args.seed, workers=args.workers,
                              timeout_s=args.timeout, memory_limit=args.memory_limit_mib * MIB,
                              max_image_bytes=max_image_bytes, findings_dir=args.findings, progress=_progress())
    print()
    print(report.table())
    for f in report.findings[:20]:
        print(f"\nFINDING {f.outcome}: {f.kind} #{f.index} seed={f.seed_name} saved={f.saved_to}\n"
              f"  mutation: {f.mutation[:400]}\n  " + f.detail[-1500:].replace("\n", "\n  "))
    if len(report.findings) > 20:
        print(f"\n... {len(report.findings) - 20} more finding(s)")
    if args.json:
        args.json.write_text(json.dumps(report.to_json(), indent=2))
    return 1 if report.findings else 0


if __name__ == "__main__":
    sys.exit(main())
