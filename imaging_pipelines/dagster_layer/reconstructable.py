"""Jobs that out-of-process executors (multiprocess, Dask) can rebuild in every step process, and the
per-process cache of the definitions they (and long-lived run workers) are built from."""

from __future__ import annotations

import os
from pathlib import Path

from dagster import Definitions, JobDefinition
from dagster._core.definitions.reconstruct import ReconstructableJob, build_reconstructable_job

from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR
from imaging_pipelines.config.recipes import recipe_dir
from imaging_pipelines.dagster_layer.factory import build_definitions

ENV_PREFIX = "IMAGING_PIPELINES_"
_cache: dict[tuple, Definitions] = {}  # one entry: the definitions of the latest inputs


def _yaml_signatures(source: str | os.PathLike | None) -> list[tuple[str, int, int]]:
    """(path, mtime in ns, size) of a YAML file, or of every YAML file under a folder."""
    if not source:
        return []
    path = Path(source).expanduser()
    files = sorted(p for p in path.rglob("*") if p.suffix in (".yaml", ".yml")) if path.is_dir() else [path]
    out = []
    for file in files:
        try:
            st = file.stat()
        except OSError:
            continue
        out.append((str(file), st.st_mtime_ns, st.st_size))
    return out


def definitions_key(catalog: str | None = None, deployment: str | None = None,
                    storage_root: str | None = None) -> tuple:
    """What the definitions are built from: the arguments, the ``IMAGING_PIPELINES_*`` environment and the
    (path, mtime, size) of the catalog, recipe and deployment YAML files, so an edited file is picked up."""
    env = tuple(sorted((k, v) for k, v in os.environ.items() if k.startswith(ENV_PREFIX)))
    files = []
    for source in (catalog or os.environ.get(f"{ENV_PREFIX}CATALOG") or DEFAULT_CATALOG_DIR,
                   deployment or os.environ.get(f"{ENV_PREFIX}DEPLOYMENT"), recipe_dir()):
        files += _yaml_signatures(source)
    return (catalog, deployment, storage_root, env, tuple(files))


def cached_definitions(catalog: str | None = None, deployment: str | None = None,
                       storage_root: str | None = None) -> Definitions:
    """:func:`~imaging_pipelines.dagster_layer.factory.build_definitions`, kept per process while its inputs
    (:func:`definitions_key`) are unchanged. One entry only: a process works with one configuration."""
    key = definitions_key(catalog, deployment, storage_root)
    defs = _cache.get(key)
    if defs is None:
        _cache.clear()
        defs = _cache[key] = build_definitions(catalog, storage_root, deployment=deployment)
    return defs


def load_job(job_name: str, catalog: str | None = None, deployment: str | None = None,
             storage_root: str | None = None) -> JobDefinition:
    """Return one job of the (cached) definitions: what every step process of :func:`reconstructable_job`
    runs. Dagster's ``ReconstructableJob`` keeps only the last job it loaded, so a long-lived run worker
    alternating datasets (or a job and its asset subset) would otherwise rebuild the definitions several
    times per run."""
    return cached_definitions(catalog, deployment, storage_root).resolve_job_def(job_name)


def reconstructable_job(job_name: str, catalog: str | None = None, deployment: str | None = None,
                        storage_root: str | None = None) -> ReconstructableJob:
    """A job that ``dagster.execute_job`` can run with an out-of-process executor (multiprocess, Dask):
    every step process rebuilds it with :func:`load_job` and these (JSON) arguments. Whatever is not given
    comes from the environment of those processes (``IMAGING_PIPELINES_CATALOG``, ``..._DEPLOYMENT``,
    ``..._STORAGE_ROOT``, ``..._DATA_ROOTS``), so set it before workers start."""
    kwargs = {"catalog": catalog, "deployment": deployment, "storage_root": storage_root}
    return build_reconstructable_job(__name__, "load_job", (job_name,), {k: str(v) for k, v in kwargs.items() if v})
