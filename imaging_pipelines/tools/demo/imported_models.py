"""Tiny pretrained-model folders made on the spot, in the formats people import: an nnU-Net v2 trained-model
folder and a MONAI bundle. For the demo, the tests and the benchmarks; nothing is downloaded.

The nnU-Net folder comes from nnU-Net's own fingerprint extraction and experiment planning on a few
synthetic phantoms (background 0, lesion 1, other tissue 2: a multi-class model) and nnU-Net's own network
builder; the weights are the builder's seeded random initialisation (with ``train_steps`` > 0, a few
optimiser steps on the phantoms' own 3D patches), stored as ``fold_<f>/checkpoint_final.pth`` in the layout
``nnUNetTrainer`` saves. The bundle is a small MONAI UNet with a spleen-bundle-style ``inference.json``
(LoadImaged, Orientationd RAS, Spacingd, ScaleIntensityd, SlidingWindowInferer, Invertd, AsDiscreted,
SaveImaged) and ``metadata.json`` naming the output channels. Spacings in mm; phantom arrays ``[z, y, x]``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Sequence

import numpy as np

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom, centered_origin

LABELS = {"background": 0, "lesion": 1, "tissue": 2}
SHAPE = (16, 24, 20)
SPACING = (7.5, 8.0, 10.0)


def phantom_case(seed: int, shape: Sequence[int] = SHAPE, spacing: Sequence[float] = SPACING) -> tuple[Volume, Volume]:
    """(image, labels 0/1/2) of one brain-like phantom; ``shape`` (z, y, x), ``spacing`` (x, y, z) mm."""
    image, labels = brain_like_phantom(tuple(shape), spacing=tuple(spacing), seed=seed)
    geometry = dict(spacing=tuple(spacing), origin=centered_origin(tuple(shape), tuple(spacing), np.eye(3)),
                    direction=np.eye(3))
    classes = np.where(labels == BRAIN_LESION, 1, np.where(labels > 0, 2, 0)).astype(np.uint8)
    return Volume(array=np.asarray(image, dtype=np.float32), **geometry), Volume(array=classes, **geometry)


def write_tiny_nnunet_model(out: str | Path, n_cases: int = 2, folds: Sequence[int] = (0,), seed: int = 0,
                            dataset_number: int = 990, configuration: str = "3d_fullres",
                            shape: Sequence[int] = SHAPE, spacing: Sequence[float] = SPACING) -> Path:
    """An nnU-Net v2 trained-model folder at ``out`` (``dataset.json``, ``plans.json``, ``fold_<f>/
    checkpoint_final.pth``) planned by nnU-Net on ``n_cases`` phantoms of ``shape`` (z, y, x) and ``spacing``
    (x, y, z) mm; one seeded checkpoint per fold."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments

    from imaging_pipelines.medical.segment.nnunet_export import export_nnunet_dataset
    from imaging_pipelines.core.child_signals import workers_terminable
    from imaging_pipelines.medical.stages.nnunet import nnunet_paths

    out = Path(out)
    cases = [(f"case{s:03d}", *phantom_case(seed + s, shape, spacing)) for s in range(n_cases)]
    with tempfile.TemporaryDirectory(prefix="nnunet-plan-") as work, nnunet_paths(work) as paths, workers_terminable():
        export_nnunet_dataset(cases, paths["nnUNet_raw"], dataset_number, "Tiny", {"0": "MR"}, LABELS)
        extract_fingerprints([dataset_number], num_processes=1, clean=True, verbose=False, show_progress_bar=False)
        plans_id = plan_experiments([dataset_number])
        planned = Path(paths["nnUNet_preprocessed"]) / f"Dataset{dataset_number:03d}_Tiny"
        out.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(planned / f"{plans_id}.json", out / "plans.json")
        shutil.copyfile(planned / "dataset.json", out / "dataset.json")
    for fold in folds:
        write_nnunet_checkpoint(out, fold, seed * 100 + int(fold), configuration)
    return out


