"""Dagster assets of the segmentation chain of one medical dataset: model (unpartitioned, versioned),
masks and evaluation (partitioned by patient), cohort evaluation and the nnU-Net dataset (unpartitioned).

Lineage: <input stage> -> segmentation_model -> segmentation -> segmentation_evaluation ->
segmentation_cohort_evaluation (``imported_model``, an observable source asset, in place of
``segmentation_model`` for method ``imported``); <input stage> -> nnunet_dataset. Unpartitioned assets name partitioned
ones as ``deps`` only and read the stores themselves, so no step loads every partition into memory.
"""


from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    SourceAsset,
    asset,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import (
    COHORT_EVALUATION, EVALUATED, IMPORTED_MODEL, NNUNET_DATASET, SEGMENTATION_MODEL, SEGMENTED,
)
from imaging_pipelines.dagster_layer.automation import COHORT_AUTOMATION
from imaging_pipelines.dagster_layer.asset_helpers import (
    GPU_POOL, PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY, asset_key, check_result, check_results, check_specs,
    input_failure,
)
from imaging_pipelines.dagster_layer.metadata import materialization, rows_table, stage_metadata
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.dagster_layer.imported_model_assets import build_imported_model_asset
from imaging_pipelines.dagster_layer.model_assets import build_model_asset
from imaging_pipelines.medical.stages.segmentation_data import input_stage
from imaging_pipelines.medical.stages.nnunet_model import NnunetModelTask
from imaging_pipelines.medical.stages.synthetic_lesion_model import segmentation_model_task
from imaging_pipelines.models.outcome import MetricCheck

COHORT_CHECKS = ("test_dice_above_floor", "model_beats_baselines_on_test_split")


def build_segmentation_model_asset(dataset: DatasetConfig, gpu_tags: dict | None = None) -> AssetsDefinition:
    cfg = dataset.segmentation
    check = MetricCheck("validation_dice_above_threshold", "best_validation_dice", cfg.training.min_validation_dice)
    if cfg.method == "nnunet":
        nn = cfg.nnunet
        return build_model_asset(
            dataset, NnunetModelTask(dataset), deps=[input_stage(dataset)], gpu_tags=gpu_tags, check=check,
            description=f"nnU-Net v2 trained by nnU-Net itself on the labelled training patients: fingerprint, "
                        f"{nn.planner} plans, preprocessing and {nn.trainer} ({nn.configuration}) on folds "
                        f"{', '.join(map(str, nn.folds))}; versioned by a hash of the training data, planner, trainer, "
                        "configuration, folds and nnU-Net version, and retrained only when that version changes.")
    return build_model_asset(
        dataset, segmentation_model_task(dataset), deps=[input_stage(dataset)], gpu_tags=gpu_tags, check=check,
        description=f"MONAI {cfg.method} trained on the labelled training patients (Dice + cross-entropy, random "
                    "patches with foreground oversampling, flips and intensity augmentation, held-out validation "
                    "split); versioned by a hash of code, training data and parameters and retrained only when "
                    "that version changes.")


def build_segmentation_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition,
                             gpu_tags: dict | None = None) -> AssetsDefinition:

    key = asset_key(dataset, SEGMENTED)
    deps = [asset_key(dataset, input_stage(dataset))] + ([asset_key(dataset, SEGMENTATION_MODEL)] if dataset.segmentation.uses_model else [])
    deps += [asset_key(dataset, IMPORTED_MODEL)] if dataset.segmentation.uses_imported_model else []

    @asset(key=key, deps=deps, partitions_def=partitions, group_name=dataset.id, kinds={"zarr", "nifti"}, pool=GPU_POOL,
           op_tags=gpu_tags, check_specs=check_specs(key, "mask_not_empty_where_reference_is"),
           backfill_policy=PARTITION_BACKFILL_POLICY, retry_policy=TRANSIENT_RETRY_POLICY,
           description="Masks of every selected image: the imported pretrained model (method imported) or Gaussian "
                       "sliding-window inference of the current trained model "
                       "(classical fallback until one is trained), post-processing, baselines beside it; OME-Zarr "
                       "labels, a NIfTI mask on the original grid and a pseudonymised DICOM SEG for DICOM sources.")
    def segmentation(context: AssetExecutionContext, storage: ImagingStorage, torch_device: TorchDevice):
        from imaging_pipelines.medical.stages.segmentation import segment_partition

        partition = context.partition_key
        try:
            result = segment_partition(dataset, partition, storage.root_path(), torch_device.device)
        except (ImagingInputError, FileNotFoundError, ValueError) as exc:
            raise input_failure(context, partition, exc) from None
        context.log.info(f"partition {partition}: {len(result.images)} image(s) segmented by {result.method}")
        return materialization(
            metadata={
                **stage_metadata(result),
                "method": result.method,
                "model_version": result.model_version or "none",
                "lesion_count": result.lesion_count,
                **{f"volume_{name}_ml": round(v, 3) for name, v in result.volumes_ml.items()},
                "objects": rows_table(result.objects) if result.objects else MetadataValue.text("none"),
                **({"surfaces": rows_table(result.surfaces)} if result.surfaces else {}),
                "outputs": MetadataValue.md("\n".join(f"- `{p}`" for p in result.outputs) or "none"),
            },
            check_results=check_results(result.checks),
        )

    return segmentation


