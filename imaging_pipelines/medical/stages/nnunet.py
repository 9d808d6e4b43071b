"""nnU-Net v2 stage: export a labelled cohort and run nnU-Net's own integrity check, planning, training, inference.

Folder layout under ``work_root`` (a local folder; nnU-Net needs a POSIX file system)::

    nnUNet_raw/DatasetNNN_Name/          imagesTr/, labelsTr/, dataset.json (see segment.nnunet_export);
                                         imagesTs/{case}_0000.nii.gz: the images handed to ``predict_cases``
    nnUNet_preprocessed/DatasetNNN_Name/ dataset_fingerprint.json, nnUNetPlans.json, nnUNetPlans_<config>/
    nnUNet_results/DatasetNNN_Name/<trainer>__nnUNetPlans__<config>/fold_<f>/checkpoint_final.pth
    predictions/DatasetNNN_Name/{case}.nii.gz   label maps on each input image's own grid

Environment: for the duration of :func:`run_nnunet_stage` only, the env vars ``nnUNet_raw``,
``nnUNet_preprocessed`` and ``nnUNet_results`` point at those folders (nnunetv2 2.8 reads them lazily;
older versions copied them into module globals at import, which are patched too) and are restored afterwards.
Changing ``os.environ`` is process-wide: never run two stages at once in one process (Dagster's executors
do not: in_process runs a run's steps one after the other, multiprocess one process per step).
On CPU, ``nnUNet_n_proc_DA`` defaults to 0 (single-threaded augmentation) unless already set.
nnU-Net's verification, fingerprint and preprocessing use "spawn" worker pools (1-2 processes here): a
calling script's main module must be import-safe (``if __name__ == "__main__":``). On CUDA, nnU-Net
compiles the network (torch.compile) unless ``nnUNet_compile=f``.

Units and axes: volumes are :class:`~imaging_pipelines.core.volume.Volume` (array [z, y, x], LPS mm, written as
NIfTI). The plans summary is in nnU-Net's internal axis order: the array axes [z, y, x] permuted by
``transpose_forward``; spacings in mm. Nothing here imports dagster; nnunetv2 is imported lazily.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from imaging_pipelines.medical.io.image_files import write_nifti
from imaging_pipelines.medical.segment.nnunet_export import export_nnunet_dataset
from imaging_pipelines.medical.segment.nnunet_trainers import nnunet_trainer_class
from imaging_pipelines.core.child_signals import workers_terminable
from imaging_pipelines.core.volume import Volume

__all__ = ["RUN_LEVELS", "NnunetOutcome", "TrainedNnunet", "nnunet_paths", "run_nnunet_stage", "train_nnunet_model"]

RUN_LEVELS = ("export", "plan", "train")
PATH_VARS = ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results")
MISSING = "nnU-Net stage needs the optional extra: pip install -c constraints.txt '.[segment-export]'"


@dataclass
class NnunetOutcome:
    """What one stage run did; plain values only, for asset metadata and checks."""

    dataset_folder: str
    n_cases: int
    verified: bool | None = None  # None: nnunetv2 missing, export only
    verification_error: str = ""
    planned: bool = False
    plans: dict = field(default_factory=dict)
    trained: bool = False
    predictions: dict[str, str] = field(default_factory=dict)
    runtime_s: float = 0.0
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def _environ(values: dict[str, str]):
    """Set environment variables while the block runs; restore the previous values (or absence) afterwards."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def nnunet_paths(work_root: str | Path):
    """Point nnU-Net at ``work_root/nnUNet_{raw,preprocessed,results}`` (created) while the block runs."""
    folders = {var: str(Path(work_root) / var) for var in PATH_VARS}
    for folder in folders.values():
        Path(folder).mkdir(parents=True, exist_ok=True)
    patched = []
    with _environ(folders):
        try:
            import nnunetv2.paths  # noqa: F401

            for name, module in list(sys.modules.items()):
                if module is None or not name.startswith("nnunetv2"):
                    continue
                for var, folder in folders.items():
                    old = getattr(module, var, ...)
                    if old is None or isinstance(old, str):  # a str copy taken at import by older nnunetv2
                        patched.append((module, var, old))
                        setattr(module, var, folder)
            yield folders
        finally:
            for module, var, old in reversed(patched):
                setattr(module, var, old)


