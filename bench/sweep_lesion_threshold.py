"""Dice of a lesion model's tumour operating points on held-out generated cases, from one prediction per case.

For each held-out case of the benchmark's held-out generator (``train.HELD_OUT_SYNTH``, the seed of
``eval_real_lesions.py --held-out``; cases ``--first`` .. ``--first + --cases - 1``) the model's softmax is
computed once (flip TTA unless ``--no-flip-tta``), the atlas brain prior is registered once, and the tumour
is read at each threshold of ``--thresholds`` (``argmax`` or a probability;
``imaging_pipelines.medical.segment.operating_point.lesion_classes``: tumour where p(tumour) >= t inside the network's
brain) and gated as ``predict`` gates it. Prints one row per case and the mean per threshold; ``--json``
writes the rows (atomically). Dice against the drawn tumour (rim + core) on the case's 2 mm grid. Nothing
is trained. ``--skull-strip`` scores the same cases skull-stripped (BraTS-style, zero outside the brain: the
generator's ``skull_strip_probability`` set to 1; stripping is drawn last, so anatomy, lesions and
intensities are unchanged).

    python bench/sweep_lesion_threshold.py --model FILE [--first 10] [--cases 20]
        [--thresholds argmax,0.8,0.7,0.6,0.45,0.4,0.35,0.3,0.2] [--skull-strip] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np


def _thresholds(text: str) -> list[float | None]:
    from imaging_pipelines.medical.segment.operating_point import parse_lesion_threshold

    try:
        return [parse_lesion_threshold(part) for part in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--first", type=int, default=10, help="first held-out case (the bench scores 0..9)")
    parser.add_argument("--cases", type=int, default=20)
    parser.add_argument("--thresholds", type=_thresholds, default=_thresholds("argmax,0.8,0.7,0.6,0.45,0.4,0.35,0.3,0.2"))
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--skull-strip", action="store_true", help="score the cases skull-stripped (BraTS-style)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    if not args.model.is_file():
        parser.error(f"{args.model}: no such file")

    from imaging_pipelines.core.storage import write_text_atomic
    from imaging_pipelines.medical.segment.atlas_brain import trusted_atlas_brain
    from imaging_pipelines.medical.segment.brain_gate import gate_to_brain
    from imaging_pipelines.medical.segment.operating_point import lesion_classes
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict_probabilities, slice_axis
    from imaging_pipelines.medical.synth import lesions
    from imaging_pipelines.medical.synth.generator import LesionGenerator
    from imaging_pipelines.medical.synth.prefetch import binary_target
    from imaging_pipelines.medical.synth.train import HELD_OUT_SYNTH, held_out_generator

    model = SegmentationModel.load(args.model)
    if not model.brain_gate:
        parser.error(f"{args.model}: not a brain-gated lesion model (this sweep reads class 2 as tumour)")
    synth = replace(HELD_OUT_SYNTH, skull_strip_probability=1.0) if args.skull_strip else HELD_OUT_SYNTH
    held = held_out_generator(LesionGenerator(synth, seed=0))
    names = ["argmax" if t is None else str(t) for t in args.thresholds]
    rows = []
    for index in range(args.first, args.first + args.cases):
        t0 = time.perf_counter()
        case = held.case(index)
        ref = binary_target(case.label.array, lesions.TUMOUR_LABELS).astype(bool)
        probabilities = predict_probabilities(model, case.image, flip_tta=args.flip_tta,
                                              axis=slice_axis(case.image.spacing))
        brain = lesion_classes(probabilities, True, None) >= 1  # the same at every threshold
        prior, _note = trusted_atlas_brain(case.image, brain)
        row: dict = {"case": index}
        for name, t in zip(names, args.thresholds):
            pred = gate_to_brain(lesion_classes(probabilities, True, t), prior) >= 2
            total = int(pred.sum() + ref.sum())
            row[name] = 2.0 * int((pred & ref).sum()) / total if total else 1.0
        rows.append(row)
        print(f"case {index} ({time.perf_counter() - t0:.0f} s): "
              + " ".join(f"{n} {row[n]:.3f}" for n in names), flush=True)
    print(f"mean Dice over cases {args.first}..{args.first + args.cases - 1}: "
          + " ".join(f"{n} {np.mean([r[n] for r in rows]):.4f}" for n in names))
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
