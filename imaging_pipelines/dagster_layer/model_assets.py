"""One asset builder and one metadata builder for every trained-model asset (registration, segmentation,
land cover): the asset body is :func:`imaging_pipelines.models.protocol.train_or_reuse` plus wiring.

A model asset is unpartitioned, names its training stage as ``deps`` only (the task reads the stores
itself), runs in the ``gpu`` pool on the :class:`TorchDevice` resource, and reports its version as the
Dagster data version, so downstream assets see a new model only when code, data or parameters changed.
Per-model differences are data: the task, the description and the optional :class:`MetricCheck`.

Metadata keys (every model): ``model_version``, ``trained_now``, ``training_curve``, ``model_path``,
``runtime_s`` (seconds), then the task's metrics (e.g. ``best_validation_dice``, ``mean_validation_iou``,
``training_images``, ``final_loss``).
"""

from typing import Any

from dagster import (
    AssetCheckResult,
    AssetExecutionContext,
    AssetsDefinition,
    DataVersion,
    MaterializeResult,
    MetadataValue,
    asset,
)

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.dagster_layer.asset_helpers import (
    GPU_POOL, asset_key, check_result, check_specs, input_failure,
)
from imaging_pipelines.dagster_layer.resources import ImagingStorage, TorchDevice
from imaging_pipelines.models.outcome import MetricCheck, ModelOutcome
from imaging_pipelines.models.protocol import ModelTask, train_or_reuse


def model_metadata(outcome: ModelOutcome) -> dict[str, Any]:
    """The materialisation metadata of a model asset (dict- and list-valued metrics as JSON)."""
    metrics = {k: MetadataValue.json(v) if isinstance(v, (dict, list)) else v for k, v in outcome.metrics.items()}
    return {
        "model_version": outcome.version,
        "trained_now": outcome.trained,
        **metrics,
        "training_curve": MetadataValue.json(outcome.curve),
        "model_path": MetadataValue.path(outcome.path),
        "runtime_s": round(outcome.runtime_s, 2),
    }


def model_check_result(check: MetricCheck, outcome: ModelOutcome) -> AssetCheckResult:
    """``check`` evaluated on ``outcome``, as a Dagster check result."""
    return check_result(check.name, check.evaluate(outcome))


def build_model_asset(dataset: DatasetConfig, task: ModelTask[Any], deps: list[str], description: str,
                      check: MetricCheck | None = None, gpu_tags: dict | None = None) -> AssetsDefinition:
    """The asset ``[<dataset>, <task.name>]``: train (or reuse) ``task``'s model; ``deps``: asset names of
    ``dataset`` it trains on; ``check``: the quality gate, if any; ``gpu_tags``: op tags of ``gpu`` pool steps."""
    key = asset_key(dataset, task.name)

    @asset(key=key, deps=[asset_key(dataset, d) for d in deps], group_name=dataset.id, kinds={"pytorch"},
           pool=GPU_POOL, op_tags=gpu_tags, check_specs=check_specs(key, check.name) if check else None,
           description=description)
    def model_asset(context: AssetExecutionContext, storage: ImagingStorage, torch_device: TorchDevice) -> MaterializeResult:
        try:
            outcome = train_or_reuse(task, storage.root_path(), torch_device.device, log=context.log.info)
        except ValueError as exc:
            raise input_failure(context, None, exc) from None
        context.log.info(f"{task.what} {outcome.version}: {'trained' if outcome.trained else 'reused'}")
        return MaterializeResult(metadata=model_metadata(outcome), data_version=DataVersion(outcome.version),
                                 check_results=[model_check_result(check, outcome)] if check else None)

    return model_asset