VERIFY_TIMEOUT_S = 1800
_VERIFY_CODE = ("import signal, sys\nsignal.signal(signal.SIGTERM, signal.SIG_DFL)\n"
                "from nnunetv2.experiment_planning.verify_dataset_integrity import verify_dataset_integrity\n"
                "verify_dataset_integrity(sys.argv[1], num_processes=int(sys.argv[2]))\n")




def _verify(folder: Path, n_proc: int, log: Callable[[str], None]) -> tuple[bool, str, list[str]]:
    """nnU-Net's ``verify_dataset_integrity``: (ok, error message with nnU-Net's own findings, warnings).

    It runs in a child interpreter: nnU-Net's worker pool then cannot be caught by the caller's signal
    handlers (Dagster's turn SIGTERM into an exception, which hung a pool shut down after a failed check),
    its workers' output arrives on the child's pipes, and a stuck check ends at ``VERIFY_TIMEOUT_S``."""
    import subprocess

    try:
        proc = subprocess.run([sys.executable, "-c", _VERIFY_CODE, str(folder), str(n_proc)], capture_output=True,
                              text=True, timeout=VERIFY_TIMEOUT_S, env=os.environ.copy())
    except subprocess.TimeoutExpired:
        return False, f"TimeoutError: nnU-Net's verification did not finish within {VERIFY_TIMEOUT_S} s", []
    lines = (proc.stdout + proc.stderr).splitlines()
    for line in proc.stdout.splitlines():
        log(line)
    error = ""
    if proc.returncode != 0:
        raised = [ln for ln in proc.stderr.splitlines() if re.match(r"^\w*(Error|Exception)\b", ln)]
        error = raised[-1] if raised else f"verification exited with status {proc.returncode}"
    findings = [ln.strip() for ln in lines if re.match(r"\s*(error|images contain|segmentation contains)", ln, re.I)]
    warnings = [ln.strip() for ln in lines if re.match(r"\s*warning", ln, re.I)]
    if error and findings:
        error += " | " + " | ".join(findings)
    return not error, error, warnings


def _non_finite_images(cases) -> list[str]:
    """Cases whose image has NaN/inf voxels: SimpleITK reads NaN in NIfTI as 0, so nnU-Net's own check misses them."""
    found = []
    for case_id, image, _ in cases:
        for c, volume in enumerate([image] if isinstance(image, Volume) else list(image)):
            bad = int(np.count_nonzero(~np.isfinite(np.asarray(volume.array, dtype=np.float64))))
            if bad:
                found.append(f"case {case_id!r} channel {c}: {bad} non-finite (NaN/inf) image voxel(s)")
    return found


def _plans_summary(plans_file: Path, configuration: str) -> dict:
    """The plans of ``configuration`` that matter for a report, as plain JSON values."""
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    manager = PlansManager(str(plans_file))
    cfg = manager.get_configuration(configuration)
    arch = cfg.network_arch_init_kwargs
    summary = {"configuration": configuration, "data_identifier": cfg.data_identifier,
               "batch_size": int(cfg.batch_size), "network": cfg.network_arch_class_name,
               "normalization_schemes": list(cfg.normalization_schemes), "n_stages": arch.get("n_stages")}
    for key, value in [("transpose_forward", manager.transpose_forward), ("patch_size", cfg.patch_size),
                       ("spacing", cfg.spacing), ("median_image_size_in_voxels", cfg.median_image_size_in_voxels),
                       *[(k, arch.get(k)) for k in ("features_per_stage", "kernel_sizes", "strides")]]:
        summary[key] = None if value is None else np.asarray(value).tolist()
    return summary


