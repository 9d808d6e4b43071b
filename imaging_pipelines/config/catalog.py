"""The data catalog: one YAML file per dataset in ``data_catalog/``, parsed and validated with pydantic.

A relative ``inbox`` resolves against the catalog file's folder. Local inboxes must lie inside one of the
configured data roots (``IMAGING_PIPELINES_DATA_ROOTS``, ``os.pathsep``-separated; default: the project
folder that holds ``data_catalog/``), so a catalog entry cannot point the pipeline at arbitrary files.
Remote inboxes (``s3://...`` and other fsspec URIs) are accepted as given, except URIs that reach the local
file system (``file://``, ``local://``, also inside a ``::`` chain), whose path must lie in a data root too.
Catalog files must be UTF-8 YAML of at most :data:`MAX_CATALOG_FILE_BYTES`.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from imaging_pipelines.config.cron import is_valid_cron
from imaging_pipelines.config.paths import DEFAULT_CATALOG_DIR, PROJECT_ROOT
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig, valid_regex
from imaging_pipelines.config.registry import KNOWN_FORMATS
from imaging_pipelines.config.segmentation import SegmentationConfig
from imaging_pipelines.config.classification import ClassificationConfig

CATALOG_ENV = "IMAGING_PIPELINES_CATALOG"
DATA_ROOTS_ENV = "IMAGING_PIPELINES_DATA_ROOTS"

_ID = re.compile(r"^[a-z][a-z0-9_]{1,48}$")
MAX_CATALOG_FILE_BYTES = 1 << 20  # a dataset entry is a few KiB; anything larger is not a catalog file
_LOCAL_PROTOCOLS = ("file", "local")


class SeriesSelection(BaseModel):
    """Which series of a patient are ingested. Patterns are Python regular expressions (searched, case-insensitive)."""

    model_config = ConfigDict(extra="forbid")

    modalities: list[str] = Field(default_factory=list, description="DICOM Modality values to keep; empty = all")
    description_pattern: str = Field(".*", description="keep series whose description matches")
    exclude_description_pattern: str | None = Field(
        "(localizer|scout|survey|topogram)", description="drop series whose description matches"
    )
    min_slices: int = Field(2, ge=1, description="drop stacks with fewer slices (localizers, single images)")

    _valid_regex = field_validator("description_pattern", "exclude_description_pattern")(
        classmethod(lambda cls, value: valid_regex(value)))

    def keeps(self, modality: str, description: str, n_slices: int) -> bool:
        if self.modalities and modality.upper() not in {m.upper() for m in self.modalities}:
            return False
        if not re.search(self.description_pattern, description or "", re.IGNORECASE):
            return False
        if self.exclude_description_pattern and re.search(
            self.exclude_description_pattern, description or "", re.IGNORECASE
        ):
            return False
        return n_slices >= self.min_slices


class RegistrationConfig(BaseModel):
    """How a medical dataset's preprocessed scans are aligned.

    ``target``: ``atlas`` (the catalog atlas named by ``atlas``), ``longitudinal`` (each patient's first
    selected scan; later scans are aligned to it) or ``none``. ``method``: rigid, affine, bspline, demons,
    elastix (install extra ``[elastix]``) or learned (a VoxelMorph-style model trained as an asset).
    """

    model_config = ConfigDict(extra="forbid")

    target: Literal["atlas", "longitudinal", "none"] = "none"
    atlas: str | None = Field(None, description="name of an atlas file in data_catalog/atlases/")
    method: Literal["rigid", "affine", "bspline", "demons", "elastix", "learned"] = "affine"
    modalities: list[str] = Field(default_factory=lambda: ["MR"], description="modalities that are registered")
    brain_mask: bool = Field(True, description="warp the atlas brain mask into each subject's space")
    learned_epochs: int = Field(60, ge=1, description="training epochs of the learned model")

    @model_validator(mode="after")
    def _atlas_given(self) -> RegistrationConfig:
        if self.target == "atlas" and not self.atlas:
            raise ValueError("target 'atlas' needs an 'atlas' name")
        if self.atlas is not None:
            from imaging_pipelines.config.atlases import available_atlases

            known = available_atlases()
            if self.atlas not in known:
                raise ValueError(f"unknown atlas {self.atlas!r}; known: {sorted(known)}")
        return self


class SensorConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    interval_seconds: int = Field(30, ge=5)
    running_by_default: bool = False


class ScheduleConfig(BaseModel):
    """When ``<id>__inbox_schedule`` scans the inbox (an alternative to the sensor's polling interval).

    ``cron``: a five-field cron expression (``"0 2 * * *"`` = every night at 02:00); ``timezone``: an IANA
    zone name (``Europe/Berlin``); ``enabled``: whether the schedule runs as soon as the code location is
    loaded (default off: switch it on under *Automation* in the UI)."""

    model_config = ConfigDict(extra="forbid")

    cron: str = Field("0 * * * *", description="cron expression (minute hour day-of-month month day-of-week)")
    timezone: str = Field("UTC", description="IANA time zone the cron expression is read in")
    enabled: bool = Field(False, description="running by default (else stopped until switched on)")

    @field_validator("cron")
    @classmethod
    def _valid_cron(cls, value: str) -> str:
        value = value.strip()
        if not is_valid_cron(value):
            raise ValueError(f"{value!r} is not a valid cron expression (e.g. '0 2 * * *': every day at 02:00)")
        return value

    @field_validator("timezone")
    @classmethod
    def _valid_timezone(cls, value: str) -> str:
        from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r} (an IANA name such as 'UTC' or 'Europe/Berlin')") from None
        return value


QUIESCENT_SECONDS_ENV = "IMAGING_PIPELINES_QUIESCENT_SECONDS"
DEFAULT_QUIESCENT_SECONDS = 30.0


class InboxChecks(BaseModel):
    """How a hostile or busy inbox is treated (:mod:`imaging_pipelines.core.inbox_safety`,
    :mod:`imaging_pipelines.medical.io.series_integrity`)."""

    model_config = ConfigDict(extra="forbid")

    quiescent_seconds: float | None = Field(
        None, ge=0, description="a file is read only after its size, mtime and ctime stayed unchanged this "
        "long (s); default IMAGING_PIPELINES_QUIESCENT_SECONDS, else 30")
    allow_incomplete_series: bool = Field(
        False, description="ingest a DICOM series with missing slices (InstanceNumber or position gaps) with a "
        "warning instead of failing it")
    allow_burned_in_annotation: bool = Field(
        False, description="ingest series whose pixels may show identifying text (BurnedInAnnotation or "
        "RecognizableVisualFeatures YES, secondary captures, screen saves); default: quarantined with a note")

    def quiescence(self) -> float:
        """The quiescence period in seconds: this block's value, else the environment's, else 30."""
        if self.quiescent_seconds is not None:
            return self.quiescent_seconds
        env = os.environ.get(QUIESCENT_SECONDS_ENV, "").strip()
        return float(env) if env else DEFAULT_QUIESCENT_SECONDS


class DatasetConfig(BaseModel):
    """One dataset of the catalog."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="lower-case identifier; the Dagster asset key prefix")
    domain: Literal["medical", "remote_sensing"]
    description: str = ""
    inbox: str = Field(description="folder or fsspec URI that new scans are dropped into")
    formats: list[str] = Field(min_length=1)
    partitioning: Literal["patient", "tile"]
    series_selection: SeriesSelection = Field(default_factory=SeriesSelection)
    file_modality: str = Field("MR", description="modality assumed for NIfTI / NRRD / MHA files (no header tag)")
    preprocessing_recipe: str = Field("none", description="a recipe file name in data_catalog/recipes/")
    registration: RegistrationConfig = Field(default_factory=RegistrationConfig)
    segmentation: SegmentationConfig = Field(default_factory=SegmentationConfig)
    remote_sensing: RemoteSensingConfig | None = Field(None, description="bands, tiling, masks, indices, "
                                                       "composites and segmentation of remote_sensing datasets")
    classification: ClassificationConfig = Field(default_factory=ClassificationConfig,
                                                 description="image-level classifier (radiographs, tiles); off by default")
    sensor: SensorConfig = Field(default_factory=SensorConfig)
    inbox_checks: InboxChecks = Field(default_factory=InboxChecks)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    source_file: str = Field("", exclude=True)

    @field_validator("id")
    @classmethod
    def _valid_id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError("must match [a-z][a-z0-9_]{1,48} (it becomes a Dagster asset key prefix)")
        return value

    @field_validator("inbox")
    @classmethod
    def _usable_inbox(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must name a folder or URI")
        if "\0" in value:
            raise ValueError("contains a NUL character")
        return value

    @field_validator("formats")
    @classmethod
    def _known_formats(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - KNOWN_FORMATS)
        if unknown:
            raise ValueError(f"unknown format(s) {unknown}; known: {sorted(KNOWN_FORMATS)}")
        return value

    @field_validator("preprocessing_recipe")
    @classmethod
    def _known_recipe(cls, value: str) -> str:
        from imaging_pipelines.config.recipes import available_recipes

        known = available_recipes()
        if value not in known:
            raise ValueError(f"unknown recipe {value!r}; known: {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _domain_consistent(self) -> DatasetConfig:
        if self.domain == "medical" and self.partitioning != "patient":
            raise ValueError("medical datasets are partitioned by 'patient'")
        if self.domain == "remote_sensing" and self.partitioning != "tile":
            raise ValueError("remote_sensing datasets are partitioned by 'tile'")
        if self.domain == "medical" and "geotiff" in self.formats:
            raise ValueError("formats: geotiff is a remote_sensing format")
        if self.domain == "remote_sensing" and self.remote_sensing is None:
            raise ValueError("remote_sensing datasets need a 'remote_sensing' block (bands, tiling, ...)")
        if self.domain == "medical" and self.remote_sensing is not None:
            raise ValueError("'remote_sensing' is for remote_sensing datasets")
        wanted = "table" if self.domain == "medical" else "tile_reference"
        if self.classification.enabled and self.classification.labels.source != wanted:
            raise ValueError(f"classification.labels.source of a {self.domain} dataset must be {wanted!r}")
        return self

    @property
    def label_suffixes(self) -> tuple[str, ...]:
        """Name endings of label files in the inbox: such files are reference labels, never images (they are
        attached to their image by ingestion whatever ``segmentation.labels.source`` says)."""
        return tuple(self.segmentation.labels.suffixes)

    @property
    def is_remote_inbox(self) -> bool:
        return "://" in self.inbox


def configured_data_roots(extra: list[str | Path] | None = None) -> list[Path]:
    """Folders that local inboxes must lie in: ``IMAGING_PIPELINES_DATA_ROOTS`` or the project folder."""
    env = os.environ.get(DATA_ROOTS_ENV)
    roots = [Path(p) for p in env.split(os.pathsep) if p] if env else [PROJECT_ROOT]
    roots += [Path(p) for p in extra or []]
    return [r.expanduser().resolve() for r in roots]


def _is_within(path: Path, roots: list[Path]) -> bool:
    return any(path == r or r in path.parents for r in roots)


def local_path_of_uri(uri: str) -> str | None:
    """The local path an fsspec URI reaches (``file:///x``, ``local:///x``, ``simplecache::file:///x``), else None."""
    for part in uri.split("::"):
        scheme, sep, rest = part.partition("://")
        if sep and scheme.strip().lower() in _LOCAL_PROTOCOLS:
            return rest or "/"
    return None


def _inbox_error(file: Path, inbox: str, data_roots: list[Path]) -> tuple[str | None, str | None]:
    """(resolved local inbox or None for a remote URI, problem or None)."""
    local = local_path_of_uri(inbox) if "://" in inbox else inbox
    if local is None:
        return None, None
    path = Path(local).expanduser()
    path = (path if path.is_absolute() else file.parent / path).resolve()
    if not _is_within(path, data_roots):
        roots = ", ".join(str(r) for r in data_roots)
        return str(path), f"{path} escapes the configured data roots ({roots})"
    return str(path), None


def catalog_files(location: str | Path | None = None) -> list[Path]:
    """The ``*.yaml`` / ``*.yml`` files of a catalog folder (or the single file given)."""
    loc = Path(location or os.environ.get(CATALOG_ENV) or DEFAULT_CATALOG_DIR)
    if loc.is_file():
        return [loc]
    if not loc.is_dir():
        raise CatalogError([(str(loc), "-", "catalog folder or file does not exist")])
    return sorted(p for p in loc.iterdir() if p.suffix in (".yaml", ".yml"))


def _pydantic_errors(file: Path, exc: ValidationError) -> list[tuple[str, str, str]]:
    return [(str(file), ".".join(str(p) for p in e["loc"]) or "-", e["msg"]) for e in exc.errors()]


def load_dataset_file(file: Path, data_roots: list[Path]) -> tuple[DatasetConfig | None, list[tuple[str, str, str]]]:
    """Parse one catalog file; returns (config or None, errors as (file, field, message))."""
    try:
        if file.stat().st_size > MAX_CATALOG_FILE_BYTES:
            return None, [(str(file), "-", f"larger than {MAX_CATALOG_FILE_BYTES} bytes: not a catalog file")]
        raw = yaml.safe_load(file.read_bytes().decode("utf-8"))
    except OSError as exc:
        return None, [(str(file), "-", f"cannot read file: {exc.strerror or exc}")]
    except UnicodeDecodeError as exc:
        return None, [(str(file), "-", f"not UTF-8 text (byte {exc.start})")]
    except yaml.YAMLError as exc:
        return None, [(str(file), "-", f"not valid YAML: {exc}")]
    except RecursionError:
        return None, [(str(file), "-", "not valid YAML: nested too deeply")]
    if not isinstance(raw, dict):
        return None, [(str(file), "-", "must be a mapping of fields (id, domain, inbox, ...)")]
    bad_keys = [k for k in raw if not isinstance(k, str)]
    if bad_keys:
        return None, [(str(file), str(k), "field names must be strings") for k in bad_keys]
    if "source_file" in raw:
        return None, [(str(file), "source_file", "Extra inputs are not permitted (set by the catalog loader)")]
    try:
        cfg = DatasetConfig(**raw, source_file=str(file))
    except ValidationError as exc:
        return None, _pydantic_errors(file, exc)
    except RecursionError:
        return None, [(str(file), "-", "values nested too deeply")]
    if cfg.segmentation.model is not None:  # a relative model path is relative to the catalog file's folder
        seg = cfg.segmentation.model_copy(update={"model": cfg.segmentation.model.resolved(file)})
        cfg = cfg.model_copy(update={"segmentation": seg})
    if cfg.classification.labels.file:  # a relative label table is relative to the catalog file's folder
        labels = cfg.classification.labels.resolved(file)
        cfg = cfg.model_copy(update={"classification": cfg.classification.model_copy(update={"labels": labels})})
    return checked_inbox(cfg, file, data_roots)


def checked_inbox(cfg: DatasetConfig, file: Path,
                  data_roots: list[Path]) -> tuple[DatasetConfig | None, list[tuple[str, str, str]]]:
    """``cfg`` with a local inbox resolved against ``file``'s folder and checked to lie in ``data_roots``;
    returns (config or None, errors as (file, field, message))."""
    local, problem = _inbox_error(file, cfg.inbox, data_roots)
    if problem:
        return None, [(str(file), "inbox", problem)]
    if local is not None and not cfg.is_remote_inbox:
        cfg = cfg.model_copy(update={"inbox": local})
    return cfg, []


def dataset_json_schema() -> dict:
    """The JSON schema of one catalog file (``data_catalog/dataset.schema.json``): :class:`DatasetConfig`'s,
    without ``source_file`` (set by the loader, never written by users)."""
    schema = DatasetConfig.model_json_schema()
    schema["properties"].pop("source_file", None)
    schema["title"] = "imaging_pipelines dataset (one data_catalog/*.yaml file)"
    return schema


def load_catalog(
    location: str | Path | None = None, data_roots: list[str | Path] | None = None
) -> list[DatasetConfig]:
    """Load and validate every dataset of the catalog; raises :class:`CatalogError` listing every problem."""
    roots = configured_data_roots(data_roots)
    datasets: list[DatasetConfig] = []
    errors: list[tuple[str, str, str]] = []
    for file in catalog_files(location):
        cfg, errs = load_dataset_file(file, roots)
        errors += errs
        if cfg is not None:
            datasets.append(cfg)
    seen: dict[str, str] = {}
    for cfg in datasets:
        if cfg.id in seen:
            errors.append((cfg.source_file, "id", f"duplicate dataset id {cfg.id!r} (also in {seen[cfg.id]})"))
        seen[cfg.id] = cfg.source_file
    if errors:
        raise CatalogError(errors)
    return datasets
