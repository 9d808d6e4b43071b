"""Errors raised by the imaging core. Every message names the offending file and the problem."""

from __future__ import annotations

from os import PathLike


class ImagingInputError(ValueError):
    """An input file (or folder) cannot be turned into an image: names the file and the problem."""

    def __init__(self, path: str | PathLike | None, problem: str):
        self.path = str(path) if path is not None else None
        self.problem = problem
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


class CatalogError(ValueError):
    """A data-catalog file is invalid; `errors` lists (file, field, message) triples."""

    def __init__(self, errors: list[tuple[str, str, str]]):
        self.errors = errors
        super().__init__("\n".join(f"{f}: {field}: {msg}" for f, field, msg in errors))
