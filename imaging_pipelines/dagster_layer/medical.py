"""Assets, partitions and jobs of one medical dataset (one chain per catalog entry).

Lineage: ingested_scans -> preprocessed -> registered (-> segmentation chain -> reports); the
learned registration model, when configured, is an unpartitioned asset trained on every preprocessed
partition. Geometry and finiteness checks of ingestion and the foreground-mask check of preprocessing
are blocking: a broken partition stops there and never reaches segmentation or its report.
"""

from dagster import (
    AssetExecutionContext,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    JobDefinition,
    MaterializeResult,
    asset,
    define_asset_job,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import (
    INGESTED, PREPROCESSED, REGISTERED, REGISTRATION_MODEL,
)
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.dagster_layer.classification_assets import build_classification_assets
from imaging_pipelines.dagster_layer.asset_helpers import (
    model_and_summary_jobs,
    PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY, DatasetChain, asset_key, check_results, check_specs,
    input_failure,
)
from imaging_pipelines.dagster_layer.inbox_sensors import build_inbox_sensor
from imaging_pipelines.dagster_layer.metadata import materialization, ingestion_metadata, stage_metadata
from imaging_pipelines.dagster_layer.model_assets import build_model_asset
from imaging_pipelines.dagster_layer.report_assets import build_report_assets
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.dagster_layer.segmentation_assets import build_segmentation_assets
from imaging_pipelines.medical.ingest import ingest_partition
from imaging_pipelines.medical.stages.preprocessing import preprocess_partition
from imaging_pipelines.medical.stages.quality_checks import (
    BRAIN_MASK_CHECK, FOREGROUND_MASK_CHECK, INGESTION_CHECKS, ingestion_checks,
)
from imaging_pipelines.medical.stages.registration import register_partition
from imaging_pipelines.medical.stages.registration_model import RegistrationModelTask


def build_ingestion_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    key = asset_key(dataset, INGESTED)

    @asset(
        key=key,
        partitions_def=partitions,
        group_name=dataset.id,
        kinds={"dicom", "zarr"} if "dicom" in dataset.formats else {"nifti", "zarr"},
        description=(
            f"Scans of one (pseudonymous) patient from `{dataset.id}`'s inbox, as an OME-Zarr 0.5 store: "
            "one image per series with exact geometry (LPS mm) and a multiscale pyramid."
        ),
        metadata={"dataset": dataset.id, "formats": ", ".join(dataset.formats)},
        check_specs=check_specs(key, *INGESTION_CHECKS, blocking=True),
        backfill_policy=PARTITION_BACKFILL_POLICY,
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def ingested_scans(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        key = context.partition_key
        context.log.info(f"ingesting partition {key} of {dataset.id}")
        try:
            result = ingest_partition(dataset, key, storage.root_path(), INGESTED)
        except ImagingInputError as exc:
            raise input_failure(context, key, exc) from None
        for warning in result.warnings:
            context.log.warning(f"partition {key}: {warning}")
        context.log.info(f"partition {key}: {len(result.images)} image(s) written to {result.store_path}")
        return materialization(metadata=ingestion_metadata(result), check_results=check_results(ingestion_checks(result.images)))

    return ingested_scans


# stage asset name -> (upstream asset, stage function, asset checks, blocking asset checks, description)
STAGES = {
    PREPROCESSED: (INGESTED, preprocess_partition, ["n4_cv_not_increased"], [FOREGROUND_MASK_CHECK],
                   "The catalog recipe's steps (N4 bias correction, reorientation, resampling, intensity "
                   "normalisation, denoising) applied to each image; foreground mask as a label image."),
    REGISTERED: (PREPROCESSED, register_partition, ["folding_below_1_percent", "similarity_improved"], [BRAIN_MASK_CHECK],
                 "Each selected image aligned to the catalog atlas (or the patient's first scan): aligned "
                 "image, displacement field, transform, and the atlas brain mask in subject space."),
}


def build_stage_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition, name: str,
                      extra_deps: tuple[str, ...] = ()) -> AssetsDefinition:
    upstream, run_stage, check_names, blocking_names, description = STAGES[name]
    key = asset_key(dataset, name)

    @asset(
        key=key,
        deps=[asset_key(dataset, d) for d in (upstream, *extra_deps)],
        partitions_def=partitions,
        group_name=dataset.id,
        kinds={"zarr"},
        description=description,
        check_specs=check_specs(key, *check_names) + check_specs(key, *blocking_names, blocking=True),
        metadata={"dataset": dataset.id},
        backfill_policy=PARTITION_BACKFILL_POLICY,
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def stage_asset(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        partition = context.partition_key
        try:
            result = run_stage(dataset, partition, storage.root_path())
        except (ImagingInputError, FileNotFoundError) as exc:
            raise input_failure(context, partition, exc) from None
        context.log.info(f"partition {partition}: {len(result.images)} image(s) written to {result.store_path}")
        return materialization(metadata=stage_metadata(result), check_results=check_results(result.checks))

    return stage_asset


def build_registration_model_asset(dataset: DatasetConfig, gpu_tags: dict | None = None) -> AssetsDefinition:
    """The learned (VoxelMorph-style) registration model, trained on every preprocessed partition."""
    return build_model_asset(
        dataset, RegistrationModelTask(dataset), deps=[PREPROCESSED], gpu_tags=gpu_tags,
        description="VoxelMorph-style registration network (MONAI blocks; local NCC + smoothness), trained on "
                    "the cohort's preprocessed scans after affine alignment to the atlas; versioned by a hash "
                    "of code, training data and parameters, retrained only when that version changes.")


def build_medical_chain(dataset: DatasetConfig, gpu_tags: dict | None = None) -> DatasetChain:
    """``gpu_tags``: op tags of the steps in the ``gpu`` pool (the deployment's ``gpu_steps``)."""
    partitions = DynamicPartitionsDefinition(name=f"{dataset.id}__patients")
    assets = [build_ingestion_asset(dataset, partitions), build_stage_asset(dataset, partitions, PREPROCESSED)]
    if dataset.registration.method == "learned" and dataset.registration.target == "atlas":
        assets.append(build_registration_model_asset(dataset, gpu_tags))
        assets.append(build_stage_asset(dataset, partitions, REGISTERED, extra_deps=(REGISTRATION_MODEL,)))
    elif dataset.registration.target != "none":
        assets.append(build_stage_asset(dataset, partitions, REGISTERED))
    assets += build_segmentation_assets(dataset, partitions, gpu_tags=gpu_tags)
    assets += build_classification_assets(dataset, partitions, gpu_tags=gpu_tags)
    assets += build_report_assets(dataset, partitions, assets)
    job = define_asset_job(
        name=f"{dataset.id}__patient_job",
        selection=[a.key for a in assets if a.partitions_def is not None],
        partitions_def=partitions,
        description=f"Every per-patient stage of {dataset.id} (ingest, preprocess, register, segment, evaluate, "
                    "report) for one patient; trained models are used as they are, never retrained here.",
    )
    return DatasetChain(partitions, assets, job, build_inbox_sensor(dataset, partitions, job),
                        cohort_jobs(dataset, assets))


def cohort_jobs(dataset: DatasetConfig, assets: list[AssetsDefinition]) -> list[JobDefinition]:
    """``<id>__training_job`` (the model assets) and ``<id>__cohort_job`` (cohort summaries), when present."""
    return model_and_summary_jobs(dataset, assets, f"Cohort-wide summaries of {dataset.id}: evaluation over every "
                                                   "patient and the summary report.")