def _write_small_cohort_split(preprocessed: Path, case_ids: list[str]) -> None:
    """nnU-Net's default 5-fold split needs >= 5 cases; fewer get a k-fold split with k = number of cases."""
    from batchgenerators.utilities.file_and_folder_operations import save_json
    from nnunetv2.utilities.crossval_split import generate_crossval_split

    save_json(generate_crossval_split(sorted(case_ids), seed=12345, n_splits=len(case_ids)),
              str(preprocessed / "splits_final.json"))


def _predict(model, raw_folder: Path, out_folder: Path, predict_cases) -> dict[str, str]:
    """Predict ``(case_id, image)`` pairs with the trained ``model`` (as nnU-Net's own validation does)."""
    from nnunetv2.inference.predict_from_raw_data import nnUNetPredictor

    images_ts = raw_folder / "imagesTs"
    shutil.rmtree(images_ts, ignore_errors=True)
    shutil.rmtree(out_folder, ignore_errors=True)
    images_ts.mkdir(parents=True)
    out_folder.mkdir(parents=True)
    inputs, outputs = [], []
    for case_id, image in predict_cases:
        channels = [image] if isinstance(image, Volume) else list(image)
        paths = [images_ts / f"{case_id}_{c:04d}.nii.gz" for c in range(len(channels))]
        for volume, path in zip(channels, paths):
            write_nifti(volume.with_array(np.asarray(volume.array, dtype=np.float32)), path)
        inputs.append([str(p) for p in paths])
        outputs.append(str(out_folder / case_id))
    model.set_deep_supervision_enabled(False)
    model.network.eval()
    predictor = nnUNetPredictor(tile_step_size=0.5, use_gaussian=True, use_mirroring=True,
                                perform_everything_on_device=model.device.type == "cuda", device=model.device,
                                verbose=False, verbose_preprocessing=False, allow_tqdm=False)
    weights = [getattr(model.network, "_orig_mod", model.network).state_dict()]  # the final weights
    predictor.manual_initialization(model.network, model.plans_manager, model.configuration_manager, weights,
                                    model.dataset_json, type(model).__name__, model.inference_allowed_mirroring_axes)
    predictor.predict_from_files_sequential(inputs, outputs, save_probabilities=False, overwrite=True)
    ending = model.dataset_json["file_ending"]
    return {case_id: out + ending for (case_id, _), out in zip(predict_cases, outputs)}


def _plan(folder: Path, dataset_number: int, configuration: str, n_proc: int, outcome: NnunetOutcome,
          planner: str = "ExperimentPlanner") -> Path | None:
    """Fingerprint, plans (by ``planner``, e.g. ``nnUNetPlannerResEncM``) and preprocessing of ``configuration``
    (replacing earlier ones); the plans file."""
    from nnunetv2.experiment_planning.plan_and_preprocess_api import extract_fingerprints, plan_experiments, preprocess
    from nnunetv2.paths import nnUNet_preprocessed
    from nnunetv2.utilities.plans_handling.plans_handler import PlansManager

    preprocessed = Path(nnUNet_preprocessed) / folder.name
    shutil.rmtree(preprocessed, ignore_errors=True)  # no stale splits or cases from an earlier export
    extract_fingerprints([dataset_number], num_processes=n_proc, clean=True, verbose=False, show_progress_bar=False)
    plans_id = plan_experiments([dataset_number], experiment_planner_class_name=planner)
    plans_file = preprocessed / f"{plans_id}.json"
    if configuration not in PlansManager(str(plans_file)).available_configurations:
        outcome.notes.append(f"configuration {configuration!r} is not in nnU-Net's plans for this dataset")
        return None
    preprocess([dataset_number], plans_id, configurations=(configuration,), num_processes=(n_proc,),
               verbose=False, show_progress_bar=False)
    outcome.planned, outcome.plans = True, _plans_summary(plans_file, configuration)
    return plans_file


