"""Signal dispositions that child processes inherit.

A signal a process *ignores* stays ignored across ``fork`` and ``exec`` (handlers do not: exec resets them to
the default). Two sources leave SIGTERM ignored in our processes: some job runners start processes that way,
and Dagster's in-process execution copies the SIGINT handler onto SIGTERM when it restores its interrupt
handlers (``dagster._utils.interrupts``), so after a run in a process whose SIGINT is ignored (a background
job of a non-interactive shell) SIGTERM is ignored too. Every child started afterwards then ignores SIGTERM:
a worker pool's ``terminate`` never ends its workers, and Dagster's compute-log ``tail`` outlives its
``terminate()`` (30 s wait per step). :func:`workers_terminable` puts SIGTERM back to its default action
while children are started.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


@contextlib.contextmanager
def workers_terminable() -> Iterator[None]:
    """SIGTERM at its default action inside the block (restored afterwards), so processes started in it end on
    SIGTERM. Only the main thread may change signal handlers; elsewhere this does nothing."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)
