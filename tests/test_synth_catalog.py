"""Catalog route to the synthetic lesion model: ``segmentation.training.source: synthetic`` validates without
labels, picks the synthetic ModelTask, and its version depends on the generator and training settings; the
brain-gated model writes the catalog's lesion value."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from imaging_pipelines.config.segmentation import SegmentationConfig


def test_synthetic_training_needs_no_labels_but_one_dynunet_class() -> None:
    cfg = SegmentationConfig(method="dynunet", classes={"lesion": 5}, training={"source": "synthetic"})
    assert cfg.uses_model and cfg.training.synthetic_config == "small"
    with pytest.raises(ValidationError, match="labels.source"):
        SegmentationConfig(method="dynunet", classes={"lesion": 5})
    with pytest.raises(ValidationError, match="one-class 'dynunet'"):
        SegmentationConfig(method="dynunet", classes={"a": 1, "b": 2}, training={"source": "synthetic"})


def test_synthetic_task_is_chosen_and_versioned_by_its_settings() -> None:
    from types import SimpleNamespace

    from imaging_pipelines.medical.stages.segmentation_model import SegmentationModelTask
    from imaging_pipelines.medical.stages.synthetic_lesion_model import SyntheticLesionModelTask, segmentation_model_task
    from imaging_pipelines.models.protocol import task_version

    def dataset(**training) -> SimpleNamespace:
        seg = SegmentationConfig(method="dynunet", classes={"lesion": 5}, training=training)
        return SimpleNamespace(id="ds", segmentation=seg)

    small = segmentation_model_task(dataset(source="synthetic"))
    assert isinstance(small, SyntheticLesionModelTask) and small.file_prefix == "dynunet"
    bench = segmentation_model_task(dataset(source="synthetic", synthetic_config="benchmark"))
    labelled = segmentation_model_task(SimpleNamespace(id="ds", segmentation=SegmentationConfig(
        method="dynunet", classes={"lesion": 5}, labels={"source": "inbox"})))
    assert type(labelled) is SegmentationModelTask
    anatomy = small.training_inputs("unused-root")
    v_small, v_bench = task_version(small, anatomy), task_version(bench, anatomy)
    assert v_small != v_bench and len(v_small) == 16
    assert task_version(small, anatomy) == v_small
    assert small.params()["label_values"] == [0, 5]


@pytest.mark.slow
def test_synthetic_model_asset_trains_then_reuses_and_writes_the_catalog_value(tmp_path, monkeypatch) -> None:
    """train_or_reuse through the synthetic task (tiny config patched in): stored under segmentation_model,
    reused on the second call, loadable as the current model, label value from the catalog."""
    import dataclasses
    from types import SimpleNamespace

    from imaging_pipelines.medical.stages.synthetic_lesion_model import segmentation_model_task
    from imaging_pipelines.medical.synth import train
    from imaging_pipelines.models.protocol import load_current, train_or_reuse

    monkeypatch.setattr(train, "BENCHMARK_SYNTH", dataclasses.replace(train.BENCHMARK_SYNTH, spacing_mm=8.0))
    monkeypatch.setattr(train, "SMALL", train.SynthTrainingConfig(patch_size=(32, 32), iterations=2, batch_size=2,
                                                                  base_filters=4, max_filters=16, pool_size=1))
    ds = SimpleNamespace(id="ds", segmentation=SegmentationConfig(method="dynunet", classes={"lesion": 5},
                                                                  training={"source": "synthetic"}))
    task = segmentation_model_task(ds)
    first = train_or_reuse(task, tmp_path, device="cpu", log=lambda _m: None)
    assert first.trained and first.path.endswith(f"dynunet-{first.version}.pt")
    assert 0.0 <= first.metrics["best_validation_dice"] <= 1.0 and first.curve[0]["iteration"] == 2
    second = train_or_reuse(task, tmp_path, device="cpu", log=lambda _m: None)
    assert not second.trained and second.version == first.version
    model = load_current(type(task), tmp_path, "ds")
    assert model.label_values == [0, 0, 5] and model.version == first.version and model.resample_input
    assert model.brain_gate  # outside the brain and brain both write 0, the lesion the catalog's value
