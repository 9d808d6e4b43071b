"""GPU readiness check: what the segmentation chain does on a CUDA device, in one short run (< 8 min on one GPU).

Prints, section by section (each one isolated: a failing section prints its error and the others still run):

1. **device**: torch version, GPU name, compute capability, memory, the autocast dtype the project uses
   (``imaging_pipelines.models.device``: bfloat16 where supported, else float16) - every CUDA-specific choice
   of the project goes through that one module;
2. **AMP training throughput** of the project's DynUNet trainer (``train_segmentation``: Dice + CE, random
   patches, autocast + grad scaler from the device module) on a synthetic 1 mm head phantom: seconds per
   iteration and Mvoxel/s of patches, from the last (warm) epoch;
3. **sliding-window inference** of that model through the project's ``predict`` (normalisation, Gaussian
   sliding window, argmax on the device, label map to the host) against bare MONAI
   ``sliding_window_inference`` under the same autocast on the same device-resident input (goal: ratio
   project / bare throughput >= 0.95);
4. **nnU-Net v2**: fingerprint, plans and preprocessing of a small synthetic cohort, a short
   ``nnUNetTrainer`` run (fold ``all``, iterations capped) and ``nnUNetPredictor`` prediction time per case
   (Gaussian, mirroring, tile step 0.5) from the saved results folder.

Without CUDA it prints ``no CUDA device`` and exits 0. ``--cpu-smoke`` runs every section with tiny sizes on
the CPU, to check the script itself (a test does that); its figures mean nothing.

On a lent GPU machine (Python 3.12 with torch preinstalled, no network): ``bash bench/gpu_wheels.sh`` here
first (wheels of SimpleITK + MONAI into ``.whl/part1``, nnU-Net and the rest into ``.whl/part2``, each small
enough to travel with the working tree), then two calls back to back, the second on the still-warm machine::

    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/part1/*.whl && \
      PYTHONPATH=$PWD:/tmp/site python3 bench/gpu_check.py --skip nnunet --json $OUT/gpu_check_1.json
    python3 -m pip install -q --no-index --no-deps --target /tmp/site .whl/part2/*.whl && \
      PYTHONPATH=$PWD:/tmp/site python3 bench/gpu_check.py --skip training,inference --json $OUT/gpu_check_2.json

(carry ``.whl/part1``, then ``.whl/part2``). With everything installed, one call runs all sections.

Usage: ``python bench/gpu_check.py [--cpu-smoke] [--json OUT] [--skip nnunet,...]``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass(frozen=True)
class Sizes:
    """Problem sizes (voxels, array order z, y, x; 1 mm spacing)."""

    train_shape: tuple[int, int, int]
    patch: tuple[int, int, int]
    epochs: int
    iterations: int
    batch: int
    infer_shape: tuple[int, int, int]
    sw_batch: int
    repeats: int
    nnunet_shape: tuple[int, int, int]
    nnunet_cases: int
    nnunet_iterations: int


GPU = Sizes(train_shape=(160, 192, 160), patch=(128, 128, 128), epochs=2, iterations=40, batch=2,
            infer_shape=(192, 224, 192), sw_batch=4, repeats=3, nnunet_shape=(96, 128, 128), nnunet_cases=4,
            nnunet_iterations=50)
CPU_SMOKE = Sizes(train_shape=(40, 48, 40), patch=(32, 32, 32), epochs=2, iterations=2, batch=2,
                  infer_shape=(40, 48, 40), sw_batch=2, repeats=1, nnunet_shape=(32, 40, 40), nnunet_cases=2,
                  nnunet_iterations=2)


def synchronise(device) -> None:
    import torch

    if device.type == "cuda":
        torch.cuda.synchronize(device)


def phantom(shape: tuple[int, int, int], seed: int):
    """A head-like MR phantom Volume (1 mm) and its lesion mask (0/1), from the demo generator."""
    from imaging_pipelines.core.volume import Volume
    from imaging_pipelines.tools.demo.phantom import brain_like_phantom

    image, labels = brain_like_phantom(shape, (1.0, 1.0, 1.0), seed=seed, min_lesions=1)
    return Volume(image), Volume((labels == 5).astype(np.uint8))


def section_device(device, sizes: Sizes) -> dict[str, Any]:
    import torch

    from imaging_pipelines.models.device import amp_dtype

    out: dict[str, Any] = {"torch": torch.__version__, "python": platform.python_version(), "device": str(device)}
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        out.update(name=props.name, capability=f"{props.major}.{props.minor}",
                   memory_gib=round(props.total_memory / 2**30, 1), multiprocessors=props.multi_processor_count,
                   cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    out["autocast_dtype"] = str(amp_dtype(device)).replace("torch.", "")
    return out


def section_training(device, sizes: Sizes, state: dict) -> dict[str, Any]:
    from imaging_pipelines.medical.segment.unet_train import train_segmentation

    images, masks = zip(*(phantom(sizes.train_shape, seed) for seed in (1, 2)))
    model, report = train_segmentation(list(images), list(masks), n_classes=2, patch_size=sizes.patch,
                                       epochs=sizes.epochs, iterations_per_epoch=sizes.iterations,
                                       batch_size=sizes.batch, optimizer="adam", lr=1e-3, base_filters=32,
                                       val_fraction=0.0, device=str(device), log=lambda _: None)
    state["model"] = model
    warm = report.curve[-1].seconds / sizes.iterations
    voxels = sizes.batch * int(np.prod(sizes.patch))
    return {"patch": list(model.plan.patch_size), "filters": model.plan.filters, "batch": sizes.batch,
            "seconds_per_iteration": round(warm, 4), "first_epoch_s": round(report.curve[0].seconds, 2),
            "patch_mvoxel_per_s": round(voxels / warm / 1e6, 2), "final_loss": round(report.curve[-1].train_loss, 4)}


def section_inference(device, sizes: Sizes, state: dict) -> dict[str, Any]:
    import torch
    from monai.inferers import sliding_window_inference

    from imaging_pipelines.medical.segment.unet import normalize_intensity, predict
    from imaging_pipelines.models.device import autocast_context

    model = state.get("model")
    if model is None:
        raise RuntimeError("no model: the training section failed")
    image, _ = phantom(sizes.infer_shape, seed=3)
    net = model.network.to(device).eval()
    x = torch.from_numpy(normalize_intensity(image.array, model.normalization))[None, None].to(device)

    def bare() -> float:
        synchronise(device)
        start = time.perf_counter()
        with torch.no_grad(), autocast_context(device):
            logits = sliding_window_inference(x, list(model.plan.patch_size), sizes.sw_batch, net, overlap=0.5,
                                              mode="gaussian")
            torch.argmax(logits[0], dim=0).to(torch.uint8).cpu()
        return time.perf_counter() - start

    def ours() -> float:
        synchronise(device)
        start = time.perf_counter()
        predict(model, image, overlap=0.5, sw_batch_size=sizes.sw_batch, device=device)
        return time.perf_counter() - start

    bare(), ours()  # warm-up: cuDNN autotuning, allocator
    bare_s = statistics.median(bare() for _ in range(sizes.repeats))
    ours_s = statistics.median(ours() for _ in range(sizes.repeats))
    mvox = int(np.prod(sizes.infer_shape)) / 1e6
    ratio = bare_s / ours_s
    return {"volume": list(sizes.infer_shape), "bare_monai_s": round(bare_s, 4), "project_predict_s": round(ours_s, 4),
            "bare_mvoxel_per_s": round(mvox / bare_s, 2), "project_mvoxel_per_s": round(mvox / ours_s, 2),
            "throughput_ratio": round(ratio, 3), "verdict": "PASS" if ratio >= 0.95 else "FAIL (goal >= 0.95)"}


def section_nnunet(device, sizes: Sizes, state: dict) -> dict[str, Any]:
    import shutil

    from imaging_pipelines.medical.stages.nnunet import nnunet_paths, run_nnunet_stage

    work = Path(state["tmp"]) / "nnunet"
    cases = [(f"case{i:02d}", *phantom(sizes.nnunet_shape, seed=10 + i)) for i in range(sizes.nnunet_cases)]
    start = time.perf_counter()
    planned = run_nnunet_stage(cases, work, dataset_number=990, name="GpuCheck", labels={"background": 0, "lesion": 1},
                               run="plan", device=str(device), log=lambda _: None)
    plan_s = time.perf_counter() - start
    if not planned.planned:
        raise RuntimeError(f"nnU-Net planning failed: {planned.verification_error or planned.notes}")
    with nnunet_paths(work):
        from batchgenerators.utilities.file_and_folder_operations import load_json
        from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor
        from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer

        preprocessed = work / "nnUNet_preprocessed" / "Dataset990_GpuCheck"
        plans = {**load_json(str(preprocessed / "nnUNetPlans.json")), "continue_training": False}
        trainer = nnUNetTrainer(plans=plans, configuration="3d_fullres",
                                fold="all", dataset_json=load_json(str(preprocessed / "dataset.json")), device=device)
        trainer.num_epochs, trainer.num_iterations_per_epoch = 1, sizes.nnunet_iterations
        trainer.num_val_iterations_per_epoch = max(1, sizes.nnunet_iterations // 5)
        os.environ.setdefault("nnUNet_n_proc_DA", "0" if device.type == "cpu" else "8")
        start = time.perf_counter()
        trainer.run_training()
        train_s = time.perf_counter() - start
        results = Path(trainer.output_folder).parent
        predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                    perform_everything_on_device=device.type == "cuda", device=device,
                                    verbose=False, verbose_preprocessing=False, allow_tqdm=False)
        predictor.initialize_from_trained_model_folder(str(results), use_folds=("all",),
                                                       checkpoint_name="checkpoint_final.pth")
        raw = Path(planned.dataset_folder) / "imagesTr"
        files = sorted(raw.glob("*_0000.nii.gz"))
        out = work / "pred"
        shutil.rmtree(out, ignore_errors=True)
        out.mkdir(parents=True)
        predictor.predict_from_files_sequential([[str(files[0])]], [str(out / "warmup")], False, True, None)
        times = []
        for f in files:
            start = time.perf_counter()
            predictor.predict_from_files_sequential([[str(f)]], [str(out / f.name.split("_0000")[0])], False, True, None)
            times.append(time.perf_counter() - start)
    return {"cases": len(files), "shape": list(sizes.nnunet_shape), "plan_preprocess_s": round(plan_s, 2),
            "train_iterations": sizes.nnunet_iterations, "train_s": round(train_s, 2),
            "train_s_per_iteration": round(train_s / sizes.nnunet_iterations, 3),
            "predict_s_per_case": round(statistics.median(times), 3), "plans": planned.plans}


SECTIONS: dict[str, Callable[..., dict[str, Any]]] = {
    "training": section_training, "inference": section_inference, "nnunet": section_nnunet,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cpu-smoke", action="store_true", help="tiny sizes on the CPU (checks the script only)")
    parser.add_argument("--skip", default="", help="comma-separated sections to skip: training,inference,nnunet")
    parser.add_argument("--json", type=Path, help="also write every figure as JSON")
    args = parser.parse_args(argv)
    import torch

    from imaging_pipelines.models.device import pick_device

    if args.cpu_smoke:
        device, sizes = pick_device("cpu"), CPU_SMOKE
    elif not torch.cuda.is_available():
        print("no CUDA device: nothing to measure (use --cpu-smoke to exercise this script on the CPU)")
        return 0
    else:
        device, sizes = pick_device("cuda"), GPU
        torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    figures: dict[str, Any] = {"device": section_device(device, sizes)}
    print("device:", json.dumps(figures["device"]), flush=True)
    skipped = {s.strip() for s in args.skip.split(",") if s.strip()}
    failed = []
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gpu_check_") as tmp:
        state: dict[str, Any] = {"tmp": tmp}
        for name, section in SECTIONS.items():
            if name in skipped:
                continue
            t0 = time.perf_counter()
            try:
                figures[name] = section(device, sizes, state)
            except Exception as exc:  # noqa: BLE001 - one section failing must not hide the others
                traceback.print_exc()
                figures[name] = {"error": f"{type(exc).__name__}: {exc}"}
                failed.append(name)
            figures[name]["section_s"] = round(time.perf_counter() - t0, 1)
            print(f"{name}:", json.dumps(figures[name]), flush=True)
    figures["total_s"] = round(time.perf_counter() - started, 1)
    print(f"total {figures['total_s']} s on {device}" + (f"; failed sections: {', '.join(failed)}" if failed else ""))
    if args.json:
        args.json.write_text(json.dumps(figures, indent=2))
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