def write_nnunet_checkpoint(folder: str | Path, fold: int, seed: int, configuration: str = "3d_fullres") -> Path:
    """``folder/fold_<fold>/checkpoint_final.pth``: nnU-Net's own network for the folder's plans, initialised
    with ``seed``, saved in the layout ``nnUNetTrainer`` uses (what ``nnUNetPredictor`` loads)."""
    import torch
    from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    folder = Path(folder)
    plans = json.loads((folder / "plans.json").read_text())
    dataset_json = json.loads((folder / "dataset.json").read_text())
    manager = PlansManager(plans)
    config = manager.get_configuration(configuration)
    n_out = manager.get_label_manager(dataset_json).num_segmentation_heads
    torch.manual_seed(seed)
    network = nnUNetTrainer.build_network_architecture(manager, config, 1, n_out, enable_deep_supervision=False)
    (folder / f"fold_{fold}").mkdir(exist_ok=True)
    target = folder / f"fold_{fold}" / "checkpoint_final.pth"
    partial = target.with_name(target.name + ".partial")
    torch.save({"network_weights": network.state_dict(), "trainer_name": "nnUNetTrainer",
                "init_args": {"plans": plans, "configuration": configuration, "fold": fold,
                              "dataset_json": dataset_json, "device": "cpu"},
                "inference_allowed_mirroring_axes": (0, 1, 2), "current_epoch": 0}, partial)
    os.replace(partial, target)  # a reader sees the old checkpoint or the whole new one
    return target


INFERENCE_CONFIG = {
    "imports": ["$import glob", "$import numpy"],
    "bundle_root": ".",
    "output_dir": "$@bundle_root + '/eval'",
    "dataset_dir": "/workspace/data",
    "datalist": "$list(sorted(glob.glob(@dataset_dir + '/*.nii.gz')))",
    "device": "$torch.device('cuda' if torch.cuda.is_available() else 'cpu')",
    "network_def": {"_target_": "UNet", "spatial_dims": 3, "in_channels": 1, "out_channels": 3,
                    "channels": [8, 16, 32], "strides": [2, 2], "num_res_units": 1, "norm": "instance"},
    "network": "$@network_def.to(@device)",
    "preprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "LoadImaged", "keys": "image"},
        {"_target_": "EnsureChannelFirstd", "keys": "image"},
        {"_target_": "Orientationd", "keys": "image", "axcodes": "RAS"},
        {"_target_": "Spacingd", "keys": "image", "pixdim": [6.0, 6.0, 6.0], "mode": "bilinear"},
        {"_target_": "ScaleIntensityd", "keys": "image"},
        {"_target_": "EnsureTyped", "keys": "image"}]},
    "dataset": {"_target_": "Dataset", "data": "$[{'image': i} for i in @datalist]", "transform": "@preprocessing"},
    "dataloader": {"_target_": "DataLoader", "dataset": "@dataset", "batch_size": 1, "shuffle": False,
                   "num_workers": 0},
    "inferer": {"_target_": "SlidingWindowInferer", "roi_size": [32, 32, 32], "sw_batch_size": 1, "overlap": 0.25},
    "postprocessing": {"_target_": "Compose", "transforms": [
        {"_target_": "Activationsd", "keys": "pred", "softmax": True},
        {"_target_": "Invertd", "keys": "pred", "transform": "@preprocessing", "orig_keys": "image",
         "nearest_interp": False, "to_tensor": True},
        {"_target_": "AsDiscreted", "keys": "pred", "argmax": True},
        {"_target_": "SaveImaged", "keys": "pred", "output_dir": "@output_dir", "resample": False,
         "output_dtype": "$numpy.uint8", "separate_folder": False, "output_postfix": "seg", "print_log": False}]},
    "handlers": [{"_target_": "CheckpointLoader", "load_path": "$@bundle_root + '/models/model.pt'",
                  "load_dict": {"model": "@network"}, "map_location": "@device"}],
    "evaluator": {"_target_": "SupervisedEvaluator", "device": "@device", "val_data_loader": "@dataloader",
                  "network": "@network", "inferer": "@inferer", "postprocessing": "@postprocessing",
                  "val_handlers": "@handlers"},
    "run": ["$@evaluator.run()"],
}