def build_evaluation_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:

    @asset(key=asset_key(dataset, EVALUATED), deps=[asset_key(dataset, SEGMENTED)], partitions_def=partitions,
           group_name=dataset.id, kinds={"json"}, backfill_policy=PARTITION_BACKFILL_POLICY, retry_policy=TRANSIENT_RETRY_POLICY,
           description="Dice, IoU, HD95 (mm) and volume difference (mL) of the model and every baseline against "
                       "the reference label, per image and class, with the patient's train/test split.")
    def segmentation_evaluation(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.medical.stages.segmentation_eval import evaluate_partition

        partition = context.partition_key
        try:
            result = evaluate_partition(dataset, partition, storage.root_path())
        except (FileNotFoundError, ValueError) as exc:
            raise input_failure(context, partition, exc) from None
        model_dice = [r["dice"] for r in result.rows if r["method"] == "model" and r["dice"] is not None]
        return materialization(metadata={
            "split": result.rows[0]["split"] if result.rows else "unlabelled",
            "model_dice_mean": round(sum(model_dice) / len(model_dice), 4) if model_dice else None,
            "metrics": rows_table(result.rows) if result.rows else MetadataValue.text("no reference labels"),
            "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
            "path": MetadataValue.path(result.store_path),
        })

    return segmentation_evaluation


def build_cohort_evaluation_asset(dataset: DatasetConfig) -> AssetsDefinition:

    key = asset_key(dataset, COHORT_EVALUATION)

    @asset(key=key, deps=[asset_key(dataset, EVALUATED)], group_name=dataset.id, kinds={"json"},
           automation_condition=COHORT_AUTOMATION,
           check_specs=check_specs(key, *COHORT_CHECKS),
           description="Mean and median Dice, median HD95 and mean absolute volume difference per method and "
                       "class over the held-out test patients and over all evaluated patients.")
    def segmentation_cohort_evaluation(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.medical.stages.segmentation_eval import cohort_checks, cohort_evaluation

        summary, n = cohort_evaluation(dataset, storage.root_path())
        checks = cohort_checks(summary, dataset.segmentation.evaluation)
        test_model = next((r for r in summary if r["split"] == "test" and r["method"] == "model"), None)
        return materialization(
            metadata={"evaluated_patients": n,
                      "test_model_dice_mean": test_model["dice_mean"] if test_model else None,
                      "summary": rows_table(summary) if summary else MetadataValue.text("nothing evaluated")},
            check_results=check_results(checks),
        )

    return segmentation_cohort_evaluation


def build_nnunet_asset(dataset: DatasetConfig, gpu_tags: dict | None = None) -> AssetsDefinition:
    key = asset_key(dataset, NNUNET_DATASET)
    nn = dataset.segmentation.nnunet

    @asset(key=key, deps=[asset_key(dataset, input_stage(dataset))], group_name=dataset.id, kinds={"nnunet"}, pool=GPU_POOL,
           op_tags=gpu_tags, check_specs=check_specs(key, "nnunet_dataset_integrity"),
           description=f"The labelled training cohort in nnU-Net v2's raw format (imagesTr, labelsTr, dataset.json), "
                       f"checked by nnU-Net's own integrity verification; run level '{nn.run}' (export, plan: "
                       "fingerprint + plans + preprocessing, train: nnU-Net training and nnUNetPredictor inference).")
    def nnunet_dataset(context: AssetExecutionContext, storage: ImagingStorage, torch_device: TorchDevice):
        from imaging_pipelines.medical.stages.nnunet_dataset import run_nnunet_for_dataset

        try:
            outcome = run_nnunet_for_dataset(dataset, storage.root_path(), torch_device.device, log=context.log.info)
        except (ValueError, RuntimeError) as exc:
            raise input_failure(context, None, exc) from None
        return materialization(
            metadata={"dataset_folder": MetadataValue.path(outcome.dataset_folder), "cases": outcome.n_cases,
                      "run": nn.run, "planned": outcome.planned, "trained": outcome.trained,
                      "plans": MetadataValue.json(outcome.plans or {}),
                      "notes": MetadataValue.md("\n".join(f"- {n}" for n in outcome.notes) or "none"),
                      "runtime_s": round(outcome.runtime_s, 2)},
            check_results=[AssetCheckResult(
                check_name="nnunet_dataset_integrity", passed=bool(outcome.verified),
                description="nnU-Net v2 verify_dataset_integrity passed" if outcome.verified else
                (outcome.verification_error or "nnunetv2 not installed: not verified"))],
        )

    return nnunet_dataset


def build_segmentation_assets(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition,
                              gpu_tags: dict | None = None) -> list[AssetsDefinition | SourceAsset]:
    """The segmentation chain's assets for ``dataset`` (none when its segmentation method is ``none``);
    ``gpu_tags``: op tags of its ``gpu``-pool steps (model, segmentation, nnU-Net)."""
    cfg = dataset.segmentation
    if cfg.method == "none":
        return []
    assets = [build_segmentation_asset(dataset, partitions, gpu_tags)]
    if cfg.uses_model:
        assets.insert(0, build_segmentation_model_asset(dataset, gpu_tags))
    if cfg.uses_imported_model:
        assets.insert(0, build_imported_model_asset(dataset))
    if cfg.labels.source != "none":
        assets += [build_evaluation_asset(dataset, partitions), build_cohort_evaluation_asset(dataset)]
    if cfg.nnunet.enabled:
        assets.append(build_nnunet_asset(dataset, gpu_tags))
    return assets
