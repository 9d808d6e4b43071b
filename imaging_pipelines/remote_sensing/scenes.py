"""Find the scenes of a remote-sensing inbox and the pixel grid each scene is processed on.

Inbox layout (paths relative to the inbox; hidden files and folders are ignored):

* every top-level folder is a scene; every top-level ``.tif``/``.tiff`` file is a single-date scene of
  its own, read as one multi-band file (``<stem><label suffix>.tif`` / ``<stem>.geojson`` next to it are
  its labels);
* inside a scene folder, files are grouped into acquisitions by the first date token (``YYYYMMDD`` or
  ``YYYY-MM-DD``) found in a sub-folder name (outermost first), else in the file name; none -> date ``""``;
* per-band layout (``BandSpec.file``): a band's file is the raster file whose *name* matches the band's
  regex (case-insensitive ``re.search``); an acquisition missing a band (or with several candidates) is
  dropped and reported in ``SceneSource.problems``; multi-band layout (``BandSpec.index``): exactly one
  raster file per acquisition, stored as ``{"*": path}``;
* layers (``cfg.layers``: cloud mask, QA, DEM, extra rasters): a raster file whose name matches a layer's
  ``file`` regex belongs to that layer (first matching layer; checked before bands and labels); a dated
  layer file joins the acquisition of its date, an undated one is shared by every acquisition (a DEM);
  an acquisition without its layer (or with several candidates) is dropped and reported;
* time series in one multi-band file (``cfg.time_series``): each raster file becomes one acquisition per
  date of ``time_series.dates`` (``Acquisition.step`` = the date's position, which selects its bands);
* label rasters: ``.tif``/``.tiff`` whose stem ends with a label suffix (default
  ``cfg.segmentation.labels.suffixes``); label polygons: ``.geojson`` files. Other files are ignored.

Scene names are made safe for partition keys (``tiling.SCENE_NAME``, no ``__``): other characters become ``-``.
"""

from __future__ import annotations

import datetime as _dt
import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from affine import Affine
from rasterio.crs import CRS

from imaging_pipelines.config.catalog import configured_data_roots
from imaging_pipelines.core.inbox_safety import is_valid_utf8, safe_listing, shown_name, within
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.config.remote_sensing import RemoteSensingConfig, TilingConfig
from imaging_pipelines.remote_sensing.io import RasterReader
from imaging_pipelines.remote_sensing.tiling import SCENE_NAME, Tile, tile_grid

RASTER_SUFFIXES = (".tif", ".tiff", ".jp2", ".vrt", ".img")
_DATE = re.compile(r"(?<!\d)(\d{4})(-?)(\d{2})\2(\d{2})(?!\d)")


@dataclass(frozen=True)
class Acquisition:
    """One date of a scene. ``date``: ``YYYY-MM-DD`` or ``""`` (undated); ``files``: band name -> path
    (per-band layout) or ``{"*": path}`` (one multi-band file), plus layer name -> path for ``cfg.layers``;
    ``step``: the date's position in a ``time_series`` file (0 otherwise)."""

    date: str
    files: dict[str, str]
    step: int = 0

    def path_of(self, band: str) -> str:
        """The file holding ``band`` or layer ``band`` (the multi-band file for bands when there is one)."""
        return self.files.get(band) or self.files["*"]


@dataclass(frozen=True)
class SceneSource:
    """A scene found in the inbox: ``root`` is its folder (or its single file); ``acquisitions`` are sorted
    by date (undated first); ``problems`` describe dropped acquisitions / ambiguous files."""

    scene: str
    root: str
    acquisitions: tuple[Acquisition, ...]
    label_raster: str | None = None
    label_geojson: str | None = None
    problems: tuple[str, ...] = ()

    @property
    def dates(self) -> list[str]:
        return [a.date for a in self.acquisitions]

    def files(self) -> list[str]:
        """Every file the scene reads (acquisitions and labels), sorted."""
        paths = {p for a in self.acquisitions for p in a.files.values()}
        paths |= {p for p in (self.label_raster, self.label_geojson) if p}
        return sorted(paths)


