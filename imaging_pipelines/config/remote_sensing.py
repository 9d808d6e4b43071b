"""The ``remote_sensing:`` block of a catalog entry (pydantic; no rasterio or torch import).

Band names are the catalog's own (``blue``, ``green``, ``red``, ``nir``, ``swir1``, ``qa`` ...); the
spectral indices look bands up by the generic names ``green``, ``red``, ``nir``, ``swir1``. Sizes of tiles
and patches are in pixels of the scene grid; areas are in hectares.

Inbox layout (see :mod:`imaging_pipelines.remote_sensing.scenes`): every top-level folder of the inbox is a scene
(every top-level ``.tif`` file a single-date scene of its own); inside a scene folder, files are grouped
into acquisitions by a date in their path (``20240105`` or ``2024-01-05``, in a sub-folder name or the
file name); a band file is recognised by its band's ``file`` pattern. Label rasters end in one of
``labels.suffixes`` before ``.tif``; label polygons are ``.geojson`` files.

Separate rasters of one acquisition (a cloud mask, a QA raster, a DEM, other layers) are declared in
``layers``: each matches its files by a ``file`` pattern and has a ``role``; a layer file with no date in its
path is shared by every acquisition of the scene (a DEM). A single multi-band file holding a time series
(one band, or one group of bands, per date) gets its time axis from ``time_series``.
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


class LayerSpec(BaseModel):
    """A raster of an acquisition stored in its own file(s), beside the band file(s), used by its role:

    * ``cloud_mask``: cloud where the value is in ``cloud_values`` (default: any non-zero value); used as
      the cloud mask when ``cloud_mask.source`` is ``layer`` (cloud fraction, composite masking);
    * ``qa``: bit flags, usable as ``cloud_mask.qa_band`` with ``source: qa_bits``;
    * ``dem`` (elevation, m) and ``extra``: carried to the analysis-ready tile, as extra model channels
      (``channel: true``, the per-pixel median over the dates) or as a stored layer only.

    Layer files are placed on the scene grid like bands: a file on another grid or CRS is resampled /
    reprojected and the tile notes say so (``on_other_grid: reproject``), or refused with an error naming
    the file (``on_other_grid: error``)."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(description="layer name (distinct from the band names), e.g. cloud, dem, slope")
    file: str = Field(description="regex searched in the file name (case-insensitive), e.g. '_cloud\\.tif$'")
    role: Literal["cloud_mask", "qa", "dem", "extra"]
    band: int = Field(1, ge=1, description="1-based band of the layer in its file")
    cloud_values: list[int] | None = Field(None, description="cloud_mask: values meaning cloud (default: non-zero)")
    channel: bool = Field(True, description="dem/extra: feed the layer to the model as a composite channel; "
                                            "false: stored as a layer of the analysis-ready tile only")
    on_other_grid: Literal["reproject", "error"] = Field(
        "reproject", description="a file not on the scene grid (CRS, pixel size, pixel alignment): resample / "
                                 "reproject it with a note, or refuse it")

    _valid_regex = field_validator("file")(classmethod(lambda cls, value: valid_regex(value)))

    @property
    def resample_nearest(self) -> bool:
        """True for masks and bit flags (never blended)."""
        return self.role in ("cloud_mask", "qa")


class TimeSeriesConfig(BaseModel):
    """A single multi-band file holding several dates: ``dates[i]`` (``YYYY-MM-DD``) is date ``i``; the
    file band of catalog band ``index`` at date ``i`` is ``i * bands_per_date + index`` (``order:
    date_major``: every band of date 1, then of date 2 ...) or ``(index - 1) * len(dates) + i + 1``
    (``band_major``: band 1 at every date, then band 2 ...). ``bands_per_date`` defaults to the largest
    band ``index``. The file must hold exactly the bands this implies (checked when read and by
    ``catalog validate``)."""

    model_config = ConfigDict(extra="forbid")

    dates: list[str] = Field(min_length=1, description="one ISO date per time step, in the file's order")
    order: Literal["date_major", "band_major"] = "date_major"
    bands_per_date: int | None = Field(None, ge=1)

    @field_validator("dates")
    @classmethod
    def _iso(cls, value: list[str]) -> list[str]:
        import datetime as dt

        for text in value:
            try:
                dt.date.fromisoformat(text)
            except ValueError:
                raise ValueError(f"not a YYYY-MM-DD date: {text!r}") from None
        if len(set(value)) != len(value):
            raise ValueError("dates must be distinct")
        return value


class TilingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    size: int = Field(256, ge=16, description="tile core size in pixels (square)")
    overlap: int = Field(16, ge=0, description="pixels added on every side of the core, from the neighbours")


class CloudMaskConfig(BaseModel):
    """``layer``: the acquisition's own cloud-mask raster (a ``layers`` entry of role ``cloud_mask``).
    ``qa_bits``: a pixel is cloudy when any of ``bits`` is set in band ``qa_band`` (Landsat 8
    Collection 1 BQA: 4 = cloud, 7-8 cloud-confidence high... ; Collection 2 QA_PIXEL: 3 = cloud,
    4 = cloud shadow, 1 = dilated cloud). ``threshold``: the brightness/whiteness heuristic of
    :func:`imaging_pipelines.remote_sensing.indices.cloud_mask` on scaled reflectance."""

    model_config = ConfigDict(extra="forbid")

    source: Literal["qa_bits", "threshold", "layer", "none"] = "threshold"
    qa_band: str = Field("qa", description="qa_bits: the band (or qa layer) holding the bits")
    layer: str = Field("cloud", description="layer: the cloud_mask layer (see ``layers``)")
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
    crs: str | None = Field(None, description="CRS of GeoJSON labels without a 'crs' member (e.g. EPSG:32616); "
                                              "unset: EPSG:4326 (RFC 7946), refused when the coordinates are "
                                              "clearly projected")
    geojson_class: str | None = Field(None, description="class of every polygon when there is no class property")


class RasterTrainingConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    patch_size: int = Field(64, ge=16)
    epochs: int = Field(10, ge=1)
    iterations_per_epoch: int = Field(20, ge=1)
    batch_size: int = Field(8, ge=1)
    learning_rate: float = Field(3e-3, gt=0)
    base_filters: int = Field(16, ge=2)
    depth: int = Field(3, ge=2, le=5, description="down-sampling steps of the U-Net (each halves the resolution "
                       "and roughly doubles the receptive field); patch_size must be a multiple of 2**depth")
    class_weights: Literal["inverse_frequency", "none"] = "inverse_frequency"
    loss: Literal["dice_ce", "dice_focal", "focal", "lovasz", "dice_ce_lovasz"] = Field(
        "dice_ce", description="Dice + cross-entropy, Dice + focal, focal alone (class weights apply to the "
                               "cross-entropy / focal term; focal loss down-weights the easy, mostly background, "
                               "pixels), the IoU-aligned Lovasz-softmax alone, or Dice + cross-entropy + Lovasz")
    focal_gamma: float = Field(2.0, ge=0, description="focal loss exponent (0 = cross-entropy)")
    schedule: Literal["constant", "cosine"] = Field(
        "constant", description="learning rate: constant, or cosine-annealed to 0 over all training steps")
    foreground_fraction: float = Field(1 / 3, ge=0, le=1, description="share of training patches centred near a "
                                                                       "foreground (non-background) pixel")
    average_last_epochs: int = Field(0, ge=0, description="average the weights of the last N epochs (stochastic "
                                     "weight averaging), kept unless one epoch is better on validation; 0 = off")
    scale_augmentation: float = Field(0.0, ge=0, le=1, description="random zoom exp(U(-s, s)) of training patches "
                                                                   "(0 = off; 0.2 = x0.82..1.22)")
    intensity_augmentation: float = Field(0.0, ge=0, le=1, description="random per-channel gamma, contrast "
                                          "exp(U(-s, s)), brightness U(-s, s) (z-score units) and noise (0 = off)")
    ensemble: int = Field(1, ge=1, le=16, description="train this many U-Nets (seeds seed .. seed + K - 1) and "
                          "average their softmax at prediction (K x training and inference time); 1 = one model")
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
    temporal: Literal["composite", "per_date"] = Field(
        "composite", description="composite: the model sees the temporal median composite (and indices) only; "
                                 "per_date: also each date's clear reflectance, in temporal_steps date slots")
    temporal_steps: int = Field(4, ge=1, le=64, description="per_date: date slots (dates spread evenly when a "
                                                            "scene has more; empty slots are no-data)")
    labels: RasterLabelsConfig = Field(default_factory=RasterLabelsConfig)
    training: RasterTrainingConfig = Field(default_factory=RasterTrainingConfig)
    overlap: float = Field(0.25, ge=0, lt=1, description="sliding-window overlap (fraction of the patch)")
    test_time_augmentation: bool = Field(False, description="average the softmax over the 4 flips of each tile "
                                                            "(4x inference time)")
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
    layers: list[LayerSpec] = Field(default_factory=list, description="separate rasters of an acquisition "
                                                                       "(cloud mask, QA, DEM, extra layers)")
    time_series: TimeSeriesConfig | None = Field(None, description="dates of a single multi-band file holding "
                                                                    "a time series (bands use 'index')")
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
        layers = {layer.name: layer for layer in self.layers}
        clash = sorted(set(names) & set(layers)) + sorted({n for n in layers if [x.name for x in self.layers].count(n) > 1})
        if clash:
            raise ValueError(f"layer names must be distinct from each other and from the bands: {clash}")
        qa_sources = names + [n for n, layer in layers.items() if layer.role == "qa"]
        if self.cloud_mask.source == "qa_bits" and self.cloud_mask.qa_band not in qa_sources:
            raise ValueError(f"cloud_mask.qa_band {self.cloud_mask.qa_band!r} is not a band or qa layer ({qa_sources})")
        if self.cloud_mask.source == "layer" and getattr(layers.get(self.cloud_mask.layer), "role", None) != "cloud_mask":
            raise ValueError(f"cloud_mask.layer {self.cloud_mask.layer!r} is not a layer of role cloud_mask "
                             f"({[n for n, layer in layers.items() if layer.role == 'cloud_mask']})")
        if self.time_series is not None and self.per_band_files:
            raise ValueError("time_series needs multi-band bands ('index'): one file holds every date")
        if self.time_series is not None and max(b.index or 1 for b in self.bands) > self.bands_per_date:
            raise ValueError(f"time_series.bands_per_date {self.bands_per_date} is less than a band index")
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

    def file_band(self, name: str, date_index: int = 0) -> int:
        """1-based band of catalog band ``name`` in its file at time step ``date_index`` (``time_series``)."""
        index = self.band(name).index or 1
        ts = self.time_series
        if ts is None:
            return index
        if ts.order == "band_major":
            return (index - 1) * len(ts.dates) + date_index + 1
        return date_index * self.bands_per_date + index

    @property
    def bands_per_date(self) -> int:
        """Bands of one date in a ``time_series`` file (``bands_per_date``, else the largest ``index``)."""
        given = self.time_series.bands_per_date if self.time_series is not None else None
        return given or max(b.index or 1 for b in self.bands)

    @property
    def channel_layers(self) -> list[str]:
        """dem / extra layers fed to the model as composite channels."""
        return [x.name for x in self.layers if x.role in ("dem", "extra") and x.channel]

    @property
    def reflectance_bands(self) -> list[str]:
        return [b.name for b in self.bands if b.role == "reflectance"]

    def band(self, name: str) -> BandSpec:
        return next(b for b in self.bands if b.name == name)
