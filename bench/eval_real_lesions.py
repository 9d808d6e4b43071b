"""Lesion Dice on a real labelled scan of a model trained only on domain-randomised synthetic cases.

The model (``--model FILE``, or the cached/trained domain-randomised model of the chosen ``--config``; see
``imaging_pipelines.medical.synth``) never sees a voxel of the evaluation scan: it is trained on MNI152
anatomy with generated lesions only. The scan is read as is; the model resamples it to its own spacing
(the 2D brain-gated ``benchmark`` / ``small`` models: 2 mm in-plane, slices across the thickest axis kept;
``benchmark3d``: 3 mm) and writes labels back on the scan's grid. Brain-gated models keep lesion voxels only
inside the network's brain, narrowed to the MNI152 brain registered onto the scan when that registration
agrees with the network (``imaging_pipelines.medical.segment.atlas_brain``; the line "brain gate:" says
which was used). The classical baselines run on the scan
resampled to the model's ``spacing_mm`` (their masks resampled back by nearest neighbour). Dice / HD95 (mm) /
volumes (mL) are on the scan's grid (the label resampled onto it by nearest neighbour where the grids differ)
against ``label > 0`` (``--label-values 2,3``: only those values count as lesion, e.g. the tumour core without
oedema of BraTS-style labels). A multi-channel or 4D image (e.g. the four MR contrasts of a Medical Segmentation
Decathlon case) needs ``--channel K`` (0-based) to pick the contrast to segment; without it the script stops,
before any training, with an error naming the file and its channel count. With ``--held-out N`` the model and the
baselines are also scored on N held-out generated cases (a seed training never uses; the 2 mm cases of
``train.HELD_OUT_SYNTH``, the benchmark generator of runs 7-16 without lesion mimics, whatever the config, so
configs and runs are compared on the same cases). The model's softmax is
averaged over its input's mirrorings (``flip_tta``: 4 in-plane flips for the 2D models, 8 for the 3D one)
unless ``--no-flip-tta``; chosen on the held-out generated cases (10 cases of the shipped model: 0.535 ->
0.55), never on a real scan. Tumour is where the model's operating point puts it (the argmax, or
``SegmentationModel.lesion_threshold``: the shipped benchmark config 0.7, chosen on held-out generated cases
10-29); ``--lesion-threshold T|argmax`` overrides it, e.g. to score an older model file at 0.7.

    python bench/eval_real_lesions.py --image IMG --label LBL [--model FILE] [--config benchmark|small|benchmark3d]
        [--cache DIR] [--held-out N] [--device auto|cpu|cuda] [--no-flip-tta] [--json OUT]
        [--channel K] [--label-values V,V...] [--lesion-threshold T|argmax]

The last line printed is exactly ``dice=<value>`` (the model's Dice on the scan).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np


def _configs(name: str):
    from imaging_pipelines.medical.synth import train

    configs = {"benchmark": (train.BENCHMARK_SYNTH, train.BENCHMARK), "small": (train.BENCHMARK_SYNTH, train.SMALL),
               "benchmark3d": (train.BENCHMARK_3D_SYNTH, train.BENCHMARK_3D)}
    if name not in configs:
        raise SystemExit(f"--config must be one of {sorted(configs)}; got {name!r}")
    return configs[name]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", type=Path, required=True, help="the real scan (NIfTI, NRRD, MetaImage...)")
    parser.add_argument("--label", type=Path, required=True, help="its manual lesion label (lesion = value > 0)")
    parser.add_argument("--model", type=Path, help="a project segmentation model file (default: synthetic model)")
    parser.add_argument("--config", default="benchmark", help="synthetic model config: benchmark (2D, brain-gated), "
                        "small (the same, fewer iterations) or benchmark3d (3D patches at 3 mm, brain-gated)")
    parser.add_argument("--cache", type=Path, help="model cache folder (default ~/.cache/imaging_pipelines/...)")
    parser.add_argument("--held-out", type=int, default=0, help="also score N held-out generated cases")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--flip-tta", action=argparse.BooleanOptionalAction, default=True,
                        help="average the model's softmax over the in-plane mirrorings (default on; "
                             "--no-flip-tta: one pass)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON (atomically)")
    parser.add_argument("--channel", type=int, help="multi-channel / 4D image: the channel (0-based) to segment")
    parser.add_argument("--label-values", help="comma-separated label values that count as lesion "
                        "(default: every value > 0)")
    parser.add_argument("--lesion-threshold", help="the model's tumour operating point instead of the one it was "
                        "trained with: a probability in (0, 1) or 'argmax'")
    args = parser.parse_args(argv)

    from imaging_pipelines.core.errors import ImagingInputError
    from imaging_pipelines.core.storage import write_text_atomic
    from imaging_pipelines.medical.io.image_files import read_image_file
    from imaging_pipelines.medical.preprocess.resample import resample_like, resample_to_spacing
    from imaging_pipelines.medical.segment.baselines import BASELINES, run_baseline
    from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
    from imaging_pipelines.medical.segment.operating_point import parse_lesion_threshold
    from imaging_pipelines.medical.segment.unet import SegmentationModel, predict

    for path in (args.image, args.label):
        if not path.is_file():
            print(f"{path}: no such file", file=sys.stderr)
            return 2
    try:
        lesion_values = ([int(v) for v in args.label_values.split(",")] if args.label_values else None)
    except ValueError:
        print(f"--label-values {args.label_values!r}: give integers separated by commas", file=sys.stderr)
        return 2
    try:
        image, label = read_image_file(args.image), read_image_file(args.label)
    except ImagingInputError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if image.is_timeseries:
        channels = image.n_timepoints
        if args.channel is None or not 0 <= args.channel < channels:
            print(f"{args.image}: {channels} channels (a multi-channel or 4D image); choose the contrast to segment "
                  f"with --channel 0..{channels - 1}", file=sys.stderr)
            return 2
        image = image.timepoint(args.channel)
    if label.is_timeseries:
        print(f"{args.label}: a 4D label file; give one 3D label map", file=sys.stderr)
        return 2
    if not label.same_geometry(image):
        label = resample_like(label, image, interpolator="nearest")
    labels = np.asarray(label.array)
    lesion = np.isin(labels, lesion_values) if lesion_values else labels > 0
    reference = label.with_array(lesion.astype(np.uint8))
    if not lesion.any():
        print(f"{args.label}: no lesion voxel (values {lesion_values or '> 0'}; the file holds "
              f"{sorted(int(v) for v in np.unique(labels))[:20]})", file=sys.stderr)
        return 2
    try:  # None: keep the model's; (t,): t, None for the argmax
        threshold = None if args.lesion_threshold is None else (parse_lesion_threshold(args.lesion_threshold),)
    except ValueError as exc:
        print(f"--lesion-threshold: {exc}", file=sys.stderr)
        return 2
    figures: dict = {}
    synth, training = _configs(args.config)
    if args.model:
        model_file, report = args.model, {}
    else:
        from imaging_pipelines.medical.synth.model_cache import synthetic_model

        model_file, report, trained = synthetic_model(synth, training, cache=args.cache, device=args.device)
        print(f"synthetic model {model_file.name} ({'trained now' if trained else 'reused from cache'}): "
              f"{report['seconds_generating'] + report['seconds_training']:.0f} s "
              f"({report['seconds_generating']:.0f} s generating {report['cases_generated']} cases, "
              f"{report['seconds_training']:.0f} s training on {report['device']}, {report['iterations_done']} "
              f"iterations, stopped by {report['stopped_by']})")
        figures["training"] = {k: report[k] for k in ("seconds_generating", "seconds_training", "cases_generated",
                                                      "iterations_done", "stopped_by")}
    model = SegmentationModel.load(model_file)
    if threshold is not None:
        model.lesion_threshold = threshold[0]
    figures["lesion_threshold"] = model.lesion_threshold
    print(f"tumour operating point: {'argmax' if model.lesion_threshold is None else model.lesion_threshold}")
    print(f"scan: {image.spatial_shape} (z, y, x) at {tuple(round(s, 3) for s in image.spacing)} mm; "
          f"reference lesion {float(reference.array.sum()) * float(np.prod(reference.spacing)) / 1000:.1f} mL")

    t0 = time.perf_counter()
    masks = {"model": predict(model, image, device=args.device, flip_tta=args.flip_tta)}
    seconds = time.perf_counter() - t0
    if masks["model"].attributes.get("brain_prior"):
        print(f"brain gate: {masks['model'].attributes['brain_prior']}")
        figures["brain_prior"] = masks["model"].attributes["brain_prior"]
    if masks["model"].attributes.get("brain_warning"):
        print(f"warning: {masks['model'].attributes['brain_warning']}")
        figures["brain_warning"] = masks["model"].attributes["brain_warning"]
    work = resample_to_spacing(image, model.spacing_mm, interpolator="linear", antialias=True)
    for name in BASELINES:
        try:
            masks[f"baseline {name}"] = resample_like(run_baseline(name, work)[0], image, interpolator="nearest")
        except Exception as exc:  # noqa: BLE001 - a failing baseline is reported, not fatal
            print(f"baseline {name} failed: {type(exc).__name__}: {exc}")
    print(f"{'method':<28} {'Dice':>6} {'HD95 mm':>8} {'pred mL':>8} {'ref mL':>7}")
    for name, mask in masks.items():
        binary = mask.with_array((np.asarray(mask.array) == 1).astype(np.uint8))
        m = segmentation_metrics(binary, reference, labels=[1])[1]
        figures[name] = {k: float(m[k]) for k in ("dice", "hd95_mm", "volume_pred_ml", "volume_ref_ml")}
        print(f"{name:<28} {m['dice']:>6.3f} {m['hd95_mm']:>8.1f} {m['volume_pred_ml']:>8.1f} {m['volume_ref_ml']:>7.1f}")
    print(f"model inference: {seconds:.1f} s ({'with' if args.flip_tta else 'without'} flip TTA)")

    if args.held_out > 0:
        from imaging_pipelines.medical.synth.evaluate import score_generated
        from imaging_pipelines.medical.synth.generator import LesionGenerator
        from imaging_pipelines.medical.synth.train import HELD_OUT_SYNTH, held_out_generator

        held = held_out_generator(LesionGenerator(HELD_OUT_SYNTH, seed=0))  # the same cases for every config
        scores = score_generated(model, held, args.held_out, training.target_labels, device=args.device,
                                 flip_tta=args.flip_tta)
        figures["held_out"] = scores
        print(f"held-out generated cases (seed {held.seed}, n={args.held_out}): mean Dice")
        for name, s in scores.items():
            if name != "errors":
                print(f"  {name:<16} {s['mean']:.3f}  per case {[round(v, 3) for v in s['per_case']]}")
        best_baseline = max(s["mean"] for n, s in scores.items() if n not in ("model", "errors"))
        print(f"  model beats every baseline: {scores['model']['mean'] > best_baseline} "
              f"(best baseline {best_baseline:.3f}); goal Dice >= 0.90: {scores['model']['mean'] >= 0.90}")
        for err in scores["errors"]:
            print(f"  note: {err}")
    if args.json:
        write_text_atomic(args.json, json.dumps(figures, indent=2))
    print(f"dice={figures['model']['dice']:.4f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
