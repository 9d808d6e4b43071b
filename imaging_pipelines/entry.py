"""Entry point of the ``imaging-pipelines`` command (``[project.scripts]``; also ``python -m imaging_pipelines``).

``imaging-pipelines convert SRC OUT`` (two paths, no option) runs without importing the command-line framework
(typer, click, pydantic: about a third of a second at start-up, more than converting a small series); every other
command line, ``--help`` included, goes to the typer application in :mod:`imaging_pipelines.cli`, which also
defines ``convert`` with the same behaviour.
"""

from __future__ import annotations

import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    args = list(sys.argv[1:] if argv is None else argv)
    if len(args) == 3 and args[0] == "convert" and not any(a.startswith("-") for a in args[1:]):
        from imaging_pipelines.medical.convert import convert_command

        return convert_command(Path(args[1]), Path(args[2]))
    from imaging_pipelines.cli import app

    try:
        app(args=args, prog_name="imaging-pipelines")
    except SystemExit as exc:
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    return 0
