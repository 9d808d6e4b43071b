"""Train-or-reuse of the domain-randomised lesion model in a cache folder, by version.

Files: ``<cache>/synth_lesion-<version>.pt`` (a normal project model file, read by
:meth:`~imaging_pipelines.medical.segment.unet.SegmentationModel.load` and so by ``imaging-pipelines segment
--model FILE``) and ``<cache>/synth_lesion-<version>.json`` (the training report), both written atomically
(:func:`~imaging_pipelines.models.store.publish_model`, :func:`~imaging_pipelines.core.storage.write_text_atomic`).
A model is reused only when both exist. Default cache: ``$IMAGING_PIPELINES_CACHE`` or
``~/.cache/imaging_pipelines/synth_lesion``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Callable

from imaging_pipelines.core.storage import as_upath, write_text_atomic
from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig
from imaging_pipelines.medical.synth.train import SynthTrainingConfig, synth_version, train_on_generator
from imaging_pipelines.models import store

FILE_PREFIX = "synth_lesion"


def default_cache() -> Path:
    """``$IMAGING_PIPELINES_CACHE/synth_lesion`` or ``~/.cache/imaging_pipelines/synth_lesion``."""
    base = os.environ.get("IMAGING_PIPELINES_CACHE") or Path.home() / ".cache" / "imaging_pipelines"
    return Path(base) / FILE_PREFIX


def synthetic_model(synth: SynthConfig, training: SynthTrainingConfig, *, seed: int = 0,
                    cache: Path | None = None, device: str = "auto",
                    log: Callable[[str], None] = print) -> tuple[Path, dict[str, Any], bool]:
    """(model file, training report, trained now?) for this generator configuration, seed and training:
    the cached file of the same version when there is one, else trained now and cached."""
    folder = Path(cache) if cache is not None else default_cache()
    version = synth_version(synth, training, seed)
    target, report_file = folder / f"{FILE_PREFIX}-{version}.pt", folder / f"{FILE_PREFIX}-{version}.json"
    if target.is_file() and report_file.is_file():
        return target, json.loads(report_file.read_text()), False
    log(f"training the synthetic lesion model {version[:16]} (cache {folder})")
    model, report = train_on_generator(LesionGenerator(synth, seed=seed), training, device=device, log=log)
    store.publish_model(as_upath(folder), target.name, model.save)
    write_text_atomic(report_file, json.dumps(report))
    return target, report, True