def _train(plans_file: Path, configuration: str, trainer: str, fold, device: str, case_ids: list[str]):
    """Train ``trainer`` on ``fold``; returns the trained nnU-Net trainer object."""
    from batchgenerators.utilities.file_and_folder_operations import load_json

    from imaging_pipelines.models.device import pick_device

    torch_device = pick_device(device)
    if fold != "all" and len(case_ids) < 5:
        _write_small_cohort_split(plans_file.parent, case_ids)
    plans = {**load_json(str(plans_file)), "continue_training": False}
    dataset_json = load_json(str(plans_file.parent / "dataset.json"))
    model = nnunet_trainer_class(trainer)(plans=plans, configuration=configuration, fold=fold,
                                    dataset_json=dataset_json, device=torch_device)
    single_threaded = torch_device.type == "cpu" and "nnUNet_n_proc_DA" not in os.environ
    with _environ({"nnUNet_n_proc_DA": "0"} if single_threaded else {}):
        model.run_training()
    return model


def run_nnunet_stage(cases, work_root, *, dataset_number: int, name: str, labels: dict[str, int],
                     channel_names: dict[str, str] | None = None, run: str = "export",
                     configuration: str = "3d_fullres", trainer: str = "nnUNetTrainer", fold: int | str = 0,
                     device: str = "auto", predict_cases=None, log=print) -> NnunetOutcome:
    """Export ``cases`` as nnU-Net dataset ``dataset_number``/``name`` under ``work_root`` and run nnU-Net on it.

    ``cases``: ``(case_id, image Volume, label Volume)`` with label values as in ``labels`` (background 0,
    consecutive). ``run``: ``"export"`` = export (replacing an earlier one) + ``verify_dataset_integrity``;
    ``"plan"`` = also fingerprint, experiment planning (``nnUNetPlans``) and preprocessing of
    ``configuration``; ``"train"`` = also train ``trainer`` on ``fold`` (``"all"`` or an int; cohorts of 2-4
    cases get a k-fold split with k = cases) on ``device`` (``pick_device``: auto/cpu/cuda), then predict
    ``predict_cases`` (``(case_id, image Volume)``) with ``nnUNetPredictor``. nnU-Net's own validation of
    the fold is not run. For short runs use ``trainer="nnUNetTrainer_1epoch"`` (or ``_5epochs``,
    ``_10epochs``...; nnunetv2/training/nnUNetTrainer/variants/training_length): one epoch is still
    250 training + 50 validation iterations. Verification = no NaN/inf image voxels (checked here:
    SimpleITK reads NaN in NIfTI as 0, hiding them from nnU-Net) + nnU-Net's ``verify_dataset_integrity``;
    a failure is reported in the outcome (``verified=False``, nnU-Net's findings in
    ``verification_error``) and later levels are skipped. Raises ``ValueError`` for a bad ``run``, no cases or
    bad export input, ``RuntimeError`` when levels beyond export need the missing nnunetv2.
    """
    start = time.perf_counter()
    if run not in RUN_LEVELS:
        raise ValueError(f"run must be one of {RUN_LEVELS}; got {run!r}")
    cases = list(cases)
    if not cases:
        raise ValueError("nnU-Net stage needs at least one labelled case")
    fold = "all" if fold == "all" else int(fold)
    if run == "train" and fold != "all" and len(cases) < 2:
        raise ValueError("training on a single case needs fold='all'")
    try:
        import nnunetv2  # noqa: F401

        have_nnunet = True
    except ImportError:
        have_nnunet = False
    if run != "export" and not have_nnunet:
        raise RuntimeError(MISSING)
    work_root, n_proc = Path(work_root), max(1, min(2, os.cpu_count() or 1))
    raw = work_root / "nnUNet_raw"
    ours = f"Dataset{dataset_number:03d}_{name}"
    clash = [p.name for p in raw.glob(f"Dataset{dataset_number:03d}_*") if p.name != ours]
    if clash:
        raise ValueError(f"dataset number {dataset_number} is already used by {clash} in {raw}")

    folder = export_nnunet_dataset(cases, raw, dataset_number, name, channel_names, labels, overwrite=True)
    outcome = NnunetOutcome(dataset_folder=str(folder), n_cases=len(cases))
    log(f"exported {len(cases)} case(s) to {folder}")
    non_finite = _non_finite_images(cases)
    if non_finite:
        outcome.verified, outcome.verification_error = False, "; ".join(non_finite)
    elif not have_nnunet:
        outcome.notes.append("nnunetv2 not installed: exported only, not verified")
    else:
        with nnunet_paths(work_root), workers_terminable():
            outcome.verified, outcome.verification_error, warnings = _verify(folder, n_proc, log)
            outcome.notes += warnings
            plans_file = None
            if outcome.verified and run != "export":
                plans_file = _plan(folder, dataset_number, configuration, n_proc, outcome)
                log(f"nnU-Net plans for {configuration}: {outcome.plans}")
            if plans_file is not None and run == "train":
                model = _train(plans_file, configuration, trainer, fold, device, [c[0] for c in cases])
                outcome.trained = True
                log(f"trained {trainer} fold {fold} on {model.device}: {model.output_folder}")
                if predict_cases:
                    out_folder = work_root / "predictions" / folder.name
                    outcome.predictions = _predict(model, folder, out_folder, list(predict_cases))
                else:
                    outcome.notes.append("no predict_cases given: nothing predicted")
    outcome.runtime_s = time.perf_counter() - start
    return outcome


