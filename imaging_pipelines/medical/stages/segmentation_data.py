"""What the segmentation stages read: the selected images of a partition with their reference labels,
the patient-level train/test split, and the labelled cohort for training.

Reference labels are the ``reference`` label images the ingestion stage attached (from label files in the
inbox, or from a labelled sibling dataset's ingested store), resampled (nearest neighbour, identity in
world LPS mm) onto the segmented image's grid and reduced to the catalog's class values (others -> 0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from upath import UPath

from imaging_pipelines.core.storage import store_exists
from imaging_pipelines.medical.io.ome_zarr import read_labels, read_volume_store
from imaging_pipelines.core.stage_result import (
    INGESTED, PREPROCESSED, image_modality, stable_fraction, stage_store, stored_partitions,
)
from imaging_pipelines.core.volume import Volume
from imaging_pipelines.core.asset_names import EVALUATED, SEGMENTATION_MODEL, SEGMENTED  # noqa: F401 (re-exported)



@dataclass
class SegmentationInput:
    partition: str
    name: str
    image: Volume
    reference: Volume | None  # class values only, on ``image``'s grid


def input_stage(dataset) -> str:
    return PREPROCESSED if dataset.segmentation.input == "preprocessed" else INGESTED


def partition_split(dataset, partition: str) -> str:
    """``"test"`` for the partitions held out of training (a stable hash of the partition key and the
    training seed below ``test_fraction``), else ``"train"``; new patients never move existing ones."""
    cfg = dataset.segmentation.training
    return "test" if stable_fraction(cfg.seed, partition) < cfg.test_fraction else "train"


def class_map(label: Volume, values: list[int]) -> Volume:
    """``label`` with every value not in ``values`` set to 0 (uint8)."""
    array = np.asarray(label.array)
    return label.with_array(np.where(np.isin(array, [v for v in values if v]), array, 0).astype(np.uint8))


def reference_labels(dataset, root: UPath | str, partition: str) -> dict[str, Volume]:
    """Image name -> reference label map (ingested grid) of one partition; empty without labels."""
    source = dataset.segmentation.labels
    if source.source == "none":
        return {}
    owner = dataset.id if source.source == "inbox" else source.dataset
    store = stage_store(root, owner, INGESTED, partition)
    if not store_exists(store):
        return {}
    refs = {}
    for name in _image_names(store):
        label = read_labels(store, name).get("reference")
        if label is not None:
            refs[name] = label
    return refs


def _image_names(store: UPath) -> list[str]:
    from imaging_pipelines.medical.io.ome_zarr import store_attributes

    return list(store_attributes(store).get("images", []))


def segmentation_inputs(dataset, root: UPath | str, partition: str) -> tuple[list[SegmentationInput], list[str]]:
    """The partition's images the catalog selects for segmentation, with references where they exist."""
    from imaging_pipelines.medical.preprocess.resample import resample_like

    cfg = dataset.segmentation
    images = read_volume_store(stage_store(root, dataset.id, input_stage(dataset), partition))
    refs = reference_labels(dataset, root, partition)
    inputs, notes = [], []
    for name, volume in images.items():
        if volume.is_timeseries or not cfg.selects(name, image_modality(volume.attributes)):
            notes.append(f"{name}: not selected for segmentation (modalities {cfg.modalities}, "
                         f"image_pattern {cfg.image_pattern!r}, 3D only)")
            continue
        reference = refs.get(name)
        if reference is not None:
            if not reference.same_geometry(volume):
                reference = resample_like(reference, volume, interpolator="nearest")
            reference = class_map(reference, cfg.label_values)
        inputs.append(SegmentationInput(partition, name, volume, reference))
    return inputs, notes


def labelled_cohort(dataset, root: UPath | str, split: str | None = "train") -> list[SegmentationInput]:
    """Every selected image with a reference label, over the stored partitions of ``split`` (None: all)."""
    cases = []
    for partition in stored_partitions(root, dataset.id, input_stage(dataset)):
        if split is not None and partition_split(dataset, partition) != split:
            continue
        inputs, _ = segmentation_inputs(dataset, root, partition)
        cases += [c for c in inputs if c.reference is not None]
    return cases
