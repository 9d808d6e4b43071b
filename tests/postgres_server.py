"""A throwaway PostgreSQL server on 127.0.0.1 for tests (the PostgreSQL-backed Dagster instance).

:func:`start_postgres` runs ``initdb`` into a fresh temporary folder, starts the server with ``pg_ctl`` on a free
loopback port (its Unix socket in the same folder, nothing in /var/run), creates a database and returns how to
reach it; :func:`stop_postgres` stops it (``immediate``: it is thrown away) and removes the folder. The server
never runs as root (PostgreSQL refuses to): as root every server command runs as the ``postgres`` OS user through
``runuser`` and the folder belongs to that user; as anyone else the commands run directly.

The binaries come from ``$PG_BIN`` when set, else the newest ``/usr/lib/postgresql/<version>/bin`` (the Debian
``postgresql`` package; ``deploy/postgres_local.sh`` installs it), else ``initdb``/``pg_ctl`` on ``PATH``.
:func:`missing_reason` says why no server can be started (the test skips itself with it).

The fixture ``postgres_server`` (import it into a test module) is one server per test module.
"""

from __future__ import annotations

import glob
import importlib.util
import os
import pwd
import re
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.dagster_server import free_port

SERVER_USER = "postgres"  # the OS user the server runs as when the tests run as root
DB_USER = "dagster"
DB_NAME = "dagster"


def pg_bin() -> Path | None:
    """The folder with ``initdb``, ``pg_ctl`` and ``postgres``, or None."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    versions = [Path(p).parent for p in glob.glob("/usr/lib/postgresql/*/bin/initdb")]
    if versions:
        return max(versions, key=lambda p: [int(n) for n in re.findall(r"\d+", p.parent.name)] or [0])
    initdb = shutil.which("initdb")
    return Path(initdb).parent if initdb else None


def missing_reason() -> str | None:
    """Why no throwaway server can be started here (None: it can)."""
    folder = pg_bin()
    if folder is None or not all((folder / b).exists() for b in ("initdb", "pg_ctl", "postgres")):
        return ("PostgreSQL server binaries not found (no /usr/lib/postgresql/*/bin/initdb, $PG_BIN or initdb on "
                "PATH): install the Debian package `postgresql` (`make postgres-deps`, or as root "
                "`bash deploy/postgres_local.sh`)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam(SERVER_USER)
        except KeyError:
            return f"running as root but there is no `{SERVER_USER}` OS user to run the PostgreSQL server as"
        if shutil.which("runuser") is None:
            return "running as root but `runuser` (util-linux) is missing: cannot run PostgreSQL as a non-root user"
    if importlib.util.find_spec("psycopg2") is None:
        return "psycopg2 is not installed (it comes with dagster-postgres)"
    return None


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str
    password: str
    db_name: str
    folder: Path  # data/, the socket, the log and the password file

    @property
    def data_dir(self) -> Path:
        return self.folder / "data"

    @property
    def log(self) -> Path:
        return self.folder / "server.log"

    def dagster_env(self) -> dict[str, str]:
        """The environment variables ``deploy/dagster.yaml`` reads."""
        return {"DAGSTER_PG_HOST": self.host, "DAGSTER_PG_PORT": str(self.port), "DAGSTER_PG_USER": self.user,
                "DAGSTER_PG_PASSWORD": self.password, "DAGSTER_PG_DB": self.db_name}

    def connect(self, db_name: str | None = None):
        """A psycopg2 connection over TCP with the password (what Dagster does)."""
        import psycopg2

        return psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=db_name or self.db_name, connect_timeout=10)

    def query(self, sql: str, params: tuple = ()) -> list[tuple]:
        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall()
        finally:
            conn.close()


def _as_server_user(args: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *args] if os.geteuid() == 0 else args


def _run(args: list[str], timeout: float = 120) -> None:
    proc = subprocess.run(_as_server_user(args), capture_output=True, text=True, timeout=timeout,
                          stdin=subprocess.DEVNULL)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} exited {proc.returncode}: {(proc.stdout + proc.stderr)[-3000:]}")


def start_postgres(attempts: int = 3) -> PostgresServer:
    """initdb + start a server on a free 127.0.0.1 port, with a password-protected database ``dagster``."""
    reason = missing_reason()
    if reason:
        raise RuntimeError(reason)
    binaries = pg_bin()
    # Not under pytest's tmp_path: /tmp/pytest-of-root is 0700 root, the `postgres` user cannot reach into it.
    folder = Path(tempfile.mkdtemp(prefix="imaging-pg-"))
    try:
        if os.geteuid() == 0:
            entry = pwd.getpwnam(SERVER_USER)
            os.chown(folder, entry.pw_uid, entry.pw_gid)
        password = secrets.token_hex(12)
        pwfile = folder / "pwfile"
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            os.chown(pwfile, entry.pw_uid, entry.pw_gid)
        pwfile.chmod(0o600)
        # no fsync (-N): a throwaway cluster; TCP connections need the password (scram), the socket is trusted
        _run([str(binaries / "initdb"), "-D", str(folder / "data"), "-U", DB_USER, f"--pwfile={pwfile}", "-N",
              "-E", "UTF8", "--no-locale", "--auth-local=trust", "--auth-host=scram-sha-256"])
        pwfile.unlink()
        last_error = None
        for _ in range(attempts):  # another process may take the free port before the server binds it
            server = PostgresServer("127.0.0.1", free_port(), DB_USER, password, DB_NAME, folder)
            options = (f"-h 127.0.0.1 -p {server.port} -k {folder} -c fsync=off -c synchronous_commit=off "
                       "-c full_page_writes=off -c max_connections=200")
            try:
                _run([str(binaries / "pg_ctl"), "-D", str(server.data_dir), "-l", str(server.log), "-w", "-t", "60",
                      "-o", options, "start"])
                break
            except RuntimeError as exc:
                last_error = exc
                _kill_postmaster(server.data_dir)
        else:
            raise RuntimeError(f"PostgreSQL did not start: {last_error}; log: {_tail(server.log)}")
        conn = server.connect("postgres")
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                cur.execute(f"CREATE DATABASE {DB_NAME}")
        finally:
            conn.close()
        return server
    except BaseException:
        _kill_postmaster(folder / "data")
        shutil.rmtree(folder, ignore_errors=True)
        raise


def _tail(path: Path, n: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-n:]
    except OSError:
        return "(no log)"


def _postmaster_pid(data_dir: Path) -> int | None:
    try:
        return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])
    except (OSError, ValueError):
        return None


def _kill_postmaster(data_dir: Path) -> None:
    """SIGQUIT (immediate shutdown) to the server of ``data_dir`` if it is still up; it ends its own children."""
    pid = _postmaster_pid(data_dir)
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def stop_postgres(server: PostgresServer) -> None:
    """Stop the server (``pg_ctl stop -m immediate``; a signal if that fails) and remove its folder."""
    try:
        if _postmaster_pid(server.data_dir) is not None:
            try:
                _run([str(pg_bin() / "pg_ctl"), "-D", str(server.data_dir), "-m", "immediate", "-w", "-t", "30",
                      "stop"], timeout=60)
            except (RuntimeError, subprocess.TimeoutExpired):
                pass
            _kill_postmaster(server.data_dir)
    finally:
        shutil.rmtree(server.folder, ignore_errors=True)


@pytest.fixture(scope="module")
def postgres_server():
    """A running throwaway PostgreSQL server (skips the test when PostgreSQL is not installed)."""
    reason = missing_reason()
    if reason:
        pytest.skip(reason)
    server = start_postgres()
    try:
        yield server
    finally:
        stop_postgres(server)