def write_tiny_monai_bundle(out: str | Path, seed: int = 0, pixdim_mm: float = 6.0, roi: int = 32,
                            channels: Sequence[int] = (8, 16, 32), train_steps: int = 0) -> Path:
    """A MONAI bundle folder at ``out`` (configs/inference.json, configs/metadata.json, models/model.pt):
    a seeded small 3-class UNet (``channels`` per level, stride 2) run at ``pixdim_mm`` isotropic spacing
    with ``roi``^3 sliding windows; label names in the metadata's ``channel_def``. ``train_steps`` > 0:
    that many Adam steps on ``roi``^3 crops of a phantom (intensities scaled to [0, 1] as the bundle's
    ScaleIntensityd does), so the masks are smooth regions instead of a random network's speckle."""
    import monai
    import torch
    from monai.networks.nets import UNet

    out = Path(out)
    (out / "configs").mkdir(parents=True, exist_ok=True)
    (out / "models").mkdir(parents=True, exist_ok=True)
    config = json.loads(json.dumps(INFERENCE_CONFIG))
    config["network_def"].update(channels=list(channels), strides=[2] * (len(channels) - 1))
    config["preprocessing"]["transforms"][3]["pixdim"] = [pixdim_mm] * 3
    config["inferer"]["roi_size"] = [roi] * 3
    (out / "configs" / "inference.json").write_text(json.dumps(config, indent=2))
    metadata = {"version": "0.1.0", "monai_version": monai.__version__, "name": "tiny phantom segmentation",
                "network_data_format": {
                    "inputs": {"image": {"type": "image", "format": "magnitude", "num_channels": 1,
                                         "spatial_shape": [roi] * 3, "dtype": "float32"}},
                    "outputs": {"pred": {"type": "image", "format": "segmentation", "num_channels": 3,
                                         "dtype": "float32", "spatial_shape": [roi] * 3,
                                         "channel_def": {str(v): k for k, v in LABELS.items()}}}}}
    (out / "configs" / "metadata.json").write_text(json.dumps(metadata, indent=2))
    torch.manual_seed(seed)
    kwargs = {k: v for k, v in config["network_def"].items() if k != "_target_"}
    network = UNet(**kwargs)
    if train_steps:
        _fit(network, roi, pixdim_mm, train_steps, seed)
    torch.save(network.state_dict(), out / "models" / "model.pt")
    return out


def _fit(network, roi: int, pixdim_mm: float, steps: int, seed: int) -> None:
    """A few Adam steps of cross-entropy on random ``roi``^3 crops of one phantom at ``pixdim_mm``."""
    import torch

    shape = (max(roi, 16) + 16,) * 3
    image, labels = phantom_case(seed + 100, shape, (pixdim_mm,) * 3)
    x = image.array - image.array.min()
    x = torch.from_numpy(x / max(float(x.max()), 1e-6)).float()
    y = torch.from_numpy(labels.array.astype("int64"))
    rng = np.random.default_rng(seed)
    optimiser = torch.optim.Adam(network.parameters(), lr=1e-2)
    network.train()
    for _ in range(steps):
        z0, y0, x0 = (int(rng.integers(0, s - roi + 1)) for s in shape)
        crop = (slice(z0, z0 + roi), slice(y0, y0 + roi), slice(x0, x0 + roi))
        loss = torch.nn.functional.cross_entropy(network(x[crop][None, None]), y[crop][None])
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    network.eval()


def write_demo_imported(inbox: str | Path, model_folder: str | Path, n_subjects: int = 3, seed: int = 40) -> Path:
    """The demo's imported-model dataset: ``n_subjects`` NIfTI phantoms (``sub-XX/sub-XX_T1w.nii.gz`` with their
    ``_label`` files: lesion 1, tissue 2) in ``inbox``, and a small MONAI bundle trained a few steps on other
    phantoms at ``model_folder`` (written once; an existing bundle is kept, so its files' hash, the imported
    model's data version, stays the same between demo runs). Returns the bundle folder."""
    from imaging_pipelines.medical.io.image_files import write_nifti

    for i in range(n_subjects):
        image, labels = phantom_case(seed + i, shape=(24, 40, 32), spacing=(4.0, 4.0, 5.0))
        subject = f"sub-{i + 1:02d}"
        write_nifti(image, Path(inbox) / subject / f"{subject}_T1w.nii.gz")
        write_nifti(labels, Path(inbox) / subject / f"{subject}_T1w_label.nii.gz")
    model_folder = Path(model_folder)
    if not (model_folder / "models" / "model.pt").is_file():
        with tempfile.TemporaryDirectory(dir=model_folder.parent if model_folder.parent.exists() else None) as tmp:
            written = write_tiny_monai_bundle(Path(tmp) / "bundle", seed=seed, train_steps=40)
            model_folder.parent.mkdir(parents=True, exist_ok=True)
            shutil.move(str(written), str(model_folder))
    return model_folder
