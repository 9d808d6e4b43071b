"""Registration atlases named in the catalog: one YAML file per atlas in ``data_catalog/atlases/``.

An atlas file gives ``image`` and ``mask`` (brain mask) paths, relative to the file or absolute;
``${VAR}`` / ``${VAR:-default}`` environment references are expanded (e.g. the shared test data root).
Both must name a NIfTI, NRRD or MetaImage file (checked when the atlas folder is read); whether the files
exist is checked when the atlas is used, so a catalog that names an atlas not generated yet still loads.
A malformed atlas file raises :class:`~imaging_pipelines.core.errors.CatalogError` naming the file and field.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError, field_validator

from imaging_pipelines.config.paths import PROJECT_ROOT
from imaging_pipelines.core.errors import CatalogError
from imaging_pipelines.config.registry import FORMAT_SUFFIXES

_VOLUME_SUFFIXES = tuple(s for suffixes in FORMAT_SUFFIXES.values() for s in suffixes)

ATLAS_DIR_ENV = "IMAGING_PIPELINES_ATLASES"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class AtlasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    image: str
    mask: str
    source_file: str = ""

    @field_validator("image", "mask")
    @classmethod
    def _volume_file(cls, value: str) -> str:
        if "\0" in value:
            raise ValueError("contains a NUL character")
        if not value.lower().endswith(_VOLUME_SUFFIXES):
            raise ValueError(f"must name a NIfTI, NRRD or MetaImage file ({', '.join(_VOLUME_SUFFIXES)})")
        return value

    def resolved(self, field: str) -> Path:
        raw = _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), getattr(self, field))
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (Path(self.source_file).parent / path).resolve()


def atlas_dir() -> Path:
    return Path(os.environ.get(ATLAS_DIR_ENV) or PROJECT_ROOT / "data_catalog" / "atlases")


def available_atlases() -> dict[str, AtlasConfig]:
    """Every atlas file of the atlas folder, by name."""
    found = {}
    folder = atlas_dir()
    for file in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        cfg = _load_atlas_file(file)
        found[cfg.name] = cfg
    return found


def _load_atlas_file(file: Path) -> AtlasConfig:
    """Parse one atlas file; CatalogError naming the file (and field) when it is not a valid atlas."""
    try:
        raw = yaml.safe_load(file.read_bytes().decode("utf-8"))
    except (OSError, UnicodeDecodeError, yaml.YAMLError, RecursionError) as exc:
        raise CatalogError([(str(file), "-", f"not a readable YAML atlas file: {type(exc).__name__}")]) from None
    if not isinstance(raw, dict) or not all(isinstance(k, str) for k in raw) or "source_file" in raw:
        raise CatalogError([(str(file), "-", "must be a mapping with name, description, image and mask")])
    try:
        return AtlasConfig(**raw, source_file=str(file))
    except ValidationError as exc:
        raise CatalogError([(str(file), ".".join(str(p) for p in e["loc"]) or "-", e["msg"])
                            for e in exc.errors()]) from None
