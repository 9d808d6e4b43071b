"""The catalog side of the nnU-Net stage: the labelled training cohort of a dataset, with label values
remapped to nnU-Net's consecutive class indices (background 0, then the catalog classes in order), handed
to :func:`imaging_pipelines.medical.stages.nnunet.run_nnunet_stage`. nnU-Net works on local files, so its folders
are ``<root>/<dataset>/nnunet/`` for a local storage root (a temporary folder otherwise, noted)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from upath import UPath

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.storage import as_upath
from imaging_pipelines.medical.stages.segmentation_data import labelled_cohort


def run_nnunet_for_dataset(dataset: DatasetConfig, root: UPath | str, device: str = "auto", log=print):
    from imaging_pipelines.medical.stages.nnunet import run_nnunet_stage

    cfg = dataset.segmentation
    values = cfg.label_values
    lut = np.zeros(256, dtype=np.uint8)
    lut[values] = np.arange(len(values), dtype=np.uint8)
    cases = [(f"{c.partition}_{c.name}".replace("_", "-"), c.image, c.reference.with_array(lut[c.reference.array]))
             for c in labelled_cohort(dataset, root, split="train")]
    if not cases:
        raise ValueError(f"{dataset.id}: no labelled training image to export for nnU-Net")
    tests = [(f"{c.partition}_{c.name}".replace("_", "-"), c.image) for c in labelled_cohort(dataset, root, split="test")]
    labels = {"background": 0, **{name: i + 1 for i, name in enumerate(cfg.classes)}}
    modality = cfg.modalities[0].upper() if cfg.modalities else "MR"
    base = as_upath(root)
    tmp = None
    if base.protocol not in ("", "file", "local"):
        tmp = tempfile.TemporaryDirectory()
        work = Path(tmp.name)
        log(f"storage root {base} is not local: nnU-Net works in the temporary folder {work}")
    else:
        work = Path(str(base.path)) / dataset.id / "nnunet"
    try:
        outcome = run_nnunet_stage(
            cases, work, dataset_number=cfg.nnunet.dataset_number, name=dataset.id.replace("_", ""),
            labels=labels, channel_names={"0": modality}, run=cfg.nnunet.run, configuration=cfg.nnunet.configuration,
            trainer=cfg.nnunet.trainer, fold=cfg.nnunet.folds[0], device=device,
            predict_cases=tests if cfg.nnunet.run == "train" else None, log=log)
    finally:
        if tmp is not None:
            outcome_note = f"nnU-Net folders were temporary ({work}) because the storage root is remote"
            tmp.cleanup()
    if tmp is not None:
        outcome.notes.append(outcome_note)
    return outcome
