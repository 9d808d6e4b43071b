"""Throughput of the `segmentation` inference asset against a bare MONAI `sliding_window_inference` call.

Same process, same DynUNet (planned like nnU-Net for 1 mm spacing and a 96^3 patch, 16..128 filters; its
weights come from a few training iterations on the MNI152 brain mask so that the masks are not noise), same
patch size, overlap 0.5, Gaussian blending, sw_batch_size 2, on the MNI152 T1 at 1 mm (197x233x189 =
8.7 Mvoxels) from ../shared/data:

* bare: ``sliding_window_inference(x, (96, 96, 96), 2, net, overlap=0.5, mode="gaussian")`` on the
  z-scored volume already in memory (no I/O, no argmax);
* asset body: ``segment_partition`` (read the OME-Zarr input, inference, argmax, post-processing,
  per-label volumes and components, OME-Zarr labels + NIfTI mask written);
* asset via Dagster: the same materialised through the real definitions (run start to finish).

Prints seconds, Mvoxel/s and the throughput ratio asset / bare (goal >= 0.95), and the training time of
that model per iteration (batch 2 of 96^3 patches) and per 25-iteration epoch. Usage:

    python bench/bench_segmentation_inference.py [--repeats 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_stage_overhead import MASK, PARTITION, T1, materialise  # noqa: E402

PATCH = (96, 96, 96)
OVERLAP = 0.5
SW_BATCH = 2


def make_workspace(tmp: Path) -> None:
    """A catalog with one dataset segmenting its ingested scans with the current model, and its env vars."""
    (tmp / "catalog").mkdir()
    (tmp / "inbox").mkdir()
    (tmp / "catalog" / "bench.yaml").write_text(
        "id: bench\ndomain: medical\ninbox: ../inbox\nformats: [nifti]\npartitioning: patient\n"
        "segmentation:\n  method: dynunet\n  input: ingested\n  classes: {brain: 1}\n  labels: {source: inbox}\n"
        f"  inference: {{overlap: {OVERLAP}, sw_batch_size: {SW_BATCH}}}\n  dicom_seg: false\n")
    os.environ.update({"IMAGING_PIPELINES_DATA_ROOTS": str(tmp), "IMAGING_PIPELINES_CATALOG": str(tmp / "catalog"),
                       "IMAGING_PIPELINES_STORAGE_ROOT": str(tmp / "storage")})


TRAIN_ITERATIONS = 6


def train_model(image, mask):
    """A DynUNet for 1 mm / 96^3 trained a few iterations on the brain mask; returns (model, s per iteration)."""
    from imaging_pipelines.medical.segment.unet_train import train_segmentation

    model, report = train_segmentation([image], [mask], n_classes=2, patch_size=PATCH, epochs=1,
                                       iterations_per_epoch=TRAIN_ITERATIONS, batch_size=SW_BATCH, optimizer="adam",
                                       lr=1e-3, base_filters=16, n_pool_max=3, val_fraction=0.0, device="cpu")
    return model, report.seconds_per_epoch / TRAIN_ITERATIONS


def bare_inference(model, image) -> float:
    from monai.inferers import sliding_window_inference

    from imaging_pipelines.medical.segment.unet import normalize_intensity

    net = model.network.eval()
    x = torch.from_numpy(normalize_intensity(image.array, model.normalization))[None, None]
    start = time.perf_counter()
    with torch.no_grad():
        sliding_window_inference(x, PATCH, SW_BATCH, net, overlap=OVERLAP, mode="gaussian")
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="runs of each measurement (median reported)")
    parser.add_argument("--json", type=Path, help="also write the figures as JSON")
    args = parser.parse_args(argv)
    if not T1.is_file():
        print(f"MNI152 not found at {T1} (set IMAGING_SHARED_DATA)", file=sys.stderr)
        return 2
    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.medical.io.image_files import read_nifti
    from imaging_pipelines.medical.io.ome_zarr import write_volume_store
    from imaging_pipelines.core.storage import partition_store_path, storage_root
    from imaging_pipelines.models import store as model_store
    from imaging_pipelines.medical.stages.segmentation import segment_partition
    from imaging_pipelines.medical.stages.segmentation_data import SEGMENTATION_MODEL

    torch.manual_seed(0)
    image = read_nifti(T1)
    mask = read_nifti(MASK)
    mask = mask.with_array((mask.array > 0).astype(np.uint8))
    voxels = int(np.prod(image.spatial_shape))
    with tempfile.TemporaryDirectory(prefix="bench_segmentation_") as tmp:
        make_workspace(Path(tmp))
        (dataset,) = load_catalog()
        root = storage_root()
        t1 = replace(image.with_array(image.array.astype(np.float32)), attributes={"modality": "MR"})
        write_volume_store(partition_store_path(root, "bench", "ingested_scans", PARTITION), {"t1": t1})
        model, s_per_iteration = train_model(image, mask)
        folder = model_store.model_folder(root, "bench", SEGMENTATION_MODEL)
        model_store.publish_model(folder, "dynunet-bench.pt", model.save)
        model_store.write_pointer(folder, {"version": "bench", "file": "dynunet-bench.pt"})
        bare_inference(model, image)  # warm-up
        materialise("segmentation")
        bare, body, dagster = [], [], []
        for _ in range(args.repeats):
            bare.append(bare_inference(model, image))
            start = time.perf_counter()
            segment_partition(dataset, PARTITION, root, device="cpu")
            body.append(time.perf_counter() - start)
            dagster.append(materialise("segmentation"))
    figures = {"bare_s": statistics.median(bare), "asset_body_s": statistics.median(body),
               "asset_dagster_s": statistics.median(dagster), "seconds_per_iteration": s_per_iteration,
               "voxels": voxels, "plan_filters": model.plan.filters}
    print(f"MNI152 T1 {image.spatial_shape} (z, y, x) = {voxels / 1e6:.1f} Mvox; DynUNet filters "
          f"{model.plan.filters}, patch {PATCH}, overlap {OVERLAP}; median of {args.repeats}; goal ratio >= 0.95")
    print(f"{'':<32} {'s':>7} {'Mvox/s':>8} {'ratio':>7}")
    for label, key in (("bare sliding_window_inference", "bare_s"), ("asset body (segment_partition)", "asset_body_s"),
                       ("asset through Dagster", "asset_dagster_s")):
        ratio = figures["bare_s"] / figures[key]
        figures[key.replace("_s", "_ratio")] = ratio
        verdict = "" if key == "bare_s" else ("PASS" if ratio >= 0.95 else "FAIL")
        print(f"{label:<32} {figures[key]:>7.2f} {voxels / figures[key] / 1e6:>8.2f} {ratio:>7.3f}  {verdict}")
    print(f"training: {s_per_iteration:.1f} s per iteration (batch {SW_BATCH}, patch {PATCH}), "
          f"{25 * s_per_iteration:.0f} s per 25-iteration epoch on this machine's {torch.get_num_threads()} thread(s)")
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