@dataclass(frozen=True)
class SceneGrid:
    """The pixel grid of a scene: ``crs``, pixel-corner ``transform`` (CRS units per pixel), size in pixels."""

    crs: CRS | None
    transform: Affine
    height: int
    width: int

    def tiles(self, tiling: TilingConfig) -> list[Tile]:
        """Row-major tiles of ``tiling.size`` px cores grown by ``tiling.overlap`` px (see :func:`tile_grid`)."""
        return tile_grid(self.height, self.width, tiling.size, tiling.overlap)

    @property
    def bounds(self) -> tuple[float, float, float, float]:
        """``(left, bottom, right, top)`` in CRS units (north-up grid)."""
        t = self.transform
        xs = (t.c, t.c + t.a * self.width)
        ys = (t.f, t.f + t.e * self.height)
        return min(xs), min(ys), max(xs), max(ys)


def safe_scene_name(name: str) -> str:
    """``name`` with characters outside ``[A-Za-z0-9._-]`` (and ``__`` runs) replaced so it is a valid key."""
    safe = re.sub(r"[^A-Za-z0-9._-]", "-", name)
    safe = re.sub(r"_{2,}", "_", safe)
    safe = re.sub(r"^[^A-Za-z0-9]+", "", safe) or "scene"
    assert SCENE_NAME.match(safe) and "__" not in safe
    return safe


def date_token(text: str) -> str | None:
    """The first valid calendar date ``YYYYMMDD`` / ``YYYY-MM-DD`` in ``text`` as ``YYYY-MM-DD``, else None."""
    for m in _DATE.finditer(text):
        try:
            day = _dt.date(int(m[1]), int(m[3]), int(m[4]))
        except ValueError:
            continue
        if 1950 <= day.year <= 2100:
            return day.isoformat()
    return None


def _hidden(rel: Path) -> bool:
    return any(part.startswith(".") for part in rel.parts)


def _is_label_raster(path: Path, suffixes: Sequence[str]) -> bool:
    stem = path.stem.lower()
    return path.suffix.lower() in (".tif", ".tiff") and any(stem.endswith(s.lower()) for s in suffixes)


def _pick(kind: str, candidates: list[Path], problems: list[str]) -> str | None:
    if len(candidates) > 1:
        names = ", ".join(p.name for p in candidates)
        problems.append(f"{len(candidates)} {kind} files ({names}); using {candidates[0].name}")
    return str(candidates[0]) if candidates else None


def _only_file(hits: list[Path], label: str, what: str, problems: list[str]) -> str | None:
    """The one file of ``hits`` as a string; None (and a problem naming the candidates) for none or several."""
    if len(hits) == 1:
        return str(hits[0])
    found = "no file" if not hits else f"{len(hits)} files ({', '.join(p.name for p in hits)})"
    problems.append(f"{label}: {found} for {what}")
    return None


def _layer_of(path: Path, cfg: RemoteSensingConfig) -> str | None:
    """The first ``cfg.layers`` entry whose ``file`` regex matches the file name, else None."""
    return next((x.name for x in cfg.layers if re.search(x.file, path.name, re.IGNORECASE)), None)


def _with_layers(acquisitions: list[Acquisition], layer_files: dict[tuple[str, str], list[Path]],
                 cfg: RemoteSensingConfig, problems: list[str]) -> list[Acquisition]:
    """Each acquisition with its layer files (its date's, else the undated shared one); acquisitions
    missing a layer, or with several candidates, are dropped and reported."""
    out = []
    for acq in acquisitions:
        files, ok = dict(acq.files), True
        for layer in cfg.layers:
            hits = layer_files.get((layer.name, acq.date)) or layer_files.get((layer.name, ""), [])
            found = _only_file(hits, f"{acq.date or 'undated'}", f"layer {layer.name}", problems)
            ok = ok and found is not None
            files[layer.name] = found
        if ok:
            out.append(replace(acq, files=files))
    return out


def _time_steps(acquisition: Acquisition, cfg: RemoteSensingConfig) -> list[Acquisition]:
    """One acquisition per date of a ``time_series`` file (the acquisition itself without one)."""
    if cfg.time_series is None:
        return [acquisition]
    return [Acquisition(d, acquisition.files, i) for i, d in enumerate(cfg.time_series.dates)]


