"""Registration atlases named in the catalog: one YAML file per atlas in ``data_catalog/atlases/``.

An atlas file gives ``image`` and ``mask`` (brain mask) paths, relative to the file or absolute;
``${VAR}`` / ``${VAR:-default}`` environment references are expanded (e.g. the shared test data root).
Paths are checked when the atlas is used, so a catalog that names an atlas not generated yet still loads.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict

from imaging_pipelines.catalog import PROJECT_ROOT
from imaging_pipelines.errors import ImagingInputError

ATLAS_DIR_ENV = "IMAGING_PIPELINES_ATLASES"
_VAR = re.compile(r"\$\{(\w+)(?::-([^}]*))?\}")


class AtlasConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str
    description: str = ""
    image: str
    mask: str
    source_file: str = ""

    def resolved(self, field: str) -> Path:
        raw = _VAR.sub(lambda m: os.environ.get(m.group(1), m.group(2) or ""), getattr(self, field))
        path = Path(raw).expanduser()
        return path if path.is_absolute() else (Path(self.source_file).parent / path).resolve()

    def load(self):
        """The atlas image and mask as Volumes; clear error naming the missing file."""
        from imaging_pipelines.io.image_files import read_image_file

        paths = {f: self.resolved(f) for f in ("image", "mask")}
        for field, path in paths.items():
            if not path.is_file():
                raise ImagingInputError(path, f"atlas {self.name!r}: {field} file not found (see {self.source_file})")
        return read_image_file(paths["image"]), read_image_file(paths["mask"])


def atlas_dir() -> Path:
    return Path(os.environ.get(ATLAS_DIR_ENV) or PROJECT_ROOT / "data_catalog" / "atlases")


def available_atlases() -> dict[str, AtlasConfig]:
    """Every atlas file of the atlas folder, by name."""
    found = {}
    folder = atlas_dir()
    for file in sorted(folder.glob("*.yaml")) if folder.is_dir() else []:
        cfg = AtlasConfig(**yaml.safe_load(file.read_text()), source_file=str(file))
        found[cfg.name] = cfg
    return found
