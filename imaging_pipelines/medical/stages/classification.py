"""Radiograph classification source: the network input of a patient's ingested 2D radiograph and the
patient's reference class from the catalog's label table (``classification.labels``, ``source: table``).

The image of a partition is its first ingested image (by name) that is planar (one slice): DX / CR
radiographs are ingested as one-slice volumes. A partition without one cannot be classified (ValueError).
"""

from __future__ import annotations

import functools

import numpy as np
from upath import UPath

from imaging_pipelines.classify.stages.source import ClassificationSource
from imaging_pipelines.core.asset_names import INGESTED
from imaging_pipelines.core.stage_result import stage_store
from imaging_pipelines.medical.classify import radiograph_input, read_label_table


class RadiographSource(ClassificationSource):
    input_stage = INGESTED

    def image(self, root: UPath | str, partition: str) -> np.ndarray:
        from imaging_pipelines.medical.io.ome_zarr import read_volume_store

        volumes = read_volume_store(stage_store(root, self.dataset.id, INGESTED, partition))
        for name in sorted(volumes):
            if volumes[name].spatial_shape[0] == 1:
                return radiograph_input(volumes[name], self.config.training.input_size, name)
        raise ValueError(f"{partition}: no 2D (one-slice) image among {len(volumes)} ingested image(s)")

    @functools.cached_property
    def _labels(self) -> dict[str, int]:
        labels = self.config.labels
        return read_label_table(labels.file, labels.id_column, labels.label_column, self.config.classes)

    def label(self, root: UPath | str, partition: str) -> int | None:
        return self._labels.get(partition)

    def display(self, image: np.ndarray) -> np.ndarray:
        return np.repeat(np.clip(image[0], 0, 1)[..., None], 3, axis=2)