def _scan_folder(folder: Path, cfg: RemoteSensingConfig, suffixes: Sequence[str]) -> SceneSource:
    problems: list[str] = []
    groups: dict[str, list[Path]] = {}
    layer_files: dict[tuple[str, str], list[Path]] = {}
    label_rasters, geojsons = [], []
    listing = safe_listing(folder, configured_data_roots())  # links outside the data roots refused, no crash
    problems += listing.problems
    for entry in listing.files:
        path, rel = Path(entry.path), Path(entry.relpath)
        if _hidden(rel):
            continue
        is_raster = path.suffix.lower() in RASTER_SUFFIXES
        date = next((d for d in map(date_token, rel.parts[:-1]) if d), None) or date_token(path.name) or ""
        layer = _layer_of(path, cfg) if is_raster else None
        if layer is not None:
            layer_files.setdefault((layer, date), []).append(path)
        elif path.suffix.lower() == ".geojson":
            geojsons.append(path)
        elif _is_label_raster(path, suffixes):
            label_rasters.append(path)
        elif is_raster:
            groups.setdefault(date, []).append(path)
    acquisitions = []
    for date in sorted(groups):
        label = date or "undated"
        files = groups[date]
        if cfg.per_band_files:
            chosen, ok = {}, True
            for band in cfg.bands:
                pattern = re.compile(band.file, re.IGNORECASE)
                found = _only_file([p for p in files if pattern.search(p.name)], label, f"band {band.name}", problems)
                ok = ok and found is not None
                chosen[band.name] = found
            if ok:
                acquisitions.append(Acquisition(date, chosen))
        elif len(files) == 1:
            acquisitions += _time_steps(Acquisition(date, {"*": str(files[0])}), cfg)
        else:
            problems.append(f"{label}: {len(files)} raster files ({', '.join(p.name for p in files)}) "
                            "for one multi-band acquisition")
    if cfg.time_series is not None and len(acquisitions) > len(cfg.time_series.dates):
        problems.append(f"several time-series files; using {Path(acquisitions[0].path_of('*')).name}")
        acquisitions = acquisitions[:len(cfg.time_series.dates)]
    acquisitions = sorted(_with_layers(acquisitions, layer_files, cfg, problems), key=lambda a: a.date)
    if not acquisitions:
        problems.append("no usable acquisition")
    return SceneSource(
        safe_scene_name(folder.name), str(folder), tuple(acquisitions),
        _pick("label raster", label_rasters, problems), _pick("GeoJSON label", geojsons, problems), tuple(problems),
    )


def _single_file_scene(path: Path, cfg: RemoteSensingConfig, suffixes: Sequence[str]) -> SceneSource:
    problems: list[str] = []
    acquisitions = tuple(_time_steps(Acquisition(date_token(path.name) or "", {"*": str(path)}), cfg))
    if cfg.layers:
        problems.append("a single file scene has no separate layer files: put the scene in a folder")
        acquisitions = ()
    if cfg.per_band_files:
        problems.append("a single file scene needs multi-band bands ('index'), but the bands use 'file' patterns")
        acquisitions = ()
    siblings = [p for p in path.parent.iterdir() if p.is_file()]
    labels = [p for p in siblings if _is_label_raster(p, suffixes) and any(
        p.stem.lower() == path.stem.lower() + s.lower() for s in suffixes)]
    geojson = [p for p in siblings if p.suffix.lower() == ".geojson" and p.stem == path.stem]
    return SceneSource(
        safe_scene_name(path.stem), str(path), acquisitions,
        _pick("label raster", sorted(labels), problems), _pick("GeoJSON label", geojson, problems), tuple(problems),
    )


def _refused_entry(entry: Path) -> str | None:
    """Why a top-level inbox entry cannot be a scene (an undecodable name, a link that dangles, leads outside
    the data roots or to a folder), or None."""
    if not is_valid_utf8(entry.name):
        return "name is not valid UTF-8; skipped (rename it)"
    if entry.is_symlink():
        if not entry.exists():
            return "dangling symbolic link; skipped"
        if not within(entry, configured_data_roots()):
            return "symbolic link outside the data roots; refused"
        if entry.is_dir():
            return "symbolic link to a folder; not followed"
    return None


