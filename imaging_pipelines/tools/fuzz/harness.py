"""Run many fuzz inputs in worker subprocesses and count what happened, per reader.

Each worker (:mod:`.worker`) runs one input at a time under an address-space limit. A worker that dies
(segfault, abort, killed by the kernel) is a **crash**, one that does not answer within ``timeout_s`` is a
**hang** (it is killed); either way the input is saved to ``findings_dir`` and a fresh worker takes over.
Inputs are numbered per reader and rebuilt deterministically from (campaign seed, reader, number), so any
finding can be reproduced with ``bench/fuzz_readers.py --case KIND:NUMBER --seed SEED``.
"""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from imaging_pipelines.tools.fuzz.seeds import KINDS, load_corpus
from imaging_pipelines.tools.fuzz.targets import (CLEAN_ERROR, CRASH, HANG, LOADED, OTHER_EXCEPTION, FuzzCase, make_case,
                                            write_case)
from imaging_pipelines.core.limits import MAX_IMAGE_BYTES_ENV

DEFAULT_MEMORY_LIMIT = 2 * 2**30  # bytes of address space per worker
DEFAULT_MAX_IMAGE_BYTES = 256 * 2**20  # the readers' allocation limit inside workers (below the memory limit)
_LOG_MAX_BYTES = 20 * 2**20
_START_TIMEOUT_S = 120.0


@dataclass
class ReaderStats:
    """Outcome counts of one reader; ``busy_s`` is the workers' time on its inputs (mutation + read), seconds."""

    kind: str
    inputs: int = 0
    loaded: int = 0
    clean_errors: int = 0
    other_exceptions: int = 0
    crashes: int = 0
    hangs: int = 0
    peak_rss_kib: int = 0
    peak_rss_input: int | None = None  # number of the input with that peak
    busy_s: float = 0.0

    def add(self, outcome: str, seconds: float, rss_kib: int = 0, index: int | None = None) -> None:
        self.inputs += 1
        attr = {LOADED: "loaded", CLEAN_ERROR: "clean_errors", OTHER_EXCEPTION: "other_exceptions",
                CRASH: "crashes", HANG: "hangs"}[outcome]
        setattr(self, attr, getattr(self, attr) + 1)
        self.busy_s += seconds
        if rss_kib > self.peak_rss_kib:
            self.peak_rss_kib, self.peak_rss_input = rss_kib, index

    @property
    def findings(self) -> int:
        return self.other_exceptions + self.crashes + self.hangs

    @property
    def inputs_per_s(self) -> float:
        """Inputs per second of one worker's time."""
        return self.inputs / self.busy_s if self.busy_s > 0 else 0.0


@dataclass
class Finding:
    kind: str
    index: int
    outcome: str
    seed_name: str
    mutation: str
    detail: str
    saved_to: str | None = None


@dataclass
class CampaignReport:
    stats: dict[str, ReaderStats]
    findings: list[Finding] = field(default_factory=list)
    wall_s: float = 0.0
    settings: dict = field(default_factory=dict)
    worker_restarts: int = 0
    outcomes: dict[str, str] = field(default_factory=dict)  # "kind:number" -> outcome, to compare campaigns

    @property
    def inputs(self) -> int:
        return sum(s.inputs for s in self.stats.values())

    def table(self) -> str:
        """The per-reader outcome table (plain text)."""
        head = (f"{'reader':8s} {'inputs':>7s} {'loaded':>7s} {'clean err':>9s} {'other exc':>9s} {'crashes':>7s} "
                f"{'hangs':>5s} {'peak RSS':>9s} {'inputs/s':>8s}")
        rows = [head, "-" * len(head)]
        total = ReaderStats("total")
        for s in self.stats.values():
            rows.append(f"{s.kind:8s} {s.inputs:7d} {s.loaded:7d} {s.clean_errors:9d} {s.other_exceptions:9d} "
                        f"{s.crashes:7d} {s.hangs:5d} {s.peak_rss_kib / 1024:6.0f} MiB {s.inputs_per_s:8.1f}")
            for name in ("inputs", "loaded", "clean_errors", "other_exceptions", "crashes", "hangs"):
                setattr(total, name, getattr(total, name) + getattr(s, name))
            total.peak_rss_kib = max(total.peak_rss_kib, s.peak_rss_kib)
        rate = total.inputs / self.wall_s if self.wall_s else 0.0
        rows.append("-" * len(head))
        rows.append(f"{'total':8s} {total.inputs:7d} {total.loaded:7d} {total.clean_errors:9d} "
                    f"{total.other_exceptions:9d} {total.crashes:7d} {total.hangs:5d} "
                    f"{total.peak_rss_kib / 1024:6.0f} MiB {rate:8.1f}")
        peaks = ", ".join(f"{s.kind} #{s.peak_rss_input}" for s in self.stats.values() if s.peak_rss_input is not None)
        rows.append(f"inputs with the peak RSS: {peaks or '-'}")
        rows.append(f"wall time {self.wall_s:.1f} s with {self.settings.get('workers')} worker(s); inputs/s per "
                    f"reader = one worker's rate, total = all workers; peak RSS = largest per-input high-water mark; "
                    f"{self.worker_restarts} worker restart(s)")
        return "\n".join(rows)

    def to_json(self) -> dict:
        return {"stats": {k: {**asdict(s), "inputs_per_s": s.inputs_per_s} for k, s in self.stats.items()},
                "findings": [asdict(f) for f in self.findings], "wall_s": self.wall_s,
                "settings": self.settings, "worker_restarts": self.worker_restarts, "outcomes": self.outcomes}


