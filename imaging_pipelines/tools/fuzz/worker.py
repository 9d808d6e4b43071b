"""Fuzz worker: ``python -m imaging_pipelines.tools.fuzz.worker --corpus DIR --seed N --kinds K1,K2 --memory-limit BYTES``.

Reads one JSON job per line on stdin (``{"kind": ..., "index": ...}``), builds that input from the corpus,
runs the reader and answers one JSON line (outcome, detail, seconds, peak RSS in KiB of that input). The
address space is capped (``RLIMIT_AS``) so unbounded allocations fail as MemoryError instead of swapping;
faulthandler writes a Python traceback to stderr if the process crashes. Anything the libraries print to
stdout is sent to stderr, so the answers cannot be corrupted.
"""

from __future__ import annotations

import argparse
import faulthandler
import json
import logging
import os
import re
import resource
import sys
import tempfile
import warnings
from pathlib import Path


def _reset_peak_rss() -> bool:
    """Reset the kernel's RSS high-water mark of this process (Linux >= 4.0); False if not possible."""
    try:
        with open("/proc/self/clear_refs", "w") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


def peak_rss_kib() -> int:
    """RSS high-water mark (KiB) since the last reset, else since the process started."""
    try:
        with open("/proc/self/status") as fh:
            match = re.search(r"VmHWM:\s+(\d+)", fh.read())
        if match:
            return int(match.group(1))
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--corpus", required=True, help="corpus folder (see imaging_pipelines.tools.fuzz.seeds)")
    parser.add_argument("--seed", type=int, default=0, help="campaign seed")
    parser.add_argument("--kinds", default="dicom,nifti,geotiff", help="comma-separated readers to load seeds of")
    parser.add_argument("--memory-limit", type=int, default=0, help="RLIMIT_AS in bytes (0: none)")
    parser.add_argument("--workdir", default=None, help="folder for the input files (default: a new temp folder)")
    args = parser.parse_args(argv)

    protocol = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # library chatter on stdout goes to the log
    sys.stdout = sys.stderr
    if args.memory_limit:
        resource.setrlimit(resource.RLIMIT_AS, (args.memory_limit, args.memory_limit))
    faulthandler.enable(all_threads=True)
    warnings.simplefilter("ignore")
    logging.disable(logging.CRITICAL)

    from imaging_pipelines.tools.fuzz.seeds import load_corpus
    from imaging_pipelines.tools.fuzz.targets import make_case, timed_run

    corpus = load_corpus(args.corpus, tuple(args.kinds.split(",")))
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="fuzz-worker-"))
    workdir.mkdir(parents=True, exist_ok=True)
    protocol.write(json.dumps({"ready": True, "pid": os.getpid()}) + "\n")
    for line in sys.stdin:
        job = json.loads(line)
        case = make_case(corpus, job["kind"], job["index"], args.seed)
        print(f"--- {case.kind} #{case.index} seed={case.seed_name}: {case.mutation[:300]}", file=sys.stderr,
              flush=True)
        _reset_peak_rss()
        outcome, detail, seconds = timed_run(case, workdir)
        protocol.write(json.dumps({"kind": case.kind, "index": case.index, "outcome": outcome, "detail": detail,
                                   "seconds": seconds, "peak_rss_kib": peak_rss_kib()}) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