def discover_scenes(
    inbox: str | os.PathLike, cfg: RemoteSensingConfig, label_suffixes: Sequence[str] | None = None
) -> list[SceneSource]:
    """The scenes of ``inbox`` sorted by name (layout in the module docstring); ``label_suffixes``
    default to ``cfg.segmentation.labels.suffixes``. Scenes without usable acquisitions are returned
    too (with an explanatory problem); a missing inbox raises :class:`ImagingInputError`."""
    root = Path(inbox)
    if not root.is_dir():
        raise ImagingInputError(root, "inbox folder not found" if not root.exists() else "inbox is not a folder")
    suffixes = list(label_suffixes if label_suffixes is not None else cfg.segmentation.labels.suffixes)
    scenes, seen = [], set()
    for entry in sorted(root.iterdir()):
        if entry.name.startswith("."):
            continue
        refused = _refused_entry(entry)
        if refused:
            name = shown_name(entry.name)
            name = name.rsplit(".", 1)[0] if entry.suffix.lower() in (".tif", ".tiff") else name
            source = SceneSource(safe_scene_name(name), str(entry), (), None, None, (refused,))
        elif entry.is_dir():
            source = _scan_folder(entry, cfg, suffixes)
        elif entry.is_file() and entry.suffix.lower() in (".tif", ".tiff") and not _is_label_raster(entry, suffixes):
            source = _single_file_scene(entry, cfg, suffixes)
        else:
            continue
        name, n = source.scene, 2
        while name in seen:  # two inbox entries with the same safe name
            name, n = f"{source.scene}-{n}", n + 1
        seen.add(name)
        scenes.append(source if name == source.scene else SceneSource(
            name, source.root, source.acquisitions, source.label_raster, source.label_geojson, source.problems))
    return sorted(scenes, key=lambda s: s.scene)


def scene_fingerprint(source: SceneSource) -> str:
    """sha256[:16] of the sorted ``(relative path, size, mtime_ns)`` of every file the scene reads
    (missing files count as size -1): changes when a file is added, removed, rewritten or touched."""
    base = source.root if os.path.isdir(source.root) else os.path.dirname(source.root)
    entries = []
    for path in source.files():
        try:
            st = os.stat(path)
            size, mtime = st.st_size, st.st_mtime_ns
        except OSError:
            size, mtime = -1, 0
        entries.append((os.path.relpath(path, base), size, mtime))
    return hashlib.sha256(json.dumps(sorted(entries)).encode()).hexdigest()[:16]


def _grid_band(source: SceneSource, cfg: RemoteSensingConfig) -> tuple[str, int]:
    """(file, 1-based band) whose grid is the scene grid: cfg.grid_band, else the finest reflectance band."""
    first = source.acquisitions[0]
    if cfg.grid_band is not None:
        spec = cfg.band(cfg.grid_band)
        return first.path_of(spec.name), spec.index or 1
    if "*" in first.files:
        return first.files["*"], 1
    names = cfg.reflectance_bands or [b.name for b in cfg.bands]
    best, best_area = names[0], None
    for name in names:
        with RasterReader(first.files[name]) as reader:
            area = abs(reader.transform.a * reader.transform.e)
        if best_area is None or area < best_area * (1 - 1e-9):
            best, best_area = name, area
    return first.files[best], 1


def scene_grid(source: SceneSource, cfg: RemoteSensingConfig) -> SceneGrid:
    """The grid (CRS, transform, size) of ``cfg.grid_band`` (default: the finest-resolution reflectance
    band; ties -> first in ``cfg.bands`` order) in the scene's first acquisition."""
    if not source.acquisitions:
        raise ImagingInputError(source.root, "no usable acquisition: " + "; ".join(source.problems))
    path, _ = _grid_band(source, cfg)
    with RasterReader(path) as reader:
        return SceneGrid(reader.crs, reader.transform, reader.height, reader.width)
