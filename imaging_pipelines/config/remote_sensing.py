"""The ``remote_sensing:`` block of a catalog entry (pydantic; no rasterio or torch import).

Band names are the catalog's own (``blue``, ``green``, ``red``, ``nir``, ``swir1``, ``qa`` ...); the
spectral indices look bands up by the generic names ``green``, ``red``, ``nir``, ``swir1``. Sizes of tiles
and patches are in pixels of the scene grid; areas are in hectares.

Inbox layout (see :mod:`imaging_pipelines.remote_sensing.scenes`): every top-level folder of the inbox is a scene
(every top-level ``.tif`` file a single-date scene of its own); inside a scene folder, files are grouped
into acquisitions by a date in their path (``20240105`` or ``2024-01-05``, in a sub-folder name or the
file name); a band file is recognised by its band's ``file`` pattern. Label rasters end in one of
``labels.suffixes`` before ``.tif``; label polygons are ``.geojson`` files.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

INDEX_NAMES = ("ndvi", "ndwi", "ndbi")


def valid_regex(value: str | None) -> str | None:
    """``value`` unchanged when it is None or compiles as a Python regular expression; else ValueError."""
    if value is not None:
        try:
            re.compile(value)
        except re.error as exc:
            raise ValueError(f"not a valid regular expression: {exc}") from None
    return value


class BandSpec(BaseModel):
    """One band of the scenes. Per-band files: ``file`` is a regular expression searched in the file name
    (case-insensitive), e.g. ``"_B4\\.tif$"``. Multi-band files: ``index`` is the 1-based band number."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="catalog band name, e.g. red, nir, qa")
    file: str | None = Field(None, description="regex matching this band's file name (one file per band)")
    index: int | None = Field(None, ge=1, description="1-based band number in a multi-band file")
    role: Literal["reflectance", "qa", "other"] = Field(
        "reflectance", description="reflectance bands are scaled and composited; qa bands are resampled "
                                   "with nearest neighbour and only used for masks")

    _valid_regex = field_validator("file")(classmethod(lambda cls, value: valid_regex(value)))

    @model_validator(mode="after")
    def _located(self) -> BandSpec:
        if (self.file is None) == (self.index is None):
            raise ValueError(f"band {self.name!r}: give exactly one of 'file' (per-band files) or 'index'")
        return self


class TilingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(256, ge=16, description="tile core size in pixels (square)")
    overlap: int = Field(16, ge=0, description="pixels added on every side of the core, from the neighbours")


class CloudMaskConfig(BaseModel):
    """``qa_bits``: a pixel is cloudy when any of ``bits`` is set in band ``qa_band`` (Landsat 8
    Collection 1 BQA: 4 = cloud, 7-8 cloud-confidence high... ; Collection 2 QA_PIXEL: 3 = cloud,
    4 = cloud shadow, 1 = dilated cloud). ``threshold``: the brightness/whiteness heuristic of
    :func:`imaging_pipelines.remote_sensing.indices.cloud_mask` on scaled reflectance."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["qa_bits", "threshold", "none"] = "threshold"
    qa_band: str = "qa"
    bits: list[int] = Field(default_factory=lambda: [4], description="QA bit numbers (0 = least significant)")
    brightness: float = Field(0.3, gt=0, description="threshold: mean visible reflectance at least this")
    whiteness: float = Field(0.7, gt=0, description="threshold: spectral flatness at most this")
    dilate_px: int = Field(1, ge=0, description="grow the cloud mask by this many pixels")


class ReflectanceConfig(BaseModel):
    """``reflectance = DN * scale + offset`` (Landsat C2 L2: 2.75e-5, -0.2; Sentinel-2 L1C: 1e-4, 0)."""

    model_config = ConfigDict(extra="forbid")

    scale: float = 1.0
    offset: float = 0.0


class RasterLabelsConfig(BaseModel):
    """Reference labels: ``raster`` (a class-value GeoTIFF per scene, any grid: reprojected with nearest
    neighbour), ``geojson`` (polygons burned onto each tile's grid with ``rasterio.features.rasterize``;
    ``class_property`` names the feature property holding the class name, else every polygon is
    ``geojson_class``), or ``none``."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["none", "raster", "geojson"] = "none"
    suffixes: list[str] = Field(default_factory=lambda: ["_label", "_labels", "_mask"])
    class_property: str | None = None
    geojson_class: str | None = Field(None, description="class of every polygon when there is no class property")


class RasterTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(64, ge=16)
    epochs: int = Field(10, ge=1)
    iterations_per_epoch: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    base_filters: int = Field(16, ge=2)
    class_weights: Literal["inverse_frequency", "none"] = "inverse_frequency"
    test_fraction: float = Field(0.25, ge=0, lt=1, description="share of labelled tiles never trained on")
    validation_fraction: float = Field(0.15, ge=0, lt=1)
    seed: int = 0
    min_validation_iou: float = Field(0.5, ge=0, le=1, description="asset check threshold (mean foreground IoU)")


