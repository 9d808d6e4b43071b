"""Assets, partitions, jobs and sensor of one remote-sensing dataset (one chain per catalog entry).

Lineage: scene_tiles -> analysis_ready_tiles -> land_cover_model -> tile_segmentation -> scene_outputs; with
``classification: {enabled: true}`` also analysis_ready_tiles -> classifier_model -> classification ->
classification_evaluation (:mod:`imaging_pipelines.dagster_layer.classification_assets`).
Tile assets are partitioned by ``<scene>__r<row>_c<col>`` (a DynamicPartitionsDefinition the inbox sensor
fills); the model and the scene outputs are unpartitioned and read the tile stores themselves (``deps``
only), so no step loads every partition into memory.
"""



from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    DynamicPartitionsDefinition,
    MaterializeResult,
    MetadataValue,
    asset,
    define_asset_job,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import PREPARED, SCENE_OUTPUTS, TILE_MODEL, TILE_SEGMENTATION, TILES
from imaging_pipelines.dagster_layer.automation import COHORT_AUTOMATION
from imaging_pipelines.dagster_layer.asset_helpers import (
    GPU_POOL, PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY, DatasetChain, asset_key, check_results, check_specs,
    input_failure, model_and_summary_jobs,
)
from imaging_pipelines.dagster_layer.classification_assets import build_classification_assets
from imaging_pipelines.dagster_layer.inbox_sensors import build_inbox_sensor
from imaging_pipelines.dagster_layer.metadata import materialization, rows_table, stage_metadata
from imaging_pipelines.dagster_layer.model_assets import build_model_asset
from imaging_pipelines.dagster_layer.report_assets import build_report_assets
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.models.outcome import MetricCheck
from imaging_pipelines.remote_sensing.stages.tile_model import TileModelTask

SCENE_CHECKS = ("cogs_valid", "model_beats_baseline_on_test_tiles")  # the second only with a trained model
_DESCRIPTIONS = {
    TILES: "One tile of a scene (window = core + overlap) with every acquisition date read onto the scene grid "
           "(bands resampled to the grid band's resolution, other CRSs reprojected): Zarr (time, band, y, x) "
           "float32 DN with CF grid_mapping, plus the reference labels when the scene has them.",
    PREPARED: "Analysis-ready tile: reflectance, nodata and cloud/shadow masks (QA bits or threshold heuristic), "
              "dates co-registered by phase correlation (shift in metadata), per-pixel median composite over "
              "clear observations, and the catalog's spectral indices.",
    TILE_SEGMENTATION: "Per-tile land-cover classes from the 2D U-Net (sliding window with overlap over the tile "
                       "window) and the Otsu-on-index baseline, with IoU against the reference when labelled.",
}


def build_tile_asset(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition, name: str, deps: list[str],
                     checks: list[str], uses_device: bool = False, gpu_tags: dict | None = None) -> AssetsDefinition:
    from imaging_pipelines.remote_sensing.stages.tile_prepare import prepare_tile
    from imaging_pipelines.remote_sensing.stages.tile_segment import segment_tile
    from imaging_pipelines.remote_sensing.stages.tile_ingest import ingest_tile

    run_stage = {TILES: ingest_tile, PREPARED: prepare_tile, TILE_SEGMENTATION: segment_tile}[name]
    key = asset_key(dataset, name)

    @asset(key=key, deps=[asset_key(dataset, d) for d in deps], partitions_def=partitions, group_name=dataset.id,
           kinds={"geotiff", "zarr"} if name == TILES else {"zarr"}, description=_DESCRIPTIONS[name],
           check_specs=check_specs(key, *checks), metadata={"dataset": dataset.id}, pool=GPU_POOL if uses_device else None,
           op_tags=gpu_tags if uses_device else None,
           backfill_policy=PARTITION_BACKFILL_POLICY, retry_policy=TRANSIENT_RETRY_POLICY)
    def tile_asset(context: AssetExecutionContext, storage: ImagingStorage, torch_device: TorchDevice) -> MaterializeResult:
        partition = context.partition_key
        try:
            extra = {"device": torch_device.device} if uses_device else {}
            result = run_stage(dataset, partition, storage.root_path(), **extra)
        except (ImagingInputError, FileNotFoundError, ValueError) as exc:
            raise input_failure(context, partition, exc) from None
        for note in result.notes:
            context.log.info(f"tile {partition}: {note}")
        return materialization(
            metadata=stage_metadata(result),
            check_results=check_results(result.checks))

    return tile_asset


