"""Throughput of the per-patient `segmentation` path with imported models against the bare tools.

Same process, same volume, same model files, CPU unless ``--device cuda``:

* nnU-Net: a small nnU-Net v2 results folder planned by nnU-Net on phantoms of the bench volume's size
  (``imaging_pipelines.tools.demo.imported_models``; weights are the seeded initialisation, which does not
  change the work done). Bare: ``nnUNetPredictor`` as a user runs it for one case, in process:
  ``initialize_from_trained_model_folder`` + ``predict_from_files_sequential`` on the NIfTI file (reads it,
  preprocesses, predicts, resamples, writes the mask). Per-patient path: ``segment_partition`` of a catalog
  dataset with ``method: imported`` (reads the ingested OME-Zarr, loads the model, the same prediction,
  per-label volumes and components, OME-Zarr labels + NIfTI mask written). The model is loaded once per
  process and reused by later calls while its files are unchanged (``open_model``'s cache), as when one
  process segments partition after partition; ``--cold`` clears that cache before every per-patient call,
  so each call loads the model like the bare side does (one partition per process, Dagster's default
  multiprocess executor).
* MONAI bundle: a small UNet bundle (a few Adam steps on a phantom so that its masks are regions; a
  spleen-bundle-style inference.json: LoadImaged, Orientationd, Spacingd, ScaleIntensityd,
  SlidingWindowInferer, Invertd, SaveImaged). Bare: ``monai.bundle.run`` (what
  ``python -m monai.bundle run`` calls) on the NIfTI file. Per-patient path: ``segment_partition`` with the
  bundle imported; with the cache kept, later calls reuse the bundle's parsed workflow and network
  (``bundle_workflow.KeptWorkflow``), with ``--cold`` every call is a first call: the config parsed, the
  network built and ``model.pt`` loaded, as in ``monai.bundle.run``.

Prints seconds (median of ``--repeats``), the throughput ratio per-patient / bare (goal >= 0.95 for both)
and the load average before and after (the machine may be shared). It also prints the CPU seconds of the
process (user + system, all threads) for both and their ratio: on a machine other jobs load, wall time
follows the load while CPU time follows the work done. Usage:

    python bench/bench_imported_models.py [--repeats 3] [--device cpu] [--mirroring] [--cold] [--models nnunet,bundle] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SHAPE, SPACING = (96, 112, 96), (1.5, 1.5, 1.5)  # bench volume: (z, y, x) voxels, (x, y, z) mm
PARTITION = "p0"
BUNDLE_TRAIN_STEPS = 30  # a random UNet's speckle has ~1e5 components, more than the connected-component step takes


def workspace(tmp: Path, ds: str, model_yaml: str) -> None:
    (tmp / "catalog").mkdir(exist_ok=True)
    (tmp / "inbox").mkdir(exist_ok=True)
    (tmp / "catalog" / f"{ds}.yaml").write_text(
        f"id: {ds}\ndomain: medical\ninbox: ../inbox\nformats: [nifti]\npartitioning: patient\n"
        f"segmentation:\n  method: imported\n  model: {model_yaml}\n  classes: {{lesion: 1, tissue: 2}}\n"
        "  dicom_seg: false\n")
    os.environ.update({"IMAGING_PIPELINES_DATA_ROOTS": str(tmp), "IMAGING_PIPELINES_CATALOG": str(tmp / "catalog"),
                       "IMAGING_PIPELINES_STORAGE_ROOT": str(tmp / "storage")})


def timed(fn) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process: user + system over all its threads)."""
    start, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - start, time.process_time() - cpu


def bare_nnunet(folder: Path, image_file: Path, out: Path, device: str, mirroring: bool) -> None:
    import torch
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=mirroring,
                                perform_everything_on_device=device == "cuda", device=torch.device(device),
                                verbose=False, allow_tqdm=False)
    predictor.initialize_from_trained_model_folder(str(folder), use_folds=(0,), checkpoint_name="checkpoint_final.pth")
    out.mkdir(parents=True, exist_ok=True)
    predictor.predict_from_files_sequential([[str(image_file)]], [str(out / "bare")], save_probabilities=False)


def bare_bundle(folder: Path, data: Path, out: Path, device: str) -> None:
    from monai.bundle import run

    run(config_file=str(folder / "configs" / "inference.json"), meta_file=str(folder / "configs" / "metadata.json"),
        bundle_root=str(folder), dataset_dir=str(data), output_dir=str(out), device=f"$torch.device('{device}')")


