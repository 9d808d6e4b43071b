"""Assets, partitions, job and sensor of one medical dataset (one chain per catalog entry)."""


import json
from dataclasses import dataclass, field

from dagster import (
    AssetCheckResult,
    AssetCheckSpec,
    AssetExecutionContext,
    AssetKey,
    DataVersion,
    AssetsDefinition,
    DefaultSensorStatus,
    DynamicPartitionsDefinition,
    Failure,
    JobDefinition,
    MaterializeResult,
    MetadataValue,
    RunRequest,
    SensorDefinition,
    SensorEvaluationContext,
    SensorResult,
    SkipReason,
    TableColumn,
    TableRecord,
    TableSchema,
    asset,
    define_asset_job,
    sensor,
)

from imaging_pipelines.catalog import DatasetConfig
from imaging_pipelines.dagster_layer.operations import PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.dagster_layer.report_assets import build_report_assets
from imaging_pipelines.dagster_layer.segmentation_assets import build_segmentation_assets
from imaging_pipelines.errors import ImagingInputError
from imaging_pipelines.inbox import diff_inbox, list_inbox_files
from imaging_pipelines.ingest import PartitionIngestion, ingest_partition
from imaging_pipelines.stages.common import PREPROCESSED, REGISTERED, StageResult
from imaging_pipelines.stages.preprocessing import preprocess_partition
from imaging_pipelines.stages.registration import register_partition
from imaging_pipelines.stages.registration_model import MODEL_ASSET, train_registration_model

INGEST_ASSET = "ingested_scans"

_SERIES_SCHEMA = TableSchema(
    columns=[
        TableColumn("image", "string"),
        TableColumn("modality", "string"),
        TableColumn("shape", "string", description="array shape (t,) z, y, x"),
        TableColumn("spacing_mm", "string", description="voxel spacing x, y, z in mm"),
        TableColumn("orientation", "string", description="RAS-style axis code of i, j, k"),
        TableColumn("warnings", "int"),
    ]
)


@dataclass
class DatasetChain:
    """The Dagster objects of one dataset (medical or remote sensing)."""

    partitions: DynamicPartitionsDefinition
    assets: list[AssetsDefinition]
    job: JobDefinition  # the per-patient job (every partitioned asset); the sensor launches it
    sensor: SensorDefinition
    other_jobs: list[JobDefinition]  # training (models) and cohort (cohort-wide summaries) jobs, when there are any

    @property
    def jobs(self) -> list[JobDefinition]:
        return [self.job, *self.other_jobs]


def ingestion_metadata(result: PartitionIngestion) -> dict:
    rows = result.series_rows()
    first = next(iter(result.images.values()))
    return {
        "series_count": len(result.images),
        "series": MetadataValue.table([TableRecord(r) for r in rows], schema=_SERIES_SCHEMA),
        "shape": MetadataValue.text("x".join(str(s) for s in first.array.shape)),
        "spacing_mm": MetadataValue.text(", ".join(f"{s:.4g}" for s in first.spacing)),
        "orientation": MetadataValue.text(first.orientation_code()),
        "warnings": MetadataValue.md("\n".join(f"- {w}" for w in result.warnings) or "none"),
        "warning_count": len(result.warnings),
        "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
        "storage_path": MetadataValue.path(result.store_path),
        **preview_metadata(result.store_path),
    }


def preview_metadata(store_path: str) -> dict:
    """``{"preview": <markdown with an embedded PNG thumbnail>}`` of a stage store (empty when none)."""
    from imaging_pipelines.stages.preview import preview_markdown, store_preview

    markdown = preview_markdown(store_preview(store_path))
    return {"preview": MetadataValue.md(markdown)} if markdown else {}


