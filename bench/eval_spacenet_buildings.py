"""Building IoU of the raster 2D U-Net vs an Otsu-brightness baseline on a real SpaceNet Atlanta chip.

Data: ``../shared/data/remote_sensing/spacenet_atlanta/sample_geotiff.tif`` (900x900 px, 1 band uint16,
0.5 m, EPSG:32616, nodata 0) and ``geotiff_labels.geojson`` (43 building footprints) burned onto the image
grid with :func:`imaging_pipelines.remote_sensing.labels.rasterize_labels` (pixel centre inside polygon).

Split by columns (no pixel is both trained on and scored): the left 70% (cols 0..629) is the training
side and the right 30% (cols 630..899) the held-out test region. By default (``--train-on all``, since
2026-12-06, chosen by ``--cv``) the whole training side is trained on for a fixed number of epochs; with
``--train-on split`` cols 0..539 are cut into three 300-row training tiles and cols 540..629 are the
validation strip (best-validation weights and clean-up chosen there). The
single band is clipped to the training side's 0.5..99.5 percentiles (bright outliers) before the U-Net's
own z-score. Baseline: :func:`imaging_pipelines.remote_sensing.baseline.otsu_baseline` with the brightness band
(Otsu threshold computed on the test region itself, brighter = building); the inverted rule (darker =
building) is printed too for reference. Prints building IoU, areas (ha) and polygon counts on the test region.
CPU only, one torch thread by default (seeded: the same figures on every run with the same ``--threads``);
the default, an ensemble of 5 U-Nets on 128 px patches, 40 epochs each, on the whole training side (the
setting the 3-fold CV with 3 U-Nets per fold picked; bench/README.md), takes about 9-12 min of one core:

    .venv/bin/python bench/eval_spacenet_buildings.py [--epochs 40] [--iterations 25] [--patch 128] [--lr 1e-3]
        [--loss dice_ce|dice_focal|focal] [--class-weights inverse_frequency|none] [--schedule constant|cosine]
        [--foreground 0.5] [--scale-aug 0] [--intensity-aug 0] [--average-last 0] [--ensemble 5] [--edges]
        [--base-filters 16] [--depth 3]
        [--loss dice_ce_lovasz|lovasz] [--train-on all|split] [--clean-up 0.35/256/fill] [--cv K --snapshots E..]

``--cv K`` scores the settings by K-fold column cross-validation of the training side only (cols 0..629 cut
into K strips, each predicted by U-Nets trained on the other strips for a fixed number of epochs, scored at
each ``--snapshots`` epoch; :mod:`imaging_pipelines.remote_sensing.cross_validation`) and prints the pooled
out-of-fold building IoU and the clean-up best on the out-of-fold softmax; it never reads the test region.
``--train-on all`` trains on the whole training side (cols 0..629, no validation strip: the weights after
``--epochs``) with the clean-up ``--clean-up P/M[/fill]`` chosen by ``--cv``.

It also prints pixel accuracy and mean IoU (background and building) of the U-Net (without and with test-time
flips, ``unet+tta``; each also with the clean-up best on the validation strip, ``unet@p/m[/fill]``: building
probability >= p, holes filled or not, components under m px dropped), the Otsu baseline and the majority-class
predictor (the class most frequent on the training side: background) on the test region. ``--ensemble K``
trains K U-Nets (seeds seed..seed+K-1, ``RasterTrainingConfig.ensemble``) and scores their averaged softmax;
it also prints each member's own validation and held-out IoU. ``--edges`` adds the Sobel gradient magnitude of
the clipped band as a second input channel.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
CHIP = SHARED / "remote_sensing" / "spacenet_atlanta"
MIN_PIXELS = [0, 16, 32, 64, 128, 256]  # minimum building sizes tried on validation (px of 0.25 m^2)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--epochs", type=int, default=40)
    ap.add_argument("--iterations", type=int, default=25)
    ap.add_argument("--patch", type=int, default=128)
    ap.add_argument("--base-filters", type=int, default=16)
    ap.add_argument("--depth", type=int, default=3, help="U-Net down-sampling steps (patch: a multiple of 2**depth)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--loss", choices=["dice_ce", "dice_focal", "focal", "lovasz", "dice_ce_lovasz"],
                    default="dice_ce")
    ap.add_argument("--focal-gamma", type=float, default=2.0)
    ap.add_argument("--class-weights", choices=["inverse_frequency", "none"], default="inverse_frequency")
    ap.add_argument("--average-last", type=int, default=0, help="average the weights of the last N epochs")
    ap.add_argument("--schedule", choices=["constant", "cosine"], default="constant")
    ap.add_argument("--foreground", type=float, default=0.5, help="share of patches centred near a building")
    ap.add_argument("--scale-aug", type=float, default=0.0, help="random zoom exp(U(-s, s)); 0 = off")
    ap.add_argument("--intensity-aug", type=float, default=0.0, help="gamma/contrast/brightness jitter; 0 = off")
    ap.add_argument("--ensemble", type=int, default=5, help="K U-Nets (seeds seed..seed+K-1), softmax averaged")
    ap.add_argument("--edges", action="store_true", help="second input channel: Sobel gradient magnitude")
    ap.add_argument("--cv", type=int, default=0, metavar="K",
                    help="K-fold column cross-validation of the training side only (cols 0..629); no test figures")
    ap.add_argument("--snapshots", default="", help="--cv: comma-separated epochs scored (default: every 8 and "
                                                    "--epochs)")
    ap.add_argument("--train-on", choices=["split", "all"], default="all",
                    help="split: cols 0..539, best weights on the validation strip 540..629; all: cols 0..629, "
                         "the weights after --epochs, clean-up --clean-up (chosen by --cv)")
    ap.add_argument("--clean-up", default="0.35/256/fill", help="--train-on all: threshold/min px[/fill] of unet@")
    args = ap.parse_args()

    import torch

    from imaging_pipelines.remote_sensing.baseline import otsu_baseline
    from imaging_pipelines.remote_sensing.evaluation import PooledScores
    from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
    from imaging_pipelines.remote_sensing.io import read_raster
    from imaging_pipelines.remote_sensing.labels import rasterize_labels
    from imaging_pipelines.core.raster import Raster
    from imaging_pipelines.remote_sensing.postprocess import choose_clean_up, clean_class_map
    from imaging_pipelines.remote_sensing.unet2d import predict_unet2d, train_unet2d
    from imaging_pipelines.remote_sensing.vectorize import class_areas_ha, class_iou, class_polygons

    torch.set_num_threads(args.threads)
    image_path, labels_path = CHIP / "sample_geotiff.tif", CHIP / "geotiff_labels.geojson"
    if not image_path.exists():
        print(f"missing {image_path} (set IMAGING_SHARED_DATA)")
        return 2
    scene = read_raster(image_path)
    truth = rasterize_labels(labels_path, scene, burn_value=1)
    band = scene.array[0].astype(np.float32)
    band[~scene.valid_mask()] = np.nan
    classes = {"building": 1}
    h, w = band.shape
    split, val_start = int(round(0.7 * w)), int(round(0.6 * w))
    lo, hi = np.nanpercentile(band[:, :split], [0.5, 99.5])
    x = np.clip(band, lo, hi)[None]
    if args.edges:  # Sobel gradient magnitude of the clipped band (image only, local: no label information)
        from scipy import ndimage

        filled = np.nan_to_num(x[0], nan=float(lo))
        edges = np.hypot(ndimage.sobel(filled, 0), ndimage.sobel(filled, 1)).astype(np.float32)
        x = np.stack([x[0], np.where(np.isfinite(x[0]), edges, np.nan)])

    rows = np.linspace(0, h, 4).astype(int)
    train_images = [x[:, r0:r1, :val_start] for r0, r1 in zip(rows[:-1], rows[1:])]
    train_labels = [truth[r0:r1, :val_start] for r0, r1 in zip(rows[:-1], rows[1:])]
    validation = ([x[:, :, val_start:split]], [truth[:, val_start:split]])
    test_x, test_truth = x[:, :, split:], truth[:, split:]
    print(f"{image_path.name}: {h}x{w} px, {scene.resolution[0]} m, building share "
          f"{truth.mean():.3f}; " + (f"train cols 0..{split - 1} (no validation strip), " if args.train_on == "all"
                                      else f"train cols 0..{val_start - 1} (3 tiles), validation cols "
                                           f"{val_start}..{split - 1}, ") + f"test cols {split}..{w - 1} (building share {test_truth.mean():.3f})")

    cfg = RasterTrainingConfig(patch_size=args.patch, epochs=args.epochs, iterations_per_epoch=args.iterations,
                               batch_size=args.batch, learning_rate=args.lr, base_filters=args.base_filters,
                               depth=args.depth,
                               seed=args.seed, loss=args.loss, focal_gamma=args.focal_gamma,
                               class_weights=args.class_weights, schedule=args.schedule,
                               foreground_fraction=args.foreground, scale_augmentation=args.scale_aug,
                               intensity_augmentation=args.intensity_aug,
                               average_last_epochs=args.average_last, ensemble=args.ensemble)
    if args.cv:
        return cross_validation_report(args, x[:, :, :split], truth[:, :split], classes, cfg)
    if args.train_on == "all":  # the whole training side, weights after --epochs, clean-up chosen by --cv
        train_images, train_labels, validation = [x[:, :, :split]], [truth[:, :split]], None
    t0 = time.perf_counter()
    outcome = train_unet2d(train_images, train_labels, classes, cfg, validation=validation,
                           log=lambda m: print("  " + m, flush=True))
    train_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    pred, prob = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, test_x, args.patch, 0.25,
                                return_probabilities=True)
    predict_s = time.perf_counter() - t0
    valid = np.isfinite(test_x).all(axis=0)
    # the same model with the softmax averaged over the 4 flips, and each with the building-probability
    # threshold that maximises the IoU on the validation strip (never on the test region)
    pred_tta, prob_tta = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, test_x, args.patch,
                                        0.25, return_probabilities=True, tta=True)
    cleanups = {}
    for name, tta in (("unet", False), ("unet+tta", True)):
        if validation is None:
            th, min_px, *fill = args.clean_up.split("/")
            cleanups[name] = (float(th), int(min_px), fill == ["fill"], float("nan"))
            continue
        _, val_prob = predict_unet2d(outcome.model, outcome.normalisation, outcome.class_values, validation[0][0],
                                     args.patch, 0.25, return_probabilities=True, tta=tta)
        val_valid = np.isfinite(validation[0][0]).all(axis=0)
        grid = [round(float(v), 2) for v in np.arange(0.1, 0.91, 0.05)]
        cleanups[name] = choose_clean_up(val_prob[1], validation[1][0], val_valid, grid, MIN_PIXELS)
    tuned = {}
    for name, p in (("unet", prob), ("unet+tta", prob_tta)):
        th, min_px, fill, _ = cleanups[name]
        tuned[f"{name}@{th:.2f}/{min_px}{'/fill' if fill else ''}"] = clean_class_map(
            ((p[1] >= th) & valid).astype(np.uint8), min_px, fill, valid)

    test_grid = scene.window(0, split, h, w - split)
    composite = Raster(band[None, :, split:], scene.crs, test_grid.transform, band_names=["brightness"])
    base = otsu_baseline(composite, classes, {"building": "brightness"})
    dark = np.where(valid & (base == 0), 1, 0).astype(np.uint8)

    iou_unet = class_iou(pred, test_truth, classes, valid)["building"]
    iou_base = class_iou(base, test_truth, classes, valid)["building"]
    iou_dark = class_iou(dark, test_truth, classes, valid)["building"]
    t = test_grid.transform
    area = {k: class_areas_ha(m, t, scene.crs, classes)["building"] for k, m in
            (("truth", test_truth), ("unet", pred), ("otsu", base))}
    n_poly = {k: len(class_polygons(m, t, scene.crs, classes)["features"]) for k, m in
              (("truth", test_truth), ("unet", pred), ("otsu", base))}
    print(f"training {train_s:.1f} s ({cfg.ensemble} x {cfg.epochs} epochs x {cfg.iterations_per_epoch} it x batch "
          f"{cfg.batch_size}, patch {cfg.patch_size}, {args.threads} threads, on {args.train_on}); best validation "
          f"IoU {val_text(outcome)}; test prediction {predict_s:.2f} s")
    print(f"building IoU on the held-out right 30%:  U-Net {iou_unet:.3f}   Otsu brightness (brighter) "
          f"{iou_base:.3f}   (inverted, darker: {iou_dark:.3f})")
    for k, member in enumerate(outcome.members):  # an ensemble: each member alone, plain prediction
        alone = predict_unet2d(member.model, member.normalisation, member.class_values, test_x, args.patch, 0.25)
        print(f"ensemble member {k + 1} (seed {cfg.seed + k}) alone: best validation IoU "
              f"{val_text(member)}, held-out building IoU "
              f"{class_iou(alone, test_truth, classes, valid)['building']:.3f}")
    scores = PooledScores(classes)
    train_ref = np.concatenate([lab.ravel() for lab in train_labels])
    scores.add("train", "reference", train_ref, train_ref)  # the majority class comes from the training side
    methods = {"unet": pred, "unet+tta": pred_tta, **tuned, "otsu": base}
    for method, mask in methods.items():
        scores.add("test", method, mask, test_truth, valid)
    majority = scores.majority("test")
    print("(unet@p/m[/fill]: building where its probability >= p, holes filled if /fill, components under m px "
          "dropped; p, m and filling chosen together on the validation strip, or by --cv: --clean-up)")
    for name, (th, min_px, fill, val_iou) in cleanups.items():
        print(f"{'--clean-up' if validation is None else 'validation clean-up'} {name}: threshold {th:.2f}, min "
              f"{min_px} px, fill holes {fill}" + ("" if validation is None else
                                                   f": validation building IoU {val_iou:.3f}"))
    for method in methods:
        r = scores.scores("test", method)
        print(f"held-out {method:22s} accuracy {r['accuracy']:.4f}  mean IoU {r['mean_iou']:.4f}  "
              f"(background {r['iou']['background']:.4f}, building {r['iou']['building']:.4f})")
    print(f"held-out majority class ({majority['class']}) accuracy {majority['accuracy']:.4f}  mean IoU "
          f"{majority['mean_iou']:.4f}  (background {majority['iou']['background']:.4f}, building "
          f"{majority['iou']['building']:.4f})")
    print(f"building area (ha): truth {area['truth']:.3f}  U-Net {area['unet']:.3f}  Otsu {area['otsu']:.3f};"
          f"  polygons: truth {n_poly['truth']}  U-Net {n_poly['unet']}  Otsu {n_poly['otsu']}")
    return 0


def val_text(outcome) -> str:
    """The building IoU of the kept weights on the validation strip, or 'none' (trained without one)."""
    return "none" if outcome.validation_iou is None else f"{outcome.validation_iou['building']:.3f}"


def cross_validation_report(args, image, truth, classes, cfg) -> int:
    """``--cv K``: out-of-fold building IoU of the training side (``image`` ``(c, y, x)``, ``truth`` ``(y, x)``,
    the test region never touched) at each snapshot epoch: pooled over the folds (intersections and unions
    summed) and per fold, then the clean-up best on the out-of-fold softmax of each snapshot."""
    from imaging_pipelines.remote_sensing.cross_validation import column_folds, cross_validate_columns
    from imaging_pipelines.remote_sensing.postprocess import choose_clean_up

    snapshots = ([int(e) for e in args.snapshots.split(",")] if args.snapshots else
                 sorted({*range(8, cfg.epochs + 1, 8), cfg.epochs}))
    valid = np.isfinite(image).all(axis=0)
    ref = (truth > 0) & valid

    def fold_done(f, cols, oof):  # each fold's IoU as soon as it is final (a run cut short keeps these)
        a, b = cols
        ious = []
        for epoch, prob in oof.items():
            pred, r = (prob[:, :, a:b].argmax(0) == 1) & valid[:, a:b], ref[:, a:b]
            ious.append(f"{epoch} {int((pred & r).sum()) / max(int((pred | r).sum()), 1):.3f}")
        print(f"CV fold {f + 1} (cols {a}..{b - 1}) done after {time.perf_counter() - t0:.1f} s: building IoU at "
              f"epoch {', '.join(ious)}", flush=True)

    t0 = time.perf_counter()
    oof = cross_validate_columns(image, truth, classes, cfg, args.cv, snapshots,
                                 log=lambda m: print("  " + m, flush=True), fold_end=fold_done)
    train_s = time.perf_counter() - t0
    folds = column_folds(image.shape[2], args.cv)
    print(f"cross-validation: {args.cv} column folds of cols 0..{image.shape[2] - 1} "
          f"({', '.join(f'{a}..{b - 1}' for a, b in folds)}), {cfg.ensemble} U-Net(s) per fold, "
          f"{train_s:.1f} s in all ({args.threads} threads)")
    grid = [round(float(v), 2) for v in np.arange(0.1, 0.91, 0.05)]
    for epoch, prob in oof.items():
        pred = (prob.argmax(0) == 1) & valid
        per_fold = []
        for a, b in folds:
            union = int((pred[:, a:b] | ref[:, a:b]).sum())
            per_fold.append(int((pred[:, a:b] & ref[:, a:b]).sum()) / union if union else 1.0)
        pooled = int((pred & ref).sum()) / int((pred | ref).sum())
        th, min_px, fill, clean_iou = choose_clean_up(prob[1], ref, valid, grid, MIN_PIXELS)
        print(f"CV epoch {epoch}: building IoU pooled {pooled:.3f} (folds "
              f"{' '.join(f'{v:.3f}' for v in per_fold)}; mean {np.mean(per_fold):.3f}); best clean-up "
              f"{th:.2f}/{min_px}{'/fill' if fill else ''}: {clean_iou:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