def build_tile_model_asset(dataset: DatasetConfig, gpu_tags: dict | None = None) -> AssetsDefinition:
    training = dataset.remote_sensing.segmentation.training
    return build_model_asset(
        dataset, TileModelTask(dataset), deps=[PREPARED], gpu_tags=gpu_tags,
        check=MetricCheck("validation_iou_above_threshold", "mean_validation_iou", training.min_validation_iou,
                          missing_passes=True),  # no validation tile: nothing to measure
        description="MONAI 2D U-Net trained on the cores of the labelled analysis-ready tiles of the train split "
                    "(Dice + cross-entropy with inverse-frequency class weights, random patches, flips and "
                    "rotations); versioned by a hash of code, training tiles and parameters.")


def build_scene_outputs_asset(dataset: DatasetConfig) -> AssetsDefinition:
    key = asset_key(dataset, SCENE_OUTPUTS)

    @asset(key=key, deps=[asset_key(dataset, TILE_SEGMENTATION)], group_name=dataset.id, kinds={"geotiff", "geojson"},
           automation_condition=COHORT_AUTOMATION,
           check_specs=check_specs(key, *SCENE_CHECKS[:1 + (dataset.remote_sensing.segmentation.method == "unet")]),
           description="Per scene: classes and analysis-ready composite stitched into Cloud-Optimized GeoTIFFs, class "
                       "polygons (GeoJSON, scene CRS), class areas in hectares; IoU of model and baseline pooled over "
                       "the held-out test tiles.")
    def scene_outputs(context: AssetExecutionContext, storage: ImagingStorage):
        from imaging_pipelines.remote_sensing.stages.scene_mosaic import build_scene_outputs, model_beats_baseline, scene_row

        outcome = build_scene_outputs(dataset, storage.root_path(), log=context.log.info)
        done = [s for s in outcome.scenes if s.complete]
        rows = [scene_row(s) for s in outcome.scenes]  # incomplete scenes: status says so, no fraction or area
        test = outcome.evaluation.get("test", {})
        checks = [
            AssetCheckResult(check_name="cogs_valid", passed=all(s.cog_valid for s in done),
                             description="every stitched output validates as a COG (rio-cogeo)",
                             metadata={"errors": MetadataValue.json([e for s in done for e in s.cog_errors])}),
            AssetCheckResult(check_name="model_beats_baseline_on_test_tiles", passed=model_beats_baseline(test),
                             description="the model's IoU beats the Otsu baseline for every class on the test tiles",
                             metadata={"test_iou": MetadataValue.json(test)})]
        return materialization(
            metadata={"scenes": rows_table(rows) if rows else "none", "scenes_complete": len(done),
                      "scenes_incomplete": len(outcome.scenes) - len(done),
                      "evaluation_iou": MetadataValue.json(outcome.evaluation),
                      "evaluation_scores": MetadataValue.json(outcome.scores),  # + accuracy, mean IoU, majority
                      "files": MetadataValue.json({s.scene: s.files for s in done}),
                      "runtime_s": round(outcome.runtime_s, 2)},
            check_results=checks[:1 + (dataset.remote_sensing.segmentation.method == "unet")])

    return scene_outputs


def build_remote_sensing_chain(dataset: DatasetConfig, gpu_tags: dict | None = None) -> DatasetChain:
    """``gpu_tags``: op tags of the steps in the ``gpu`` pool (the deployment's ``gpu_steps``)."""
    partitions = DynamicPartitionsDefinition(name=f"{dataset.id}__tiles")
    seg = dataset.remote_sensing.segmentation
    assets = [build_tile_asset(dataset, partitions, TILES, [], ["tile_has_valid_pixels"]),
              build_tile_asset(dataset, partitions, PREPARED, [TILES], ["coregistration_shifts_within_limit"])]
    if seg.method != "none":
        deps = [PREPARED]
        if seg.method == "unet":
            assets.append(build_tile_model_asset(dataset, gpu_tags))
            deps.append(TILE_MODEL)
        checks = ["mask_not_empty_where_reference_is"] if seg.labels.source != "none" else []
        assets.append(build_tile_asset(dataset, partitions, TILE_SEGMENTATION, deps, checks, uses_device=True,
                                       gpu_tags=gpu_tags))
        assets.append(build_scene_outputs_asset(dataset))
        assets += build_report_assets(dataset, partitions, assets)
    assets += build_classification_assets(dataset, partitions, gpu_tags)
    other_jobs = model_and_summary_jobs(dataset, assets, f"Stitch, vectorise and measure every complete scene of "
                                        f"{dataset.id}, write the scene reports and the summary page (and evaluate "
                                        "the tile classifier when there is one).")
    job = define_asset_job(name=f"{dataset.id}__tile_job", partitions_def=partitions,
                           selection=[a.key for a in assets if a.partitions_def is not None],
                           description=f"Every per-tile stage of {dataset.id} for one tile; trained models are used "
                                       "as they are, never retrained here.")
    return DatasetChain(partitions, assets, job, build_inbox_sensor(dataset, partitions, job), other_jobs)
