"""Lesion Dice of the demo's segmentation model and of the classical baselines on a real brain MR with a manual
tumour label (``../shared/data/medical/brain_tumour_mr/brain1_*.nrrd``, 256x256x25, 0.78x0.78x6.5 mm).

The model is the one `make demo` trained on synthetic phantoms (``var/storage/demo_cohort/segmentation_model``,
or ``--model FILE``); it has never seen real anatomy, so this measures the domain gap, not a tuned result.
The image goes through the demo's preprocessing recipe (N4, LPS, 3 mm, z-score, denoising) exactly as the
pipeline does; masks are resampled (nearest neighbour) back onto the label's grid and scored there with the
pipeline's post-processing applied to the model output. Usage:

    python bench/eval_brain_tumour.py [--model FILE] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
CASE = SHARED / "medical" / "brain_tumour_mr"


def current_demo_model() -> Path | None:
    from imaging_pipelines.core.storage import storage_root
    from imaging_pipelines.models import store as model_store
    from imaging_pipelines.medical.stages.segmentation_data import SEGMENTATION_MODEL

    folder = model_store.model_folder(storage_root(), "demo_cohort", SEGMENTATION_MODEL)
    try:
        return Path(str(folder / model_store.read_pointer(folder, "segmentation model")["file"]))
    except FileNotFoundError:
        return None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="a segmentation model file (default: the demo's current model)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    from imaging_pipelines.medical.io.image_files import read_image_file
    from imaging_pipelines.config.recipes import recipe_by_name
    from imaging_pipelines.medical.preprocess.recipe import apply_recipe
    from imaging_pipelines.medical.preprocess.resample import resample_like
    from imaging_pipelines.medical.segment.baselines import BASELINES, run_baseline
    from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
    from imaging_pipelines.medical.segment.postprocess import postprocess_labels
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict

    model_file = args.model or current_demo_model()
    if model_file is None or not model_file.is_file():
        print("no segmentation model: run `make demo` first (or pass --model FILE)", file=sys.stderr)
        return 2
    image = read_image_file(CASE / "brain1_image.nrrd")
    label = read_image_file(CASE / "brain1_label.nrrd")
    reference = label.with_array((label.array > 0).astype(np.uint8))
    prepared = apply_recipe(image, recipe_by_name("demo_mr")).volume
    model = SegmentationModel.load(model_file)
    lesion = int(model.label_values[1])
    masks = {}
    raw = predict(model, prepared, device="auto")
    cleaned, _ = postprocess_labels(raw, min_component_ml=0.1)
    masks[f"model ({model_file.name})"] = cleaned.with_array((cleaned.array == lesion).astype(np.uint8))
    for name in BASELINES:
        masks[f"baseline {name}"], _ = run_baseline(name, prepared)
    figures = {}
    ref_ml = float(reference.array.sum()) * float(np.prod(reference.spacing)) / 1000.0
    print(f"brain1: {image.spatial_shape} (z, y, x) at {tuple(round(s, 3) for s in image.spacing)} mm; "
          f"tumour {ref_ml:.1f} mL; preprocessed with demo_mr to {prepared.spatial_shape} at 3 mm")
    print(f"{'method':<44} {'Dice':>6} {'HD95 mm':>8} {'pred mL':>8}")
    for name, mask in masks.items():
        on_label_grid = resample_like(mask, reference, interpolator="nearest")
        m = segmentation_metrics(on_label_grid, reference, labels=[1])[1]
        figures[name] = {k: m[k] for k in ("dice", "hd95_mm", "volume_pred_ml", "volume_ref_ml")}
        print(f"{name:<44} {m['dice']:>6.3f} {m['hd95_mm']:>8.1f} {m['volume_pred_ml']:>8.1f}")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
