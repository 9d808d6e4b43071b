"""Scan a remote-sensing dataset's inbox for partitions: the tiles of every scene, and those of changed scenes."""

from __future__ import annotations

import os

from imaging_pipelines.config.catalog import DatasetConfig, configured_data_roots
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.inbox_safety import changing_files, safe_listing
from imaging_pipelines.core.inbox_scan import InboxScan
from imaging_pipelines.remote_sensing.scenes import scene_fingerprint
from imaging_pipelines.remote_sensing.stages.tile_ingest import scene_tiles, scenes
from imaging_pipelines.remote_sensing.tiling import partition_key


def scan_scenes(dataset: DatasetConfig, previous_state: dict | None, index_root=None) -> InboxScan:
    """Scan a remote-sensing dataset's inbox: the tile keys of every readable scene, and every tile of each
    scene whose fingerprint (files, sizes, mtimes) differs from ``previous_state`` (scene -> fingerprint).
    A scene with a file that changed less than the catalog's ``inbox_checks.quiescent_seconds`` ago waits (a
    warning; no partition, no run, its previous state kept) until a later scan finds it quiescent.
    A scene whose tiling fails still gets one partition (``<scene>__r0_c0``) whose run fails with the reason.
    ``index_root`` is accepted for the common scanner signature and unused: a tile's run reads its scene's
    files from the scene folder directly."""
    previous = previous_state or {}
    quiet = dataset.inbox_checks.quiescence()
    scan = InboxScan(keys=[], requests=[], state={})
    for name, source in sorted(scenes(dataset).items()):
        changing = scene_changing_files(source, quiet)
        if changing:  # still being copied or written: looked at again by the next scan
            scan.warnings.append(f"scene {name}: {len(changing)} file(s) still changing "
                                 f"(e.g. {os.path.basename(changing[0])}); read once unchanged for {quiet:g} s")
            if name in previous:
                scan.state[name] = previous[name]  # its tiles stay as they were until the change is complete
            continue
        scan.warnings += [f"scene {name}: {problem}" for problem in source.problems]
        if not source.acquisitions:
            continue
        scan.state[name] = fingerprint = scene_fingerprint(source)
        try:
            scene_keys = [t.key(name) for t in scene_tiles(dataset, source)[1]]
        except ImagingInputError as exc:  # one partition whose run fails with the message, visible in the UI
            scan.errors.append(f"scene {name}: {exc}")
            scene_keys = [partition_key(name, 0, 0)]
        scan.keys += scene_keys
        scan.digests.update((k, fingerprint) for k in scene_keys)
        if previous.get(name) != fingerprint:
            scan.requests += [(k, fingerprint) for k in scene_keys]
    return scan


def scene_changing_files(source, quiescent_seconds: float) -> list[str]:
    """The files of a scene (every file under a scene folder, or a single-file scene with its label files)
    that changed less than ``quiescent_seconds`` ago (newer of mtime and ctime)."""
    if quiescent_seconds <= 0:
        return []
    if os.path.isdir(source.root):
        paths = [f.path for f in safe_listing(source.root, configured_data_roots()).files]
    else:
        paths = [p for p in (source.root, source.label_raster, source.label_geojson) if p]
    return changing_files(paths, quiescent_seconds)
