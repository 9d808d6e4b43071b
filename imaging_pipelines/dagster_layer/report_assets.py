"""Report assets: one self-contained HTML page per patient (medical, partitioned) or per scene (remote
sensing), and one cohort / scene summary page per dataset listing failed partitions and linking every report.

Lineage: <every per-patient asset> -> patient_report -> cohort_report (medical);
scene_outputs -> scene_report -> cohort_report (remote sensing). Reports live under
``<root>/<dataset>/reports/``; the asset metadata carries a thumbnail (``preview``) and the path.
"""


from dagster import (
    AssetExecutionContext,
    AssetKey,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import (
    COHORT_EVALUATION, COHORT_REPORT, PATIENT_REPORT, SCENE_OUTPUTS, SCENE_REPORTS,
)
from imaging_pipelines.dagster_layer.resources import ImagingStorage
from imaging_pipelines.dagster_layer.automation import COHORT_AUTOMATION
from imaging_pipelines.dagster_layer.asset_helpers import (
    PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY, asset_key, input_failure,
)
from imaging_pipelines.dagster_layer.metadata import materialization, report_metadata
from imaging_pipelines.dagster_layer.operations import read_failures, reconcile_failures
from imaging_pipelines.core.errors import ImagingInputError



def build_patient_report_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition,
                               upstream: list[AssetKey]) -> AssetsDefinition:
    @asset(key=asset_key(dataset, PATIENT_REPORT), deps=upstream, partitions_def=partitions, group_name=dataset.id,
           backfill_policy=PARTITION_BACKFILL_POLICY, retry_policy=TRANSIENT_RETRY_POLICY,
           kinds={"html"}, description="One self-contained HTML page per patient: slice montages with the segmentation "
                                       "overlaid, registration checkerboard, preprocessing before/after, QC warnings, "
                                       "volumes (mL), evaluation and provenance (no identifying values).")
    def patient_report(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.report.patient import report_patient

        try:
            outcome = report_patient(dataset, context.partition_key, storage.root_path(), run_id=context.run_id)
        except (ImagingInputError, FileNotFoundError) as exc:
            raise input_failure(context, context.partition_key, exc) from None
        for warning in outcome.warnings:
            context.log.warning(f"partition {context.partition_key}: report: {warning}")
        return materialization(metadata=report_metadata(outcome))

    return patient_report


def build_scene_reports_asset(dataset: DatasetConfig) -> AssetsDefinition:
    @asset(key=asset_key(dataset, SCENE_REPORTS), deps=[asset_key(dataset, SCENE_OUTPUTS)], group_name=dataset.id,
           automation_condition=COHORT_AUTOMATION,
           kinds={"html"}, description="One self-contained HTML page per complete scene: composite map with the classes "
                                       "overlaid, class areas (ha), cloud and nodata fractions, IoU against the "
                                       "reference, provenance.")
    def scene_report(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.report.scene import report_scene

        from imaging_pipelines.remote_sensing.stages.scene_mosaic import scene_status

        folder = storage.root_path() / dataset.id / SCENE_OUTPUTS
        found = sorted(p.name for p in folder.iterdir() if (p / "summary.json").exists()) if folder.exists() else []
        scenes = [s for s in found if scene_status(folder / s).get("status") == "complete"]
        for scene in sorted(set(found) - set(scenes)):
            context.log.warning(f"scene {scene}: incomplete (not every tile segmented); its report is not rewritten")
        outcomes = [report_scene(dataset, scene, storage.root_path(), run_id=context.run_id) for scene in scenes]
        meta = report_metadata(outcomes[0]) if outcomes else {}
        meta.update(scenes=len(outcomes), reports=MetadataValue.json({s: o.path for s, o in zip(scenes, outcomes)}))
        return materialization(metadata=meta)

    return scene_report


def build_cohort_report_asset(dataset: DatasetConfig, upstream: list[AssetKey]) -> AssetsDefinition:
    @asset(key=asset_key(dataset, COHORT_REPORT), deps=upstream, group_name=dataset.id, kinds={"html"},
           automation_condition=COHORT_AUTOMATION,
           description="The dataset's summary page: tables and plots over every patient or scene, the failed "
                       "partitions with their errors (every failed run of the instance) and links to every report.")
    def cohort_report(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.report.cohort import cohort_report as write_cohort_report

        reconcile_failures(storage.root_path(), context.instance, dataset.id)  # runs no sensor saw
        failures = read_failures(storage.root_path(), dataset.id)
        outcome = write_cohort_report(dataset, storage.root_path(), failures=failures, run_id=context.run_id)
        meta = report_metadata(outcome)
        meta["failed_partitions"] = len(failures)
        return materialization(metadata=meta)

    return cohort_report


def build_report_assets(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition,
                        assets: list[AssetsDefinition]) -> list[AssetsDefinition]:
    """The report assets of a chain, given the chain's other assets."""
    keys = [a.key for a in assets]
    if dataset.domain == "medical":
        per_patient = [a.key for a in assets if a.partitions_def is not None]
        summaries = [k for k in keys if a_is(k, COHORT_EVALUATION)]
        return [build_patient_report_asset(dataset, partitions, per_patient),
                build_cohort_report_asset(dataset, [asset_key(dataset, PATIENT_REPORT), *summaries])]
    if not any(a_is(k, SCENE_OUTPUTS) for k in keys):
        return []
    return [build_scene_reports_asset(dataset), build_cohort_report_asset(dataset, [asset_key(dataset, SCENE_REPORTS)])]


def a_is(key: AssetKey, name: str) -> bool:
    return key.path[-1] == name
