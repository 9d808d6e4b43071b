"""Analysis-ready products of one tile: masks, co-registration, a cloud-free composite and indices.

Input: the tile's acquisitions as :class:`Raster` (bands named as in the catalog, all on the same grid,
float32 with NaN = nodata, as read by :func:`imaging_pipelines.remote_sensing.scene_read.read_acquisition_window`;
raw DNs). Per date: ``nodata`` = any reflectance band invalid; reflectance = ``DN * scale + offset``
(reflectance bands only); cloud mask from ``cfg.cloud_mask`` (``qa_bits``: any listed bit set in the QA
band or layer; ``threshold``: :func:`indices.cloud_mask` on reflectance; ``layer``: the acquisition's
cloud-mask layer, cloud where its value is in ``cloud_values``, else non-zero; ``none``) grown by
``dilate_px``; later dates are shifted onto the first (translation by phase correlation on the mean
reflectance with clouds and nodata masked; shifts whose length exceeds ``cfg.max_shift_px`` are measured
but not applied).
Composite: per-pixel median over clear observations, or the least-cloudy date (``composite: none``).
Indices (``cfg.indices``) are computed on the composite and clipped to ``[-1, 1]`` (negative
reflectance after an offset can push a normalised difference outside). DEM / extra layers (``cfg.layers``)
are reduced to their per-pixel median over the dates where they hold data (extra layers shifted with their
date, a DEM never), then appended to the composite after the indices (``channel: true``, in ``cfg.layers``
order) or returned in ``TileProducts.layers``.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field

import numpy as np

from imaging_pipelines.remote_sensing.composite import least_cloudy_date, median_composite
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig
from imaging_pipelines.remote_sensing.coregister import apply_shift, phase_correlation_shift, shift_mask
from imaging_pipelines.remote_sensing.indices import INDEX_BANDS, cloud_mask, normalized_difference_array
from imaging_pipelines.remote_sensing.qa import dilate_mask, qa_cloud_mask
from imaging_pipelines.core.raster import Raster

MIN_COMMON_CLEAR = 0.2  # co-register only when this share of pixels is clear in both dates
NEGLIGIBLE_SHIFT_PX = 0.05  # shorter measured shifts are not applied (interpolation would only blur)


@dataclass
class TileProducts:
    """Products of :func:`analysis_ready_tile` (masks are ``(time, y, x)`` on the tile grid, after shifts).

    ``shifts``: per date ``{"date", "dy_px", "dx_px", "applied", "reason"}``, ``(dy, dx)`` = measured
    displacement of that date relative to the first (rows down, columns right; undone when applied).
    ``cloud_fraction`` = cloudy / valid pixel-observations over all dates; ``nodata_fraction`` = share of
    pixels with no valid observation in any date.
    """

    composite: Raster
    cloud: np.ndarray
    nodata: np.ndarray
    valid_count: np.ndarray
    shifts: list[dict] = field(default_factory=list)
    cloud_fraction: float = 0.0
    nodata_fraction: float = 0.0
    notes: list[str] = field(default_factory=list)
    layers: dict[str, np.ndarray] = field(default_factory=dict)  # dem / extra layers not used as channels, (y, x)
    per_date: np.ndarray | None = None  # (time, reflectance band, y, x) co-registered, NaN where not clear


def _reflectance(raster: Raster, names: list[str], cfg: RemoteSensingConfig) -> tuple[np.ndarray, np.ndarray]:
    """``(reflectance (b, y, x) float32 NaN-invalid, nodata (y, x) bool)`` of one acquisition."""
    idx = [raster.band_index(n) for n in names]
    invalid = raster.invalid_mask(per_band=True)[idx].any(axis=0)
    refl = raster.array[idx].astype(np.float32)
    scale, offset = cfg.reflectance.scale, cfg.reflectance.offset
    if scale != 1.0:
        refl *= np.float32(scale)
    if offset != 0.0:
        refl += np.float32(offset)
    refl[:, invalid] = np.nan
    return refl, invalid


def _clouds(raster: Raster, refl: np.ndarray, names: list[str], cfg: RemoteSensingConfig) -> np.ndarray:
    cm = cfg.cloud_mask
    if cm.source == "qa_bits":
        cloud = qa_cloud_mask(raster.band(cm.qa_band), cm.bits)
    elif cm.source == "threshold":
        missing = [b for b in ("blue", "green", "red") if b not in names]
        if missing:
            raise ValueError(f"cloud_mask 'threshold' needs reflectance bands blue, green, red; missing {missing}")
        scaled = raster.with_array(refl, band_names=names, nodata=float("nan"))
        cloud = cloud_mask(scaled, scale=1.0, brightness=cm.brightness, whiteness=cm.whiteness)
    elif cm.source == "layer":
        values = raster.band(cm.layer)
        wanted = next(x.cloud_values for x in cfg.layers if x.name == cm.layer)
        cloud = np.isfinite(values) & (np.isin(values, wanted) if wanted is not None else values != 0)
    else:
        cloud = np.zeros(refl.shape[1:], dtype=bool)
    return dilate_mask(cloud, cm.dilate_px)


def _extra_layers(acquisitions: list[Raster], shifts: list[dict], cfg: RemoteSensingConfig) -> dict[str, np.ndarray]:
    """Layer name -> (y, x) float32 per-pixel median over the dates of every dem / extra layer (an extra layer
    shifted like its date, a DEM never); NaN where no date holds data."""
    out = {}
    for layer in (x for x in cfg.layers if x.role in ("dem", "extra")):
        per_date = []
        for raster, record in zip(acquisitions, shifts):
            values = raster.band(layer.name).astype(np.float32)
            if record.get("applied") and layer.role == "extra":  # a DEM is terrain on the map grid: never shifted
                values = apply_shift(values, -record["dy_px"], -record["dx_px"])
            per_date.append(values)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN pixels -> NaN, as wanted
            out[layer.name] = np.nanmedian(np.stack(per_date), axis=0).astype(np.float32)
    return out


def _mean_masked(refl: np.ndarray, bad: np.ndarray) -> np.ndarray:
    mean = refl.mean(axis=0)
    mean[bad] = np.nan
    return mean


def _measure(reference, refl, nodata, cloud, t, record, notes) -> tuple[float, float] | None:
    """Phase-correlation shift of date ``t`` against ``reference`` (None, with the reason, when not measurable)."""
    date = record["date"]
    moving = _mean_masked(refl[t], nodata[t] | cloud[t])
    common = float((np.isfinite(reference) & np.isfinite(moving)).mean())
    if common < MIN_COMMON_CLEAR:
        record["reason"] = f"only {common:.0%} of pixels clear in both dates (need {MIN_COMMON_CLEAR:.0%})"
        notes.append(f"{date}: not co-registered: {record['reason']}")
        return None
    try:
        return phase_correlation_shift(reference, moving)
    except ValueError as exc:
        record["reason"] = f"shift not measurable: {exc}"
        notes.append(f"{date}: not co-registered: {exc}")
        return None


def _coregister(refl, nodata, cloud, dates, cfg, notes, known: dict | None = None) -> list[dict]:
    """Shift dates 1.. onto date 0 in place (``refl``, ``nodata``, ``cloud`` lists); the shift records.
    ``known``: date -> ``(dy, dx)`` measured beforehand (on a larger window of the scene), used as given."""
    first = {"date": dates[0], "dy_px": 0.0, "dx_px": 0.0, "applied": False, "reason": "reference date"}
    if not cfg.coregister:
        return [first] + [{"date": d, "dy_px": 0.0, "dx_px": 0.0, "applied": False,
                           "reason": "coregistration disabled"} for d in dates[1:]]
    reference = _mean_masked(refl[0], nodata[0] | cloud[0])
    records = [first]
    for t in range(1, len(dates)):
        record = {"date": dates[t], "dy_px": float("nan"), "dx_px": float("nan"), "applied": False, "reason": ""}
        records.append(record)
        given = (known or {}).get(dates[t])
        shift = tuple(given) if given is not None else _measure(reference, refl, nodata, cloud, t, record, notes)
        if shift is None:
            continue
        dy, dx = shift
        record["dy_px"], record["dx_px"] = round(dy, 3), round(dx, 3)
        length = math.hypot(dy, dx)
        if length > cfg.max_shift_px:
            record["reason"] = f"shift {length:.2f} px > max_shift_px {cfg.max_shift_px:g}: rejected"
            notes.append(f"{dates[t]}: {record['reason']}")
            continue
        if length < NEGLIGIBLE_SHIFT_PX:
            record["reason"] = f"shift {length:.2f} px negligible (< {NEGLIGIBLE_SHIFT_PX} px)"
            continue
        refl[t] = apply_shift(refl[t], -dy, -dx)
        nodata[t] = shift_mask(nodata[t], -dy, -dx, outside=True) | np.isnan(refl[t]).any(axis=0)
        cloud[t] = shift_mask(cloud[t], -dy, -dx, outside=False) & ~nodata[t]
        refl[t][:, nodata[t]] = np.nan
        record["applied"], record["reason"] = True, "applied" if given is None else "applied (measured on the scene)"
    return records


def analysis_ready_tile(acquisitions: list[Raster], dates: list[str], cfg: RemoteSensingConfig,
                        known_shifts: dict[str, tuple[float, float]] | None = None) -> TileProducts:
    """Masks, co-registration, composite and indices of one tile's acquisitions (see the module docstring).

    ``acquisitions[i]`` was taken on ``dates[i]`` (the first is the co-registration reference); all must
    share one grid and carry every catalog band by name. ``known_shifts``: date -> ``(dy, dx)`` px measured
    beforehand on a larger part of the scene (more reliable than a small tile); other dates are measured on
    the tile. ``ValueError`` on mismatched inputs.
    """
    if not acquisitions or len(acquisitions) != len(dates):
        raise ValueError(f"need one date per acquisition, got {len(acquisitions)} rasters and {len(dates)} dates")
    shape = acquisitions[0].shape[1:]
    odd = [d for a, d in zip(acquisitions, dates) if a.shape[1:] != shape]
    if odd:
        raise ValueError(f"acquisitions {odd} are not on the {shape[0]}x{shape[1]} grid of the first")
    names = cfg.reflectance_bands
    if not names:
        raise ValueError("the catalog has no reflectance band")
    notes: list[str] = []
    refl, nodata, cloud = [], [], []
    for raster in acquisitions:
        r, invalid = _reflectance(raster, names, cfg)
        refl.append(r)
        nodata.append(invalid)
        cloud.append(_clouds(raster, r, names, cfg) & ~invalid)
    shifts = _coregister(refl, nodata, cloud, list(dates), cfg, notes, known_shifts)

    stack = np.stack(refl)
    nodata_a, cloud_a = np.stack(nodata), np.stack(cloud)
    clear = ~nodata_a & ~cloud_a
    if cfg.composite == "median":
        composite, count = median_composite(stack, clear)
    else:
        composite, count, best = least_cloudy_date(stack, clear)
        notes.append(f"composite: least-cloudy date {dates[best]}")

    layers = [composite]
    for index in cfg.indices:
        a, b = INDEX_BANDS[index]
        if a not in names or b not in names:
            raise ValueError(f"index {index} needs reflectance bands {a!r} and {b!r}; reflectance bands: {names}")
        nd = normalized_difference_array(composite[names.index(a)], composite[names.index(b)])
        layers.append(np.clip(nd, -1.0, 1.0)[np.newaxis])
    extra = _extra_layers(acquisitions, shifts, cfg)
    channels = cfg.channel_layers
    layers += [extra[n][np.newaxis] for n in channels]
    first = acquisitions[0]
    product = Raster(np.concatenate(layers).astype(np.float32, copy=False), first.crs, first.transform,
                     nodata=float("nan"), band_names=list(names) + list(cfg.indices) + channels)

    n_valid = int((~nodata_a).sum())
    cloud_fraction = float(cloud_a.sum() / n_valid) if n_valid else 0.0
    nodata_fraction = float(nodata_a.all(axis=0).mean())
    no_clear = int((count == 0).sum())
    if no_clear:
        notes.append(f"{no_clear} pixels have no clear observation (NaN in the composite)")
    stored = {n: v for n, v in extra.items() if n not in channels}
    per_date = np.where(clear[:, np.newaxis], stack, np.float32(np.nan)).astype(np.float32)
    return TileProducts(product, cloud_a, nodata_a, count, shifts, cloud_fraction, nodata_fraction, notes, stored,
                        per_date)
