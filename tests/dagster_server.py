"""Start and stop a real Dagster server (``dg dev``, ``dagster dev`` or ``dagster-webserver``) for tests."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from tests.conftest import REPO

BIN = Path(sys.executable).parent


def persistent_dagster_home(tmp_path: Path, monkeypatch) -> Path:
    """A fresh ``DAGSTER_HOME`` under ``tmp_path`` (telemetry off) that runs and a started server share."""
    home = tmp_path / "dagster_home"
    home.mkdir()
    (home / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    monkeypatch.setenv("DAGSTER_HOME", str(home))
    return home


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(command: str, port: int, log: Path, timeout_s: float = 180) -> subprocess.Popen:
    """Run ``dg dev`` (``command="dg"``: the dg project of ``pyproject.toml``, its YAML pre-check included),
    ``dagster dev`` (``"dev"``) or ``dagster-webserver`` (``"webserver"``) on ``workspace.yaml`` at
    127.0.0.1:``port`` with the current environment (this checkout first on ``PYTHONPATH``), output into
    ``log``; return once ``/server_info`` answers. SIGINT is reset to its default in the child (a background
    ``dagster dev`` ignores it, and copies that to SIGTERM) and the server gets its own process group, so
    :func:`stop_server` ends all of it."""
    if command == "dg":
        args = [str(BIN / "dg"), "dev"]
    else:
        args = [str(BIN / "dagster"), "dev"] if command == "dev" else [str(BIN / "dagster-webserver")]
        args += ["-w", str(REPO / "workspace.yaml")]
    env = os.environ.copy()
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*args, "-h", "127.0.0.1", "-p", str(port)],
            cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL), start_new_session=True,
        )
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            urllib.request.urlopen(f"http://127.0.0.1:{port}/server_info", timeout=2)
            return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                stop_server(proc)
                raise AssertionError(f"dagster {command} did not answer within {timeout_s:.0f} s: "
                                     f"{log.read_text(errors='replace')[-3000:]}") from None
            time.sleep(1)


def stop_server(proc: subprocess.Popen, grace_s: float = 30) -> None:
    """SIGINT to the server's process group (``dagster dev`` stops its webserver, daemon and code server), then
    SIGKILL to whatever of the group is left (after ``grace_s`` at most)."""
    try:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGINT)
            proc.wait(timeout=grace_s)
    except (subprocess.TimeoutExpired, ProcessLookupError):
        pass
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if proc.poll() is None:
            proc.wait(timeout=10)