def measure(name: str, bare, ours, repeats: int) -> dict:
    bare(), ours()  # warm-up (imports, caches)
    b, o = [], []
    for _ in range(repeats):
        b.append(timed(bare))
        o.append(timed(ours))
    row = {"model": name, "bare_s": statistics.median(w for w, _ in b),
           "per_patient_s": statistics.median(w for w, _ in o),
           "bare_cpu_s": statistics.median(c for _, c in b), "per_patient_cpu_s": statistics.median(c for _, c in o)}
    row["ratio"] = row["bare_s"] / row["per_patient_s"]
    row["cpu_ratio"] = row["bare_cpu_s"] / row["per_patient_cpu_s"]
    print(f"{name:12s} bare {row['bare_s']:7.2f} s   per-patient {row['per_patient_s']:7.2f} s   "
          f"throughput ratio {row['ratio']:.3f} (goal >= 0.95)   CPU s bare {row['bare_cpu_s']:.2f} / "
          f"per-patient {row['per_patient_cpu_s']:.2f}, ratio {row['cpu_ratio']:.3f}", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--mirroring", action="store_true", help="nnU-Net test-time mirroring (8x the work)")
    parser.add_argument("--models", default="nnunet,bundle", help="comma-separated: nnunet, bundle")
    parser.add_argument("--cold", action="store_true", help="load the model in every per-patient call (no cache)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    import torch

    from imaging_pipelines.config.catalog import load_catalog
    from imaging_pipelines.core.storage import partition_store_path, storage_root
    from imaging_pipelines.medical.io.image_files import write_nifti
    from imaging_pipelines.medical.io.ome_zarr import write_volume_store
    from imaging_pipelines.medical.segment.imported_model import clear_model_cache
    from imaging_pipelines.medical.stages.segmentation import segment_partition
    from imaging_pipelines.tools.demo.imported_models import (
        phantom_case, write_tiny_monai_bundle, write_tiny_nnunet_model,
    )

    load_before = os.getloadavg()
    print(f"torch threads {torch.get_num_threads()}, CPUs {os.cpu_count()}, device {args.device}, "
          f"model cache {'cleared before every per-patient call' if args.cold else 'kept'}, "
          f"load average {load_before[0]:.2f} / {load_before[1]:.2f} (1 / 5 min)", flush=True)
    image, _ = phantom_case(21, SHAPE, SPACING)
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench_imported_") as name:
        tmp = Path(name)
        data = tmp / "data"
        image_file = write_nifti(image, data / "scan.nii.gz")
        wanted = set(args.models.split(","))
        nnunet = write_tiny_nnunet_model(tmp / "nnunet", n_cases=2, shape=(64, 64, 64), spacing=SPACING) \
            if "nnunet" in wanted else None
        bundle = write_tiny_monai_bundle(tmp / "bundle", pixdim_mm=SPACING[0], roi=64, channels=(16, 32, 64, 128),
                                         train_steps=BUNDLE_TRAIN_STEPS) if "bundle" in wanted else None
        mirror = "true" if args.mirroring else "false"
        for ds, model_yaml, bare in [
            ("bench_nnunet", f"{{kind: nnunet, path: {nnunet}, folds: [0], use_mirroring: {mirror}}}",
             lambda: bare_nnunet(nnunet, image_file, tmp / "bare_nnunet", args.device, args.mirroring)),
            ("bench_bundle", f"{{kind: monai_bundle, path: {bundle}}}",
             lambda: bare_bundle(bundle, data, tmp / "bare_bundle", args.device)),
        ]:
            if ds.removeprefix("bench_") not in wanted:
                continue
            workspace(tmp, ds, model_yaml)
            dataset = next(d for d in load_catalog() if d.id == ds)
            stored = image.with_array(image.array.astype(np.float32))
            stored = type(stored)(**{**stored.__dict__, "attributes": {"modality": "MR"}})
            write_volume_store(partition_store_path(storage_root(), ds, "ingested_scans", PARTITION), {"t1w": stored})

            def ours(dataset=dataset):
                if args.cold:
                    clear_model_cache()
                return segment_partition(dataset, PARTITION, storage_root(), device=args.device)

            rows.append(measure(ds.removeprefix("bench_"), bare, ours, args.repeats))
            (tmp / "catalog" / f"{ds}.yaml").unlink()
    load_after = os.getloadavg()
    print(f"load average after {load_after[0]:.2f} / {load_after[1]:.2f} (1 / 5 min)")
    if args.json:
        args.json.write_text(json.dumps({"rows": rows, "load_before": load_before, "load_after": load_after,
                                         "device": args.device, "mirroring": args.mirroring, "cold": args.cold}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
