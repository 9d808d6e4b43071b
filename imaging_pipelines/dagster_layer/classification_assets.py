"""The image-classification assets of one dataset (catalog ``classification: {enabled: true}``), both domains:

- ``classifier_model`` (unpartitioned, the ``models/`` protocol through :func:`build_model_asset`): trained
  on the labelled train-split partitions, checked against ``training.min_validation_accuracy``;
- ``classification`` (per partition): class probabilities and the predicted class in metadata, a Grad-CAM
  saliency overlay (preview in metadata, PNG beside the JSON record);
- ``classification_evaluation`` (unpartitioned, a cohort summary): accuracy, ROC AUC, confusion matrix and
  calibration per split, the majority-class accuracy, and the classification report with the overlays.
"""


from dagster import (
    AssetCheckResult, AssetCheckSeverity, AssetExecutionContext, AssetsDefinition, DynamicPartitionsDefinition, MaterializeResult,
    MetadataValue, asset,
)

from imaging_pipelines.classify.stages.model import ClassifierTask
from imaging_pipelines.classify.stages.source import ClassificationSource
from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import CLASSIFICATION, CLASSIFICATION_EVALUATION, CLASSIFIER_MODEL
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.dagster_layer.asset_helpers import (
    GPU_POOL, PARTITION_BACKFILL_POLICY, TRANSIENT_RETRY_POLICY, asset_key, check_results, check_specs, input_failure,
)
from imaging_pipelines.dagster_layer.automation import COHORT_AUTOMATION
from imaging_pipelines.dagster_layer.metadata import materialization
from imaging_pipelines.dagster_layer.model_assets import build_model_asset
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.models.outcome import MetricCheck


def classification_source(dataset: DatasetConfig) -> ClassificationSource:
    """Radiographs of ingested patients (medical) or analysis-ready tiles (remote sensing)."""
    if dataset.domain == "medical":
        from imaging_pipelines.medical.stages.classification import RadiographSource

        return RadiographSource(dataset)
    from imaging_pipelines.remote_sensing.stages.tile_classification import TileSource

    return TileSource(dataset)


def build_classifier_model_asset(dataset: DatasetConfig, source: ClassificationSource,
                                 gpu_tags: dict | None = None) -> AssetsDefinition:
    training = dataset.classification.training
    return build_model_asset(
        dataset, ClassifierTask(source), deps=[source.input_stage], gpu_tags=gpu_tags,
        check=MetricCheck("validation_accuracy_above_threshold", "validation_accuracy",
                          training.min_validation_accuracy, missing_passes=True),  # no validation partition
        description=f"MONAI {training.architecture} image classifier ({', '.join(dataset.classification.class_names)}) "
                    "trained on the labelled partitions of the train split (cross-entropy with inverse-frequency "
                    "class weights, flips); versioned by a hash of code, training images and parameters.")


def build_classification_asset(dataset: DatasetConfig, source: ClassificationSource,
                               partitions: DynamicPartitionsDefinition, gpu_tags: dict | None = None) -> AssetsDefinition:
    from imaging_pipelines.report.preview import preview_markdown

    key = asset_key(dataset, CLASSIFICATION)
    checks = ["prediction_matches_reference"]

    @asset(key=key, deps=[asset_key(dataset, source.input_stage), asset_key(dataset, CLASSIFIER_MODEL)],
           partitions_def=partitions, group_name=dataset.id, kinds={"pytorch", "json"}, pool=GPU_POOL,
           op_tags=gpu_tags, check_specs=check_specs(key, *checks), backfill_policy=PARTITION_BACKFILL_POLICY,
           retry_policy=TRANSIENT_RETRY_POLICY,
           description="Class probabilities and the predicted class of the partition's image by the current "
                       "classifier, with a Grad-CAM saliency overlay of the predicted class.")
    def classification(context: AssetExecutionContext, storage: ImagingStorage, torch_device: TorchDevice) -> MaterializeResult:
        from imaging_pipelines.classify.stages.inference import classify_partition
        from imaging_pipelines.core.storage import as_upath

        partition = context.partition_key
        try:
            result = classify_partition(source, partition, storage.root_path(), torch_device.device)
        except (ImagingInputError, FileNotFoundError, ValueError) as exc:
            raise input_failure(context, partition, exc) from None
        extra = result.extra
        meta = {"predicted_class": extra["predicted"], "probabilities": MetadataValue.json(extra["probabilities"]),
                "reference_class": extra["reference"] or "unlabelled", "split": extra["split"],
                "model_version": extra["model_version"] or "", "path": MetadataValue.path(result.store_path),
                "runtime_s": round(result.runtime_s, 3)}
        if "saliency_png" in extra:
            meta["saliency"] = MetadataValue.md(preview_markdown(as_upath(extra["saliency_png"]).read_bytes(), "Grad-CAM"))
            meta["saliency_path"] = MetadataValue.path(extra["saliency_png"])
        return materialization(metadata=meta, check_results=check_results(result.checks))

    return classification


def build_classification_evaluation_asset(dataset: DatasetConfig) -> AssetsDefinition:
    key = asset_key(dataset, CLASSIFICATION_EVALUATION)

    @asset(key=key, deps=[asset_key(dataset, CLASSIFICATION)], group_name=dataset.id, kinds={"html"},
           automation_condition=COHORT_AUTOMATION, check_specs=check_specs(key, "test_accuracy_above_majority"),
           description="Accuracy, ROC AUC, confusion matrix and calibration (reliability bins, ECE) per split "
                       "(train, validation, test) of the stored classifications; the classification report.")
    def classification_evaluation(context: AssetExecutionContext, storage: ImagingStorage) -> MaterializeResult:
        from imaging_pipelines.classify.stages.evaluation import evaluate_dataset

        try:
            evaluation, report = evaluate_dataset(dataset, storage.root_path())
        except (ValueError, ImagingInputError) as exc:
            raise input_failure(context, None, exc) from None
        test = evaluation["test"]
        judged = test["accuracy"] is not None and test["majority_accuracy"] is not None
        check = AssetCheckResult(
            check_name="test_accuracy_above_majority", passed=bool(judged and test["accuracy"] > test["majority_accuracy"]),
            description=(f"test accuracy {test['accuracy']} vs majority-class accuracy {test['majority_accuracy']}"
                         if judged else "no labelled test partition (or no train labels): not judged"),
            metadata={"test_images": test["n"]}, severity=AssetCheckSeverity.ERROR if judged else AssetCheckSeverity.WARN)
        meta = {f"{split}_{name}": ev[name] for split, ev in evaluation.items()
                for name in ("n", "accuracy", "roc_auc", "majority_accuracy") if ev[name] is not None}
        meta.update({"evaluation": MetadataValue.json(evaluation), "report_path": MetadataValue.path(report)})
        return materialization(metadata=meta, check_results=[check])

    return classification_evaluation


def build_classification_assets(dataset: DatasetConfig, partitions: DynamicPartitionsDefinition,
                                gpu_tags: dict | None = None) -> list[AssetsDefinition]:
    """The three classification assets, or none when the catalog's classification block is off."""
    if not dataset.classification.enabled:
        return []
    source = classification_source(dataset)
    return [build_classifier_model_asset(dataset, source, gpu_tags),
            build_classification_asset(dataset, source, partitions, gpu_tags),
            build_classification_evaluation_asset(dataset)]
