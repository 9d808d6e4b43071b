"""Labelled land-cover tiles cut from the demo scenes (:mod:`imaging_pipelines.tools.demo.scenes`), for the
tile classifier's tests: EuroSAT-style small tiles, each labelled with the class covering most of it.

A scene's noise-free surface reflectance (5 bands: blue, green, red, nir, swir1) is cut into
non-overlapping ``tile`` x ``tile`` px tiles; each gets the gain and sensor noise of a demo acquisition
(gain 0.96-1.04, Gaussian noise of 0.004 reflectance). Its class is the truth class covering at least
``min_fraction`` of it (:func:`imaging_pipelines.remote_sensing.tile_classify.tile_class`): 0 other
(vegetation, soil, shadows), 1 water, 2 built; mixed tiles are left out. Seeded: same arguments, same arrays.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imaging_pipelines.remote_sensing.tile_classify import tile_class
from imaging_pipelines.tools.demo.scenes import CLASSES, demo_scene

TILE_CLASSES = {"other": 0, **CLASSES}


@dataclass(frozen=True)
class LabelledTiles:
    images: np.ndarray  # (n, 5, tile, tile) float32 reflectance
    classes: np.ndarray  # (n,) int64 class values of TILE_CLASSES
    scenes: np.ndarray  # (n,) int64 index of the scene each tile comes from


def scene_tiles(scene_indices: list[int], tile: int = 32, scene_size: int = 320, seed: int = 0,
                min_fraction: float = 0.5) -> LabelledTiles:
    """The labelled tiles of the demo scenes ``scene_indices`` (see the module docstring)."""
    images, classes, scenes = [], [], []
    values = sorted(TILE_CLASSES.values())
    for index in scene_indices:
        scene = demo_scene(index, scene_size, seed)
        rng = np.random.default_rng([seed, index, 7])
        for r in range(0, scene_size - tile + 1, tile):
            for c in range(0, scene_size - tile + 1, tile):
                value = tile_class(scene.labels[r:r + tile, c:c + tile], values, min_fraction)
                if value is None:
                    continue
                refl = scene.reflectance[:, r:r + tile, c:c + tile] * rng.uniform(0.96, 1.04)
                images.append((refl + rng.normal(0, 0.004, refl.shape)).astype(np.float32))
                classes.append(value)
                scenes.append(index)
    return LabelledTiles(np.stack(images), np.asarray(classes, np.int64), np.asarray(scenes, np.int64))
