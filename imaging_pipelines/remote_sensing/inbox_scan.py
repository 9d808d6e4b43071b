"""Scan a remote-sensing dataset's inbox for partitions: the tiles of every scene, and those of changed scenes."""

from __future__ import annotations

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.core.inbox_scan import InboxScan
from imaging_pipelines.remote_sensing.scenes import scene_fingerprint
from imaging_pipelines.remote_sensing.stages.tile_ingest import scene_tiles, scenes
from imaging_pipelines.remote_sensing.tiling import partition_key


def scan_scenes(dataset: DatasetConfig, previous_state: dict | None, index_root=None) -> InboxScan:
    """Scan a remote-sensing dataset's inbox: the tile keys of every readable scene, and every tile of each
    scene whose fingerprint (files, sizes, mtimes) differs from ``previous_state`` (scene -> fingerprint).
    A scene whose tiling fails still gets one partition (``<scene>__r0_c0``) whose run fails with the reason.
    ``index_root`` is accepted for the common scanner signature and unused: a tile's run reads its scene's
    files from the scene folder directly."""
    previous = previous_state or {}
    scan = InboxScan(keys=[], requests=[], state={})
    for name, source in sorted(scenes(dataset).items()):
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