@dataclass
class TrainedNnunet:
    """What :func:`train_nnunet_model` made: the results folder (``dataset.json``, ``plans.json``,
    ``fold_<f>/checkpoint_final.pth``), the plans summary, and per fold nnU-Net's own training log figures
    (EMA pseudo Dice of the foreground on its validation cases, seconds per epoch)."""

    results_folder: Path
    plans: dict
    folds: dict[str, dict]
    notes: list[str] = field(default_factory=list)


def train_nnunet_model(cases, work_root, *, dataset_number: int, name: str, labels: dict[str, int],
                       channel_names: dict[str, str] | None = None, configuration: str = "3d_fullres",
                       planner: str = "ExperimentPlanner", trainer: str = "nnUNetTrainer",
                       folds=(0,), device: str = "auto", log=print) -> TrainedNnunet:
    """Export ``cases`` (``(case_id, image Volume, label Volume)``, labels consecutive from 0 as in ``labels``)
    under ``work_root``, verify, fingerprint, plan with ``planner``, preprocess ``configuration``, and train
    ``trainer`` on each of ``folds`` (``"all"`` or 0..4; cohorts of 2-4 cases get a k-fold split with
    k = cases) on ``device``. ValueError when the data fail nnU-Net's verification or planning."""
    outcome = run_nnunet_stage(cases, work_root, dataset_number=dataset_number, name=name, labels=labels,
                               channel_names=channel_names, run="export", log=log)
    if not outcome.verified:
        raise ValueError(f"nnU-Net dataset verification failed: {outcome.verification_error or outcome.notes}")
    folder = Path(outcome.dataset_folder)
    n_proc = max(1, min(2, os.cpu_count() or 1))
    results, per_fold = None, {}
    with nnunet_paths(work_root), workers_terminable():
        plans_file = _plan(folder, dataset_number, configuration, max(1, n_proc), outcome, planner)
        if plans_file is None:
            raise ValueError("; ".join(outcome.notes) or f"nnU-Net could not plan {configuration!r}")
        for fold in folds:
            fold = "all" if fold == "all" else int(fold)
            log(f"training nnU-Net {trainer} ({planner}, {configuration}) fold {fold}")
            model = _train(plans_file, configuration, trainer, fold, device, [c[0] for c in cases])
            log_data = getattr(model.logger, "local_logger", model.logger).my_fantastic_logging  # 2.8: MetaLogger
            epoch_s = [e - s for s, e in zip(log_data.get("epoch_start_timestamps", []),
                                              log_data.get("epoch_end_timestamps", []))]
            ema = [float(v) for v in log_data.get("ema_fg_dice", [])]
            per_fold[str(fold)] = {"best_ema_fg_dice": max(ema) if ema else None, "epochs": len(ema),
                                   "seconds_per_epoch": float(np.mean(epoch_s)) if epoch_s else None,
                                   "train_losses": [float(v) for v in log_data.get("train_losses", [])],
                                   "ema_fg_dice": ema}
            results = Path(model.output_folder_base)
    return TrainedNnunet(results, outcome.plans, per_fold, outcome.notes)
