"""The local instance's SQLite storages: Dagster's consolidated event log and its run storage, with one
SQLAlchemy engine per process and WAL commits that are not each fsync-ed.

Dagster's SQLite storages create a new SQLAlchemy engine for every operation (``NullPool``), so no compiled
statement is ever reused, and commit every event with SQLite's default ``synchronous=FULL``: an fsync of
the write-ahead log per event, about 40 per small partition's run. These subclasses keep one engine per
storage and process with a small pool of open connections (re-created after a fork; a connection is used by
one thread at a time) and set ``PRAGMA synchronous=NORMAL`` on each connection. In WAL mode that is SQLite's
recommended setting: the database stays consistent after any crash, and a transaction committed just
before a power loss or an operating-system crash (not a killed process) may be rolled back, in which case
that run shows as not finished and its partition is run again. The stored outputs themselves are written
atomically either way (:mod:`imaging_pipelines.core.storage`). Production deployments use PostgreSQL
(``deploy/``), where none of this applies.

Used by :func:`imaging_pipelines.dagster_layer.local_runs.dev_instance_yaml`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from dagster._core.storage.event_log import ConsolidatedSqliteEventLogStorage
from dagster._core.storage.runs import SqliteRunStorage
from dagster._core.storage.sqlite import SQLITE_BUSY_TIMEOUT_SECONDS
from sqlalchemy import create_engine, event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.pool import QueuePool

SYNCHRONOUS = "NORMAL"
POOL_SIZE = 2  # connections kept open per storage and process


def _relax_synchronous(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    cursor.execute(f"PRAGMA synchronous={SYNCHRONOUS}")
    cursor.close()


class _EnginePerProcess:
    """One engine for a connection string, with a small pool of SQLite connections (each opened once, with
    :data:`SYNCHRONOUS` set), re-created in a forked child: the parent's pooled connections are dropped
    there without being closed (SQLite connections must not cross a fork)."""

    def __init__(self, conn_string: str, connect_args: dict[str, Any] | None = None):
        self.conn_string = conn_string
        self.connect_args = {**(connect_args or {}), "check_same_thread": False}  # the pool hands a connection to one thread at a time
        self._engine: Engine | None = None
        self._pid = -1

    def get(self) -> Engine:
        if self._engine is None or self._pid != os.getpid():
            if self._engine is not None:
                self._engine.dispose(close=False)
            engine = create_engine(self.conn_string, poolclass=QueuePool, pool_size=POOL_SIZE, max_overflow=8,
                                   connect_args=self.connect_args)
            event.listen(engine, "connect", _relax_synchronous)
            self._engine, self._pid = engine, os.getpid()
        return self._engine

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        with self.get().connect() as conn, conn.begin():
            yield conn


def engines_of(storage: Any) -> _EnginePerProcess:
    """The storage's :class:`_EnginePerProcess`, made on first use (Dagster's ``__init__`` already connects,
    before a subclass could set it up). Both storages wait up to Dagster's SQLite busy timeout for a lock:
    run workers, the daemon and the webserver write the same database files."""
    engines = storage.__dict__.get("_local_engines")
    if engines is None:
        engines = storage.__dict__["_local_engines"] = _EnginePerProcess(
            storage._conn_string, {"timeout": SQLITE_BUSY_TIMEOUT_SECONDS})
    return engines


class LocalSqliteEventLogStorage(ConsolidatedSqliteEventLogStorage):
    """Dagster's consolidated SQLite event log (every run's events in ``<base_dir>/event_log.db``) with one
    engine per process and ``synchronous=NORMAL`` commits (see the module docstring)."""

    @contextmanager
    def _connect(self) -> Iterator[Connection]:
        with engines_of(self).transaction() as conn:
            yield conn

    def has_table(self, table_name: str) -> bool:
        with self._connect() as conn:
            return bool(conn.dialect.has_table(conn, table_name))


class LocalSqliteRunStorage(SqliteRunStorage):
    """Dagster's SQLite run storage (``<base_dir>/runs.db``) with one engine per process and
    ``synchronous=NORMAL`` commits (see the module docstring)."""

    @classmethod
    def from_config_value(cls, inst_data: Any, config_value: Any) -> LocalSqliteRunStorage:  # type: ignore[override]
        return cls.from_local(inst_data=inst_data, **config_value)

    @contextmanager
    def connect(self) -> Iterator[Connection]:
        with engines_of(self).transaction() as conn:
            yield conn