def build_ingestion_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition) -> AssetsDefinition:
    @asset(
        key=AssetKey([dataset.id, INGEST_ASSET]),
        partitions_def=partitions,
        group_name=dataset.id,
        kinds={"dicom", "zarr"} if "dicom" in dataset.formats else {"nifti", "zarr"},
        description=(
            f"Scans of one (pseudonymous) patient from `{dataset.id}`'s inbox, as an OME-Zarr 0.5 store: "
            "one image per series with exact geometry (LPS mm) and a multiscale pyramid."
        ),
        metadata={"dataset": dataset.id, "formats": ", ".join(dataset.formats)},
        backfill_policy=PARTITION_BACKFILL_POLICY,
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def ingested_scans(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        key = context.partition_key
        context.log.info(f"ingesting partition {key} of {dataset.id}")
        try:
            result = ingest_partition(dataset, key, storage.root_path(), INGEST_ASSET)
        except ImagingInputError as exc:
            context.log.error(f"partition {key}: {exc}")
            raise Failure(description=f"partition {key}: {exc}", allow_retries=False) from None
        for warning in result.warnings:
            context.log.warning(f"partition {key}: {warning}")
        context.log.info(f"partition {key}: {len(result.images)} image(s) written to {result.store_path}")
        return MaterializeResult(metadata=ingestion_metadata(result))

    return ingested_scans


def _format(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def rows_table(rows: list[dict]) -> MetadataValue:
    """A Dagster table from plain row dicts: keys every row has become typed columns; the others are
    joined into a ``figures`` text column (``name=value, ...``)."""
    common = [k for k in (rows[0] if rows else {}) if all(k in r for r in rows)]
    columns = [TableColumn(k, "float" if isinstance(rows[0][k], float) else "int" if isinstance(rows[0][k], int)
                           else "string") for k in common]
    has_rest = any(set(r) - set(common) for r in rows)
    if has_rest:
        columns.append(TableColumn("figures", "string"))
    records = []
    for r in rows:
        values = {k: r[k] if isinstance(r[k], (int, float, str, bool)) else str(r[k]) for k in common}
        if has_rest:
            values["figures"] = ", ".join(f"{k}={_format(v)}" for k, v in r.items() if k not in common)
        records.append(TableRecord(values))
    return MetadataValue.table(records, schema=TableSchema(columns=columns))


def stage_metadata(result: StageResult) -> dict:
    return {
        "images": len(result.images),
        "image_names": MetadataValue.text(", ".join(result.images) or "none"),
        "quality": rows_table(result.rows),
        "notes": MetadataValue.md("\n".join(f"- {n}" for n in result.notes) or "none"),
        "runtime_s": round(result.runtime_s, 3),
        "storage_path": MetadataValue.path(result.store_path),
        **preview_metadata(result.store_path),
    }


# stage asset name -> (upstream asset, stage function, asset checks, description)
STAGES = {
    PREPROCESSED: (INGEST_ASSET, preprocess_partition, ["n4_cv_not_increased"],
                   "The catalog recipe's steps (N4 bias correction, reorientation, resampling, intensity "
                   "normalisation, denoising) applied to each image; foreground mask as a label image."),
    REGISTERED: (PREPROCESSED, register_partition, ["folding_below_1_percent", "similarity_improved"],
                 "Each selected image aligned to the catalog atlas (or the patient's first scan): aligned "
                 "image, displacement field, transform, and the atlas brain mask in subject space."),
}


def build_stage_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition, name: str,
                      extra_deps: tuple[str, ...] = ()) -> AssetsDefinition:
    upstream, run_stage, check_names, description = STAGES[name]
    key = AssetKey([dataset.id, name])

    @asset(
        key=key,
        deps=[AssetKey([dataset.id, d]) for d in (upstream, *extra_deps)],
        partitions_def=partitions,
        group_name=dataset.id,
        kinds={"zarr"},
        description=description,
        check_specs=[AssetCheckSpec(c, asset=key, description=c.replace("_", " ")) for c in check_names],
        metadata={"dataset": dataset.id},
        backfill_policy=PARTITION_BACKFILL_POLICY,
        retry_policy=TRANSIENT_RETRY_POLICY,
    )
    def stage_asset(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        partition = context.partition_key
        try:
            result = run_stage(dataset, partition, storage.root_path())
        except (ImagingInputError, FileNotFoundError) as exc:
            context.log.error(f"partition {partition}: {exc}")
            raise Failure(description=f"partition {partition}: {exc}", allow_retries=False) from None
        context.log.info(f"partition {partition}: {len(result.images)} image(s) written to {result.store_path}")
        return MaterializeResult(
            metadata=stage_metadata(result),
            check_results=[
                AssetCheckResult(check_name=n, passed=c.passed, description=c.description, metadata=c.metadata)
                for n, c in result.checks.items()
            ],
        )

    return stage_asset


def build_registration_model_asset(dataset: DatasetConfig) -> AssetsDefinition:
    """The learned (VoxelMorph-style) registration model, trained on every preprocessed partition."""

    @asset(
        key=AssetKey([dataset.id, MODEL_ASSET]),
        deps=[AssetKey([dataset.id, PREPROCESSED])],
        group_name=dataset.id,
        kinds={"pytorch"},
        description="VoxelMorph-style registration network (MONAI blocks; local NCC + smoothness), trained on "
                    "the cohort's preprocessed scans after affine alignment to the atlas; versioned by a hash "
                    "of code, training data and parameters, retrained only when that version changes.",
    )
    def registration_model(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        outcome = train_registration_model(dataset, storage.root_path(), log=context.log.info)
        context.log.info(f"registration model {outcome.version}: {'trained' if outcome.trained else 'reused'}")
        return MaterializeResult(
            metadata={
                "model_version": outcome.version,
                "trained_now": outcome.trained,
                "training_images": outcome.n_training_images,
                "final_loss": outcome.training_curve[-1] if outcome.training_curve else None,
                "training_curve": MetadataValue.json(outcome.training_curve),
                "model_path": MetadataValue.path(outcome.path),
                "runtime_s": round(outcome.runtime_s, 2),
            },
            data_version=DataVersion(outcome.version),
        )

    return registration_model


@dataclass
class InboxScan:
    """What one scan of an inbox found, compared with the previous scan's ``state``.

    ``keys``: every partition key the inbox holds now; ``requests``: (partition key, digest of its files)
    for each partition with new, changed or removed files, the partitions to (re)run; ``state``: the new
    state to keep (JSON-serialisable; hashes of paths with size and mtime, never the paths themselves);
    ``warnings`` / ``errors``: messages to log (inbox-relative paths and scene names only); ``digests``:
    the digest of every current partition's files (what a run key ``<key>:<digest>`` is made of)."""

    keys: list[str]
    requests: list[tuple[str, str]]
    state: dict
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    digests: dict[str, str] = field(default_factory=dict)


def scan_patients(dataset: DatasetConfig, previous_state: dict | None) -> InboxScan:
    """Scan a medical dataset's inbox: patients (pseudonymous keys) now present and those whose files are
    new, changed or removed since ``previous_state`` (only new or changed files have their headers read)."""
    changes = diff_inbox(previous_state or {}, list_inbox_files(dataset.inbox, dataset.formats, dataset.label_suffixes))
    warnings = []
    if changes.unassigned:
        warnings.append(
            f"{len(changes.unassigned)} inbox file(s) belong to no patient (not DICOM, no DICOM beside them): "
            + ", ".join(f.relpath for f in changes.unassigned[:10])
        )
    digests = {k: _patient_digest(changes.state, k) for k in changes.current_patients}
    requests = [(k, digests[k]) for k in changes.changed_patients]
    return InboxScan(list(changes.current_patients), requests, changes.state, warnings, digests=digests)


def build_inbox_sensor(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition, job) -> SensorDefinition:
    @sensor(
        name=f"{dataset.id}__inbox_sensor",
        job=job,
        minimum_interval_seconds=dataset.sensor.interval_seconds,
        default_status=DefaultSensorStatus.RUNNING if dataset.sensor.running_by_default else DefaultSensorStatus.STOPPED,
        description=f"Watches {dataset.id}'s inbox; adds a partition per new patient and re-ingests patients whose files changed.",
    )
    def inbox_sensor(context: SensorEvaluationContext):
        scan = scan_patients(dataset, json.loads(context.cursor) if context.cursor else {})
        return inbox_sensor_result(context, scan, partitions, "no new or changed files")

    return inbox_sensor


def log_scan_messages(log, scan: InboxScan) -> None:
    """An inbox scan's warnings and errors into a Dagster log (sensor or schedule)."""
    for message in scan.warnings:
        log.warning(message)
    for message in scan.errors:
        log.error(message)


def inbox_sensor_result(context: SensorEvaluationContext, scan: InboxScan, partitions: DynamicPartitionsDefinition,
                        skip_message: str) -> SensorResult:
    """The sensor's answer to a scan: partitions to add, one run per new or changed partition (run key =
    partition key + digest of its files), and the scan state as the cursor."""
    log_scan_messages(context.log, scan)
    existing = set(context.instance.get_dynamic_partitions(partitions.name))
    new_keys = [k for k in scan.keys if k not in existing]
    cursor = json.dumps(scan.state, sort_keys=True)
    if not scan.requests and not new_keys:
        return SensorResult(skip_reason=SkipReason(skip_message), cursor=cursor)
    return SensorResult(
        run_requests=[RunRequest(partition_key=k, run_key=f"{k}:{digest}") for k, digest in scan.requests],
        dynamic_partitions_requests=[partitions.build_add_request(new_keys)] if new_keys else [],
        cursor=cursor,
    )


def _patient_digest(state: dict[str, list[str]], patient: str) -> str:
    import hashlib

    items = sorted((tok, sig) for tok, (sig, owner) in state.items() if owner == patient)
    return hashlib.sha256(json.dumps(items).encode()).hexdigest()[:12]


def build_medical_chain(dataset: DatasetConfig, gpu_tags: dict | None = None) -> DatasetChain:
    """``gpu_tags``: op tags of the steps in the ``gpu`` pool (the deployment's ``gpu_steps``)."""
    partitions = DynamicPartitionsDefinition(name=f"{dataset.id}__patients")
    assets = [build_ingestion_asset(dataset, partitions), build_stage_asset(dataset, partitions, PREPROCESSED)]
    if dataset.registration.method == "learned" and dataset.registration.target == "atlas":
        assets.append(build_registration_model_asset(dataset))
        assets.append(build_stage_asset(dataset, partitions, REGISTERED, extra_deps=(MODEL_ASSET,)))
    elif dataset.registration.target != "none":
        assets.append(build_stage_asset(dataset, partitions, REGISTERED))
    assets += build_segmentation_assets(dataset, partitions, gpu_tags=gpu_tags)
    assets += build_report_assets(dataset, partitions, assets)
    job = define_asset_job(
        name=f"{dataset.id}__patient_job",
        selection=[a.key for a in assets if a.partitions_def is not None],
        partitions_def=partitions,
        description=f"Every per-patient stage of {dataset.id} (ingest, preprocess, register, segment, evaluate, "
                    "report) for one patient; trained models are used as they are, never retrained here.",
    )
    return DatasetChain(partitions, assets, job, build_inbox_sensor(dataset, partitions, job), cohort_jobs(dataset, assets))


def cohort_jobs(dataset: DatasetConfig, assets: list[AssetsDefinition]) -> list[JobDefinition]:
    """``<id>__training_job`` (the model assets) and ``<id>__cohort_job`` (cohort summaries), when present."""
    from imaging_pipelines.dagster_layer.report_assets import COHORT_REPORT
    from imaging_pipelines.dagster_layer.segmentation_assets import COHORT_EVALUATION

    unpartitioned = [a.key for a in assets if a.partitions_def is None]
    summaries = [k for k in unpartitioned if k.path[-1] in (COHORT_EVALUATION, COHORT_REPORT)]
    models = [k for k in unpartitioned if k not in summaries]
    jobs = []
    if models:
        jobs.append(define_asset_job(f"{dataset.id}__training_job", selection=models,
                                     description=f"Train (or reuse, when nothing changed) the models of {dataset.id}."))
    if summaries:
        jobs.append(define_asset_job(f"{dataset.id}__cohort_job", selection=summaries,
                                     description=f"Cohort-wide summaries of {dataset.id}: evaluation over every patient and the summary report."))
    return jobs