class RasterSegmentationConfig(BaseModel):
    """Per-tile segmentation: ``unet`` (MONAI 2D U-Net trained as a model asset), ``baseline`` (Otsu
    thresholds on the index named per class in ``baselines``) or ``none``. ``classes`` maps class names
    to label values (0 is background)."""

    model_config = ConfigDict(extra="forbid")

    method: Literal["unet", "baseline", "none"] = "none"
    classes: dict[str, int] = Field(default_factory=dict)
    inputs: list[str] = Field(default_factory=list, description="composite bands / indices fed to the model; "
                                                                 "empty = every reflectance band and index")
    labels: RasterLabelsConfig = Field(default_factory=RasterLabelsConfig)
    training: RasterTrainingConfig = Field(default_factory=RasterTrainingConfig)
    overlap: float = Field(0.25, ge=0, lt=1, description="sliding-window overlap (fraction of the patch)")
    baselines: dict[str, str] = Field(default_factory=lambda: {"water": "ndwi", "built": "ndbi"},
                                      description="class name -> index thresholded by Otsu")

    @field_validator("classes")
    @classmethod
    def _positive(cls, value: dict[str, int]) -> dict[str, int]:
        bad = {k: v for k, v in value.items() if not 1 <= v <= 255}
        if bad:
            raise ValueError(f"class values must be 1..255 (0 is background): {bad}")
        if len(set(value.values())) != len(value):
            raise ValueError("class values must be distinct")
        return value

    @model_validator(mode="after")
    def _trainable(self) -> RasterSegmentationConfig:
        if self.method == "unet" and self.labels.source == "none":
            raise ValueError("method 'unet' needs labels (labels.source: raster or geojson)")
        if self.method != "none" and not self.classes:
            raise ValueError(f"method {self.method!r} needs 'classes'")
        return self


class RemoteSensingConfig(BaseModel):
    """How a remote-sensing dataset's scenes are read, tiled, preprocessed and segmented."""

    model_config = ConfigDict(extra="forbid")

    bands: list[BandSpec] = Field(min_length=1)
    grid_band: str | None = Field(None, description="band whose grid (CRS, transform, size) is the scene grid; "
                                                     "default: the finest-resolution reflectance band")
    tiling: TilingConfig = Field(default_factory=TilingConfig)
    reflectance: ReflectanceConfig = Field(default_factory=ReflectanceConfig)
    nodata: float | None = Field(None, description="nodata value when the files declare none")
    cloud_mask: CloudMaskConfig = Field(default_factory=CloudMaskConfig)
    indices: list[Literal["ndvi", "ndwi", "ndbi"]] = Field(default_factory=lambda: ["ndvi", "ndwi"])
    coregister: bool = Field(True, description="align later dates to the first by phase correlation")
    max_shift_px: float = Field(10.0, gt=0, description="larger measured shifts are rejected (not applied)")
    composite: Literal["median", "none"] = Field("median", description="per-pixel median over cloud-free dates")
    segmentation: RasterSegmentationConfig = Field(default_factory=RasterSegmentationConfig)

    @model_validator(mode="after")
    def _consistent(self) -> RemoteSensingConfig:
        names = [b.name for b in self.bands]
        if len(set(names)) != len(names):
            raise ValueError(f"band names must be distinct: {names}")
        if len({b.file is None for b in self.bands}) > 1:
            raise ValueError("bands: use 'file' for every band (one file per band) or 'index' for every band")
        if self.grid_band is not None and self.grid_band not in names:
            raise ValueError(f"grid_band {self.grid_band!r} is not a band ({names})")
        if self.cloud_mask.source == "qa_bits" and self.cloud_mask.qa_band not in names:
            raise ValueError(f"cloud_mask.qa_band {self.cloud_mask.qa_band!r} is not a band ({names})")
        needed = {"ndvi": ("nir", "red"), "ndwi": ("green", "nir"), "ndbi": ("swir1", "nir")}
        for index in self.indices:
            missing = [b for b in needed[index] if b not in names]
            if missing:
                raise ValueError(f"index {index} needs band(s) {missing}")
        if self.tiling.overlap * 2 >= self.tiling.size:
            raise ValueError("tiling.overlap must be less than half of tiling.size")
        return self

    @property
    def per_band_files(self) -> bool:
        return self.bands[0].file is not None

    @property
    def reflectance_bands(self) -> list[str]:
        return [b.name for b in self.bands if b.role == "reflectance"]

    def band(self, name: str) -> BandSpec:
        return next(b for b in self.bands if b.name == name)
