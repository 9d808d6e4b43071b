"""The imported (pretrained) segmentation model of a dataset as an observable source asset.

``[<dataset>, imported_model]`` is upstream of the dataset's ``segmentation`` asset. Observing it checks the
model's files and reports their content hash as its Dagster data version (see
:mod:`imaging_pipelines.medical.segment.model_files`), so every mask records which model files made it, and
replacing a checkpoint gives a new data version that marks the masks stale. Nothing is downloaded; a missing
or unreadable model file fails the observation with the file named.
"""

from dagster import DataVersion, MetadataValue, ObserveResult, SourceAsset, observable_source_asset

from imaging_pipelines.config.catalog import DatasetConfig
from imaging_pipelines.core.asset_names import IMPORTED_MODEL
from imaging_pipelines.dagster_layer.asset_helpers import asset_key


def build_imported_model_asset(dataset: DatasetConfig) -> SourceAsset:
    """The observable source asset of ``dataset``'s ``segmentation.model`` (method ``imported``)."""
    spec = dataset.segmentation.model
    if spec is None:
        raise ValueError(f"{dataset.id}: segmentation method 'imported' needs a model block")

    @observable_source_asset(key=asset_key(dataset, IMPORTED_MODEL), group_name=dataset.id,
                             metadata={"kind": spec.kind, "path": spec.path},
                             description=f"Imported pretrained {spec.kind} model at {spec.path}: used as it is, "
                                         "never downloaded or retrained; its data version is the content hash "
                                         "of its files (checkpoints, plans, configs).")
    def imported_model() -> ObserveResult:
        from imaging_pipelines.medical.segment.model_files import inspect_model

        files = inspect_model(spec)
        return ObserveResult(data_version=DataVersion(files.version), metadata={
            "model_version": files.version,
            "labels": MetadataValue.json({str(v): n for v, n in sorted(files.labels.items())}),
            "files": MetadataValue.md("\n".join(f"- `{f.relative_to(files.root) if f != files.root else f.name}`"
                                                for f in files.files)),
        })

    return imported_model
