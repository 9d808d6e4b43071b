"""Where a synthetic-lesion model errs on held-out generated cases: one table row per case.

For each held-out case of the benchmark generator (the cases ``eval_real_lesions.py --held-out N`` scores,
same seed) the model's tumour prediction (flip TTA unless ``--no-flip-tta``, atlas brain prior on) is compared
with the drawn tumour (rim + core, the bench's reference) and, on thick-slice cases, with its slab footprint
(``acquisition.slab_footprint`` at ``--slab-share``, what thick-slice training cases learn). The row gives the
case's draws (contrast mode, tumour hyper- or hypo-intense, the rim's margin beyond grey / white matter and its
distance from the oedema mean (0..1 scale), thick-slice axis and thickness in mm), volumes in mL, and where the
false positives lie (the generator's tissue label under each voxel: CSF, grey / white matter, oedema, outside
the brain) and which part of the tumour is missed (rim, core). Nothing is trained.

    python bench/diagnose_held_out_lesions.py --model FILE [--cases 25] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np


def _capture_labels(store: dict):
    """Wrap the generator's intensity synthesis so the combined tissue / lesion label map and the label means
    of the next case are kept in ``store``."""
    from imaging_pipelines.medical.synth import intensity

    original = intensity.synthesize_intensities

    def wrapped(rng, labels, means, params):
        store["labels"], store["means"] = labels.copy(), means.copy()
        return original(rng, labels, means, params)

    intensity.synthesize_intensities = wrapped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--cases", type=int, default=25)
    parser.add_argument("--slab-share", type=float, default=0.25)
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)

    from imaging_pipelines.core.storage import write_text_atomic
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict
    from imaging_pipelines.medical.synth.acquisition import slab_footprint
    from imaging_pipelines.medical.synth.generator import N_TISSUES, LesionGenerator
    from imaging_pipelines.medical.synth.train import HELD_OUT_SYNTH, held_out_generator

    store: dict = {}
    _capture_labels(store)
    model = SegmentationModel.load(args.model)
    held = held_out_generator(LesionGenerator(HELD_OUT_SYNTH, seed=0))
    rim, core, oedema = (N_TISSUES - 1 + v for v in (1, 2, 3))
    rows = []
    header = ("| case | Dice | Dice vs footprint | contrast | tumour | rim margin | rim-oedema | thick axis, mm | "
              "ref mL | footprint mL | pred mL | FP CSF | FP GM/WM | FP oedema | FP outside brain | FN rim | FN core |")
    print(header)
    print("|" + " --- |" * (header.count("|") - 1))
    for index in range(args.cases):
        case = held.case(index)
        labels, means = store["labels"], store["means"]
        voxel_ml = float(np.prod(case.label.spacing)) / 1000.0
        ref = np.isin(case.label.array, (1, 2))
        pred = np.asarray(predict(model, case.image, flip_tta=args.flip_tta).array) == 1
        thick = "thick_axis" in case.draws
        foot = slab_footprint(case.label.with_array(ref.astype(np.uint8)), int(case.draws["thick_axis"]),
                              float(case.draws["thickness_mm"]), args.slab_share) if thick else ref

        def dice(a: np.ndarray, b: np.ndarray) -> float:
            total = int(a.sum() + b.sum())
            return 2.0 * int((a & b).sum()) / total if total else 1.0

        fp = pred & ~ref
        gm, wm = float(means[2]), float(means[3])
        r = float(means[rim])
        row = {
            "case": index, "dice": dice(pred, ref), "dice_footprint": dice(pred, foot),
            "contrast": case.draws["contrast"], "hyper": bool(r > max(gm, wm)),
            "rim_margin": float(r - max(gm, wm) if r > max(gm, wm) else min(gm, wm) - r),
            "rim_oedema": float(abs(r - means[oedema])) if (labels == oedema).any() else None,
            "thick_axis": int(case.draws["thick_axis"]) if thick else None,
            "thickness_mm": float(case.draws["thickness_mm"]) if thick else None,
            "ref_ml": float(ref.sum()) * voxel_ml, "footprint_ml": float(foot.sum()) * voxel_ml,
            "pred_ml": float(pred.sum()) * voxel_ml,
            "fp_csf_ml": float((fp & (labels == 1)).sum()) * voxel_ml,
            "fp_gmwm_ml": float((fp & np.isin(labels, (2, 3))).sum()) * voxel_ml,
            "fp_oedema_ml": float((fp & (labels == oedema)).sum()) * voxel_ml,
            "fp_outside_ml": float((fp & ~np.isin(labels, (1, 2, 3, rim, core, oedema))).sum()) * voxel_ml,
            "fn_rim_ml": float((~pred & (labels == rim)).sum()) * voxel_ml,
            "fn_core_ml": float((~pred & (labels == core)).sum()) * voxel_ml,
        }
        rows.append(row)
        thick_txt = f"{'ijk'[row['thick_axis']]}, {row['thickness_mm']:.1f}" if thick else "-"
        ro = "-" if row["rim_oedema"] is None else f"{row['rim_oedema']:.2f}"
        print(f"| {index} | {row['dice']:.3f} | {row['dice_footprint']:.3f} | {row['contrast']} | "
              f"{'hyper' if row['hyper'] else 'hypo'} | {row['rim_margin']:.2f} | {ro} | {thick_txt} | "
              f"{row['ref_ml']:.1f} | {row['footprint_ml']:.1f} | {row['pred_ml']:.1f} | {row['fp_csf_ml']:.1f} | "
              f"{row['fp_gmwm_ml']:.1f} | {row['fp_oedema_ml']:.1f} | {row['fp_outside_ml']:.1f} | "
              f"{row['fn_rim_ml']:.1f} | {row['fn_core_ml']:.1f} |", flush=True)
    mean = float(np.mean([r["dice"] for r in rows]))
    print(f"mean Dice {mean:.3f} (vs footprint on thick-slice cases: "
          f"{float(np.mean([r['dice_footprint'] for r in rows])):.3f}); "
          f"FP mL: CSF {sum(r['fp_csf_ml'] for r in rows):.0f}, GM/WM {sum(r['fp_gmwm_ml'] for r in rows):.0f}, "
          f"oedema {sum(r['fp_oedema_ml'] for r in rows):.0f}, outside {sum(r['fp_outside_ml'] for r in rows):.0f}; "
          f"FN mL: rim {sum(r['fn_rim_ml'] for r in rows):.0f}, core {sum(r['fn_core_ml'] for r in rows):.0f}")
    if args.json:
        write_text_atomic(args.json, json.dumps(rows, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
