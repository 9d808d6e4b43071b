"""An ignored SIGTERM survives exec; workers_terminable starts children that end on SIGTERM again."""

from __future__ import annotations

import signal
import subprocess
import time

from imaging_pipelines.core.child_signals import workers_terminable


def _ends_on_sigterm_within(seconds: float) -> bool:
    child = subprocess.Popen(["sleep", "30"])
    try:
        child.terminate()
        child.wait(timeout=seconds)
        return True
    except subprocess.TimeoutExpired:
        return False
    finally:
        child.kill()
        child.wait()


def test_children_started_inside_end_on_sigterm_even_when_the_parent_ignores_it() -> None:
    previous = signal.signal(signal.SIGTERM, signal.SIG_IGN)  # as a job runner or Dagster may leave it
    try:
        assert not _ends_on_sigterm_within(1.0)  # the inherited SIG_IGN: terminate() does nothing
        with workers_terminable():
            start = time.monotonic()
            assert _ends_on_sigterm_within(5.0)
            assert time.monotonic() - start < 5.0
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN  # restored
    finally:
        signal.signal(signal.SIGTERM, previous)