class _Worker:
    """One worker subprocess, its pending job and its partial output line."""

    def __init__(self, number: int, cmd: list[str], env: dict[str, str], log_path: Path):
        self.number, self.cmd, self.env, self.log_path = number, cmd, env, log_path
        self.proc: subprocess.Popen | None = None
        self.job: tuple[str, int] | None = None
        self.deadline = 0.0
        self._buffer = b""

    def start(self) -> None:
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(self.cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log,
                                         env=self.env, start_new_session=True)
        self._buffer = b""
        line = self.read_line(time.monotonic() + _START_TIMEOUT_S)
        if line is None or not json.loads(line).get("ready"):
            self.kill()
            raise RuntimeError(f"fuzz worker did not start; see {self.log_path}")

    @property
    def fd(self) -> int:
        return self.proc.stdout.fileno()

    def send(self, kind: str, index: int, timeout_s: float) -> None:
        self.job = (kind, index)
        self.deadline = time.monotonic() + timeout_s
        self.proc.stdin.write((json.dumps({"kind": kind, "index": index}) + "\n").encode())
        self.proc.stdin.flush()

    def feed(self) -> list[str] | None:
        """Lines now available; None when the worker's stdout closed (it died)."""
        data = os.read(self.fd, 1 << 16)
        if not data:
            return None
        self._buffer += data
        *lines, self._buffer = self._buffer.split(b"\n")
        return [line.decode() for line in lines]

    def read_line(self, deadline: float) -> str | None:
        while b"\n" not in self._buffer:
            remaining = deadline - time.monotonic()
            if remaining <= 0 or not select.select([self.fd], [], [], remaining)[0]:
                return None
            data = os.read(self.fd, 1 << 16)
            if not data:
                return None
            self._buffer += data
        line, self._buffer = self._buffer.split(b"\n", 1)
        return line.decode()

    def kill(self) -> int | None:
        """Kill the worker's process group; returns its exit status (negative: the signal)."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        rc = self.proc.wait()
        for stream in (self.proc.stdin, self.proc.stdout):
            try:
                stream.close()
            except OSError:
                pass
        self.proc = None
        return rc

    def log_tail(self, n: int = 3000) -> str:
        try:
            with open(self.log_path, "rb") as fh:
                fh.seek(max(0, self.log_path.stat().st_size - n))
                return fh.read().decode(errors="replace")
        except OSError:
            return ""

    def trim_log(self) -> None:
        try:
            if self.log_path.stat().st_size > _LOG_MAX_BYTES:
                os.truncate(self.log_path, 0)
        except OSError:
            pass


def _exit_text(rc: int | None) -> str:
    if rc is None:
        return "unknown exit status"
    if rc < 0:
        try:
            return f"killed by signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"killed by signal {-rc}"
    return f"exited with status {rc}"


def save_case(case: FuzzCase, folder: Path, info: dict) -> Path:
    """Write a finding's input files and a ``finding.json`` describing it into ``folder``."""
    target = folder / f"{case.kind}-{case.index}"
    write_case(case, target / "input")
    (target / "finding.json").write_text(json.dumps({**info, "seed": case.seed_name, "mutation": case.mutation},
                                                    indent=2))
    return target


def _worker_env(max_image_bytes: int) -> dict[str, str]:
    """The workers' environment: the readers' byte limit, one thread per library, a small GDAL cache (MB)."""
    return {**os.environ, MAX_IMAGE_BYTES_ENV: str(max_image_bytes), "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "MALLOC_ARENA_MAX": "2", "GDAL_PAM_ENABLED": "NO",
            "GDAL_CACHEMAX": "128", "ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS": "1", "PYTHONFAULTHANDLER": "1"}


