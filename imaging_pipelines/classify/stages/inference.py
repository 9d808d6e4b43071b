"""Per-partition classification: class probabilities, the predicted class and a saliency overlay (LayerCAM,
the Grad-CAM variant of :func:`~imaging_pipelines.classify.saliency.saliency_map`).

Files (``<root>/<dataset>/classification/``): ``<partition>.json`` (``{"split", "probabilities" {class name:
p}, "predicted", "reference" (class name or None), "model_version"}``) and ``<partition>_saliency.png``
(the network input with the Grad-CAM map of the predicted class over it), both written atomically.
"""

from __future__ import annotations

import json
import time

from upath import UPath

from imaging_pipelines.classify.stages.source import ClassificationSource
from imaging_pipelines.core.asset_names import CLASSIFICATION
from imaging_pipelines.core.stage_result import CheckOutcome, StageResult
from imaging_pipelines.core.storage import as_upath, write_bytes_atomic, write_text_atomic


def result_folder(root: UPath | str, dataset_id: str) -> UPath:
    return as_upath(root) / dataset_id / CLASSIFICATION


def classify_partition(source: ClassificationSource, partition: str, root: UPath | str,
                       device: str = "auto") -> StageResult:
    """Classify one partition with the current classifier (FileNotFoundError when none is trained yet)."""
    from imaging_pipelines.classify.saliency import saliency_map
    from imaging_pipelines.classify.stages.model import ClassifierTask
    from imaging_pipelines.classify.train import predict_proba
    from imaging_pipelines.models.device import pick_device
    from imaging_pipelines.models.protocol import load_current
    from imaging_pipelines.report.classification import saliency_overlay

    start = time.perf_counter()
    dev = str(pick_device(device))
    clf = load_current(ClassifierTask, root, source.dataset.id, dev)
    image = source.image(root, partition)
    probabilities = predict_proba(clf, image[None], dev)[0]
    predicted = int(probabilities.argmax())
    value = source.label(root, partition)
    reference = None if value is None else clf.class_names[source.index_of(value)]
    record = {"split": source.split(partition),
              "probabilities": {n: round(float(p), 6) for n, p in zip(clf.class_names, probabilities)},
              "predicted": clf.class_names[predicted], "reference": reference,
              "model_version": clf.meta.get("version")}
    folder = result_folder(root, source.dataset.id)
    path = write_text_atomic(folder / f"{partition}.json", json.dumps(record, sort_keys=True))
    extra = dict(record)
    if source.config.saliency:
        saliency = saliency_map(clf, image[None], predicted, dev)[0]
        png = saliency_overlay(source.display(image), saliency)
        extra["saliency_png"] = write_bytes_atomic(folder / f"{partition}_saliency.png", png)
    checks = {}
    if reference is not None:
        checks["prediction_matches_reference"] = CheckOutcome(
            reference == record["predicted"], f"predicted {record['predicted']}, reference {reference}",
            {"split": record["split"]}, severity="warn")
    return StageResult(path, images=[partition], checks=checks, runtime_s=time.perf_counter() - start, extra=extra)


def stored_results(root: UPath | str, dataset_id: str) -> dict[str, dict]:
    """Partition -> the JSON record of every classified partition."""
    folder = result_folder(root, dataset_id)
    if not folder.exists():
        return {}
    return {p.name[:-5]: json.loads(p.read_text()) for p in sorted(folder.iterdir(), key=lambda q: q.name)
            if p.name.endswith(".json")}
