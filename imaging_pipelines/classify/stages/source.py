"""What the classification stages need from a domain: the partitions, one partition's network input, its
reference class and a picture of it; plus the stable train / validation / test split of partitions."""

from __future__ import annotations

from abc import ABC, abstractmethod

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.stage_result import stable_fraction, stored_partitions

SPLITS = ("train", "validation", "test")


class ClassificationSource(ABC):
    """Per-domain hooks; ``input_stage`` is the asset whose stores hold the images."""

    input_stage: str

    def __init__(self, dataset: DatasetConfig) -> None:
        self.dataset = dataset
        self.config = dataset.classification

    def partitions(self, root: UPath | str) -> list[str]:
        """The partition keys with an input store (sorted)."""
        return stored_partitions(root, self.dataset.id, self.input_stage)

    @abstractmethod
    def image(self, root: UPath | str, partition: str) -> np.ndarray:
        """``(c, s, s)`` float32 network input (``s`` = ``training.input_size``); ValueError when the
        partition holds no image this classifier can read."""

    @abstractmethod
    def label(self, root: UPath | str, partition: str) -> int | None:
        """The reference class *value* of the partition, None when unlabelled."""

    @abstractmethod
    def display(self, image: np.ndarray) -> np.ndarray:
        """``(s, s, 3)`` float RGB in [0, 1] of a network input, for the saliency overlay."""

    def index_of(self, value: int) -> int:
        """The network class index of a class value."""
        return sorted(self.config.classes.values()).index(value)

    def split(self, partition: str) -> str:
        """``"test"`` (never trained on), ``"validation"`` (picks the epoch) or ``"train"``: a stable hash
        of the partition key and the training seed; adding partitions never moves existing ones."""
        t = self.config.training
        u = stable_fraction(t.seed, f"classification:{partition}")
        return "test" if u < t.test_fraction else "validation" if u < t.test_fraction + t.validation_fraction else "train"
