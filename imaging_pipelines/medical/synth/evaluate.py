"""Scores of a lesion model and of the classical baselines on held-out generated cases.

Each case comes from :func:`~imaging_pipelines.medical.synth.train.held_out_generator` (a seed no training
run uses). The model and each baseline of :data:`~imaging_pipelines.medical.segment.baselines.BASELINES`
segment the image; Dice is computed against the tumour target on the case's grid (spacing in mm).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from imaging_pipelines.medical.segment.baselines import BASELINES, run_baseline
from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
from imaging_pipelines.medical.segment.unet import SegmentationModel, predict
from imaging_pipelines.medical.synth.generator import LesionGenerator
from imaging_pipelines.medical.synth.prefetch import binary_target


def score_generated(model: SegmentationModel, gen: LesionGenerator, n_cases: int, target_labels: tuple[int, ...],
                    baselines: tuple[str, ...] = BASELINES, device: str = "auto",
                    flip_tta: bool = False) -> dict[str, Any]:
    """Per method (``"model"`` and each baseline): per-case Dice list and mean, on cases ``0 .. n_cases-1`` of
    ``gen``; a failing baseline scores 0 on that case and is noted under ``"errors"``. ``flip_tta``: the model
    averages its softmax over the input's mirrorings (:func:`~imaging_pipelines.medical.segment.unet.predict`)."""
    scores: dict[str, list[float]] = {"model": [], **{b: [] for b in baselines}}
    errors: list[str] = []
    for index in range(n_cases):
        case = gen.case(index)
        ref = case.label.with_array(binary_target(case.label.array, target_labels))
        masks = {"model": predict(model, case.image, device=device, flip_tta=flip_tta)}
        for name in baselines:
            try:
                masks[name] = run_baseline(name, case.image)[0]
            except Exception as exc:  # noqa: BLE001 - a baseline failing on one case is a score of 0, noted
                errors.append(f"case {index} {name}: {type(exc).__name__}: {exc}")
                masks[name] = ref.with_array(np.zeros(ref.spatial_shape, dtype=np.uint8))
        for name, mask in masks.items():
            binary = mask.with_array((np.asarray(mask.array) == 1).astype(np.uint8))
            scores[name].append(float(segmentation_metrics(binary, ref, labels=[1])[1]["dice"]))
    return {name: {"per_case": vals, "mean": float(np.mean(vals))} for name, vals in scores.items()} | {"errors": errors}
