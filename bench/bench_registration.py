#!/usr/bin/env python
"""Benchmark deformable registration on the MNI152 T1 with known random deformations.

Each pair: FIXED = the MNI152 T1 (downsampled, default 2 mm) and MOVING = the same image deformed by a
known smooth random displacement (max ``--max-mm`` mm, one seed per pair). Every method registers moving
to fixed; the deformed brain mask is warped back onto the fixed grid (nearest neighbour) and compared to
the template mask (Dice). Prints Dice before/after, folding fraction, NCC after and runtime per pair.

Methods: bspline, demons (SimpleITK), elastix (when itk-elastix is installed) and learned (when
``imaging_pipelines.medical.register.learned`` provides ``train_voxelmorph``/``register_learned``; the network is
trained on the moving images of the benchmark itself, so it measures fitting, not generalisation; its
training time is printed separately).

Usage::

    .venv/bin/python bench/bench_registration.py [--spacing 2] [--pairs 3] [--methods bspline demons elastix learned]
                                                  [--learned-epochs 20] [--learned-pairs 8] [--json OUT]
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from imaging_pipelines.medical.io.image_files import read_image_file  # noqa: E402
from imaging_pipelines.medical.register import api, warp  # noqa: E402
from imaging_pipelines.medical.register.metrics import dice  # noqa: E402
from imaging_pipelines.medical.register.synthetic import downsample_isotropic, smooth_random_field  # noqa: E402
from imaging_pipelines.core.volume import Volume  # noqa: E402

MNI_T1 = "medical/mni152/mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
MNI_MASK = "medical/mni152/mni152_brain_mask_t1gt0.2.nii.gz"


def make_pairs(data_root: Path, spacing_mm: float, n_pairs: int, max_mm: float, control_mm: float,
               first_seed: int = 0):
    t1 = downsample_isotropic(read_image_file(data_root / MNI_T1), spacing_mm)
    mask = downsample_isotropic(read_image_file(data_root / MNI_MASK).with_array(
        (read_image_file(data_root / MNI_MASK).array > 0).astype(np.float32)), spacing_mm)
    mask_bool = mask.array > 0.5
    pairs = []
    for seed in range(first_seed, first_seed + n_pairs):
        transform = warp.displacement_field_transform(
            smooth_random_field(t1, max_mm=max_mm, control_mm=control_mm, seed=seed), t1)
        moving = warp.resample(t1, t1, transform)
        moving_mask = mask.with_array((warp.resample(mask, t1, transform).array > 0.5).astype(np.uint8))
        pairs.append({"seed": seed, "moving": moving, "moving_mask": moving_mask})
    return t1, mask_bool, pairs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data")))
    parser.add_argument("--spacing", type=float, default=2.0, help="isotropic spacing of the benchmark images, mm")
    parser.add_argument("--pairs", type=int, default=3)
    parser.add_argument("--max-mm", type=float, default=6.0, help="largest true displacement, mm")
    parser.add_argument("--control-mm", type=float, default=30.0, help="spacing of the random control grid, mm")
    parser.add_argument("--methods", nargs="+", default=["bspline", "demons", "elastix", "learned"])
    parser.add_argument("--learned-epochs", type=int, default=20)
    parser.add_argument("--learned-pairs", type=int, default=8, help="training deformations for the learned model")
    parser.add_argument("--json", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    if not (args.data / MNI_T1).is_file():
        print(f"MNI152 T1 not found under {args.data} (set IMAGING_SHARED_DATA)", file=sys.stderr)
        return 2

    fixed, fixed_mask, pairs = make_pairs(args.data, args.spacing, args.pairs, args.max_mm, args.control_mm)
    rows, notes = [], []
    for method in args.methods:
        register = None
        if method == "learned":
            try:
                learned = importlib.import_module("imaging_pipelines.medical.register.learned")
                started = time.perf_counter()
                # trained on other deformations than the evaluated pairs (seeds 1000+), masks as weak supervision
                _, _, training = make_pairs(args.data, args.spacing, args.learned_pairs, args.max_mm, args.control_mm,
                                            first_seed=1000)
                model = learned.train_voxelmorph(
                    [p["moving"] for p in training], fixed, epochs=args.learned_epochs, lr=3e-3, lambda_reg=0.1,
                    moving_masks=[p["moving_mask"] for p in training],
                    fixed_mask=fixed.with_array(fixed_mask.astype(np.uint8)), dice_weight=1.0,
                    network={"channels": (8, 16, 16, 16, 16, 16), "final_conv_channels": (8, 8)})
                notes.append(f"learned: trained {args.learned_epochs} epochs on {len(training)} other deformations "
                             f"in {time.perf_counter() - started:.1f} s (not counted in its runtime per pair)")
                register = lambda f, m, model=model: learned.register_learned(f, m, model)  # noqa: E731
            except Exception as exc:  # absent module or API: skip, say why
                notes.append(f"learned: skipped ({type(exc).__name__}: {exc})")
                continue
        elif method == "elastix":
            from imaging_pipelines.medical.register.elastix import available

            if not available():
                notes.append("elastix: skipped (itk-elastix not installed)")
                continue
        for pair in pairs:
            result = register(fixed, pair["moving"]) if register else api.register(fixed, pair["moving"], method)
            warped_mask = warp.warp_labels(pair["moving_mask"], fixed, result).array
            rows.append({
                "method": method, "pair": pair["seed"],
                "dice_before": dice(pair["moving_mask"].array, fixed_mask),
                "dice_after": dice(warped_mask, fixed_mask),
                "folding_fraction": result.metrics["folding_fraction"],
                "jacobian_min": result.metrics["jacobian_min"],
                "ncc_before": result.metrics["ncc_before"], "ncc_after": result.metrics["ncc_after"],
                "runtime_s": result.metrics["runtime_s"],
            })
            r = rows[-1]
            print(f"{method:8s} pair {r['pair']}  dice {r['dice_before']:.4f} -> {r['dice_after']:.4f}  "
                  f"folding {r['folding_fraction']:.2e}  jac_min {r['jacobian_min']:.3f}  "
                  f"ncc {r['ncc_before']:.4f} -> {r['ncc_after']:.4f}  {r['runtime_s']:.1f} s", flush=True)

    print(f"\nMNI152 T1 at {args.spacing:g} mm {fixed.spatial_shape}, {args.pairs} random deformations "
          f"(max {args.max_mm:g} mm, control grid {args.control_mm:g} mm)\n")
    print(f"{'method':8s} {'dice before':>11s} {'dice after':>10s} {'folding':>9s} {'ncc after':>9s} {'runtime s':>9s}")
    for method in dict.fromkeys(r["method"] for r in rows):
        sel = [r for r in rows if r["method"] == method]
        mean = {k: float(np.mean([r[k] for r in sel])) for k in ("dice_before", "dice_after", "folding_fraction", "ncc_after", "runtime_s")}
        print(f"{method:8s} {mean['dice_before']:11.4f} {mean['dice_after']:10.4f} {mean['folding_fraction']:9.2e} "
              f"{mean['ncc_after']:9.4f} {mean['runtime_s']:9.1f}")
    for note in notes:
        print(note)
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "notes": notes, "spacing_mm": args.spacing}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