class _Campaign:
    """The scheduling loop of :func:`run_campaign`: keep every worker busy, collect answers, replace dead or
    stuck workers and record their input as a finding."""

    def __init__(self, corpus, report: CampaignReport, pool: list[_Worker], seed: int, timeout_s: float,
                 findings_path: Path | None):
        self.corpus, self.report, self.pool, self.seed = corpus, report, pool, seed
        self.timeout_s, self.findings_path = timeout_s, findings_path
        self.done = 0

    def finding(self, kind: str, index: int, outcome: str, detail: str) -> None:
        case = make_case(self.corpus, kind, index, self.seed)
        saved = None
        if self.findings_path is not None:
            info = {"outcome": outcome, "detail": detail, "campaign_seed": self.seed}
            saved = str(save_case(case, self.findings_path, info))
        self.report.findings.append(Finding(kind, index, outcome, case.seed_name, case.mutation, detail, saved))

    def replace(self, w: _Worker, outcome: str, detail: str) -> None:
        """Record the worker's input as a crash or hang and start a fresh worker in its place."""
        kind, index = w.job
        self.report.stats[kind].add(outcome, self.timeout_s)
        self.report.outcomes[f"{kind}:{index}"] = outcome
        self.finding(kind, index, outcome, detail)
        w.job = None
        self.report.worker_restarts += 1
        self.done += 1
        w.start()

    def collect(self, w: _Worker) -> None:
        lines = w.feed()
        if lines is None:  # stdout closed: the worker died
            rc = w.kill()
            self.replace(w, CRASH, f"worker {_exit_text(rc)}\n{w.log_tail()}")
            return
        for line in lines:
            result = json.loads(line)
            self.report.stats[result["kind"]].add(result["outcome"], result["seconds"], result["peak_rss_kib"],
                                                  result["index"])
            self.report.outcomes[f"{result['kind']}:{result['index']}"] = result["outcome"]
            if result["outcome"] == OTHER_EXCEPTION:
                self.finding(result["kind"], result["index"], OTHER_EXCEPTION, result["detail"])
            w.job = None
            self.done += 1
        w.trim_log()

    def run(self, jobs: deque, progress, n_inputs: int, t0: float) -> None:
        while jobs or any(w.job for w in self.pool):
            for w in self.pool:
                if w.job is None and jobs:
                    w.send(*jobs.popleft(), self.timeout_s)
            busy = {w.fd: w for w in self.pool if w.job}
            wait = max(0.0, min(w.deadline for w in busy.values()) - time.monotonic())
            ready, _, _ = select.select(list(busy), [], [], wait)
            for fd in ready:
                self.collect(busy[fd])
            now = time.monotonic()
            for w in self.pool:
                if w.job and now >= w.deadline and w.fd not in ready:
                    w.kill()
                    self.replace(w, HANG, f"no answer within {self.timeout_s:g} s\n{w.log_tail()}")
            self.report.wall_s = time.monotonic() - t0
            if progress is not None:
                progress(self.done, n_inputs, self.report)


def run_campaign(corpus_dir: str | os.PathLike, n_inputs: int, *, kinds: Sequence[str] = KINDS, seed: int = 0,
                 workers: int = 2, timeout_s: float = 10.0, memory_limit: int = DEFAULT_MEMORY_LIMIT,
                 max_image_bytes: int = DEFAULT_MAX_IMAGE_BYTES, findings_dir: str | os.PathLike | None = None,
                 progress: Callable[[int, int, CampaignReport], None] | None = None) -> CampaignReport:
    """Run ``n_inputs`` mutated inputs, spread evenly over ``kinds``, on ``workers`` subprocesses.

    ``timeout_s``: seconds one input may take before it counts as a hang; ``memory_limit``: bytes of address
    space per worker; ``max_image_bytes``: the readers' allocation limit inside the workers;
    ``progress(done, total, report)`` is called after every scheduling round.
    """
    kinds = tuple(kinds)
    corpus = load_corpus(corpus_dir, kinds)
    empty = [k for k in kinds if not corpus[k]]
    if empty:
        raise ValueError(f"no seed files for {empty} in {corpus_dir}")
    report = CampaignReport({k: ReaderStats(k) for k in kinds}, settings={
        "inputs": n_inputs, "seed": seed, "workers": workers, "timeout_s": timeout_s, "memory_limit": memory_limit,
        "max_image_bytes": max_image_bytes, "seeds": {k: [s.name for s in corpus[k]] for k in kinds}})
    jobs = deque((kinds[i % len(kinds)], i // len(kinds)) for i in range(n_inputs))
    scratch = Path(tempfile.mkdtemp(prefix="fuzz-campaign-"))  # worker logs and case folders
    pool = []
    for n in range(max(1, workers)):
        cmd = [sys.executable, "-m", "imaging_pipelines.tools.fuzz.worker", "--corpus", str(corpus_dir), "--seed",
               str(seed), "--kinds", ",".join(kinds), "--memory-limit", str(memory_limit),
               "--workdir", str(scratch / f"work-{n}")]
        pool.append(_Worker(n, cmd, _worker_env(max_image_bytes), scratch / f"worker-{n}.log"))
    campaign = _Campaign(corpus, report, pool, seed, timeout_s, Path(findings_dir) if findings_dir else None)
    t0 = time.monotonic()
    try:
        for w in pool:
            w.start()
        campaign.run(jobs, progress, n_inputs, t0)
    finally:
        for w in pool:
            w.kill()
        shutil.rmtree(scratch, ignore_errors=True)
    report.wall_s = time.monotonic() - t0
    return report
