"""The files of an imported (pretrained) segmentation model: which must exist, which are hashed into its
version, and the label values and names its own files declare. No torch import here (cheap enough for a
Dagster observation).

- nnU-Net v2 trained-model folder: ``dataset.json`` (its ``labels``), ``plans.json`` and
  ``fold_<f>/<checkpoint>`` for every configured fold;
- MONAI bundle folder: ``configs/inference.json`` (or ``inference.yaml`` / ``.yml``, as several model-zoo
  bundles ship it), ``configs/metadata.json`` (labels from
  ``network_data_format.outputs.<first>.channel_def``) and ``models/model.pt`` or ``models/model.ts``;
  every file under ``configs/`` and ``models/`` is hashed;
- project model: the ``.pt`` file written by the segmentation model asset (labels from its config).

Version (see :mod:`imaging_pipelines.models.versioning`): the first 16 hex digits of SHA-256 over each
hashed file's path relative to the model folder and its bytes, in sorted order, plus the model kind; so
replacing a checkpoint (or editing ``dataset.json``) gives a new version, and copying the folder elsewhere
does not.

The version is kept per process (:func:`files_version_cached`) while every hashed file keeps its size, inode,
modification and status-change times (ns): a checkpoint of hundreds of MB is not read again for every image.
Any write, replacement, rename onto the path or ``touch`` changes the status-change time, which user space
cannot set back (``cp -p`` / ``rsync -t`` restore the modification time only), so a changed file is hashed
again. A file changed less than :data:`SETTLE_NS` before it was hashed is not kept (as git treats "racy"
index entries): a second write within the file system's timestamp granularity could otherwise leave the
same times. What stays uncaught: a file rewritten behind the kernel's back (a block device edited
directly, a network file system whose server does not update the times), or a clock set backwards.
"""

from __future__ import annotations

import json
import os
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from imaging_pipelines.config.segmentation import ImportedModelConfig
from imaging_pipelines.core.errors import ImagingInputError
from imaging_pipelines.models.versioning import model_version

CHUNK_BYTES = 1 << 22


@dataclass(frozen=True)
class ModelFiles:
    """An imported model as found on disk: the folder (or file), the hashed files, labels and version."""

    kind: str  # "nnunet", "monai_bundle" or "project"
    root: Path  # the model folder (nnunet, monai_bundle) or file (project)
    files: tuple[Path, ...]  # every file hashed into the version, sorted
    labels: dict[int, str] = field(default_factory=dict)  # label value written -> name (background excluded)
    version: str = ""  # 16 hex digits


def _need(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ImagingInputError(path, f"missing {what}")
    return path


def _read_json(path: Path) -> dict:
    return _read_mapping(path, "JSON")


def _read_mapping(path: Path, kind: str) -> dict:
    """The mapping in the ``kind`` (``"JSON"`` or ``"YAML"``) file ``path``; ImagingInputError naming it otherwise."""
    if kind == "YAML":
        import yaml

        load, errors = yaml.safe_load, (yaml.YAMLError,)
    else:
        load, errors = json.loads, (json.JSONDecodeError,)
    try:
        value = load(path.read_text())
    except (OSError, UnicodeDecodeError, *errors) as exc:
        raise ImagingInputError(path, f"not a readable {kind} file: {exc}") from None
    if not isinstance(value, dict):
        raise ImagingInputError(path, f"must hold a {kind} mapping")
    return value


def nnunet_labels(dataset_json: dict, path: Path) -> dict[int, str]:
    """Label value -> name from nnU-Net v2's ``dataset.json`` ``labels`` (background left out). Region-based
    models (values given as lists) are named through ``regions_class_order``: the i-th region writes
    ``regions_class_order[i]``."""
    labels = dataset_json.get("labels")
    if not isinstance(labels, dict) or not labels:
        raise ImagingInputError(path, "no 'labels' mapping (name -> value) in dataset.json")
    names: dict[int, str] = {}
    regions = [(n, v) for n, v in labels.items() if isinstance(v, (list, tuple))]
    if regions:
        order = dataset_json.get("regions_class_order")
        region_items = [(n, v) for n, v in labels.items() if not (isinstance(v, int) and v == 0)]
        if not isinstance(order, list) or len(order) != len(region_items):
            raise ImagingInputError(path, "region-based labels need 'regions_class_order' with one value per region")
        return {int(value): str(name) for (name, _), value in zip(region_items, order)}
    for name, value in labels.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise ImagingInputError(path, f"label {name!r}: value {value!r} is not a non-negative integer")
        if value:
            names[value] = str(name)
    return names


def bundle_labels(metadata: dict, path: Path) -> dict[int, str]:
    """Label value -> name from a MONAI bundle's ``metadata.json``: the first output of
    ``network_data_format`` with a ``channel_def`` (channel index = label value written; background left out)."""
    outputs = (metadata.get("network_data_format") or {}).get("outputs") or {}
    for output in outputs.values() if isinstance(outputs, dict) else []:
        channels = output.get("channel_def") if isinstance(output, dict) else None
        if isinstance(channels, dict) and channels:
            try:
                named = {int(k): str(v) for k, v in channels.items()}
            except ValueError:
                raise ImagingInputError(path, "channel_def keys must be integers") from None
            return {k: v for k, v in named.items() if k and v.lower() != "background"}
    raise ImagingInputError(path, "no network_data_format outputs with a channel_def (the label names)")


def _file_chunks(root: Path, files: tuple[Path, ...]) -> Iterator[bytes]:
    for f in files:
        yield str(f.relative_to(root) if f != root else f.name).encode() + b"\0"
        with f.open("rb") as handle:
            while chunk := handle.read(CHUNK_BYTES):
                yield chunk


def files_version(kind: str, root: Path, files: tuple[Path, ...]) -> str:
    """The version of a model made of ``files`` (paths relative to ``root`` and their bytes, plus ``kind``)."""
    return model_version([], _file_chunks(root, files), {"kind": kind})


SETTLE_NS = 2_000_000_000  # a file changed less than 2 s before it was hashed is hashed again next time
_versions: dict[tuple, str] = {}  # (kind, root, file states) -> version
_versions_lock = threading.Lock()


def file_states(files: tuple[Path, ...]) -> tuple[tuple[str, int, int, int, int, int], ...]:
    """(path, size bytes, device, inode, modification ns, status-change ns) of each file, in order."""
    states = []
    for f in files:
        st = os.stat(f)
        states.append((str(f), st.st_size, st.st_dev, st.st_ino, st.st_mtime_ns, st.st_ctime_ns))
    return tuple(states)


def files_version_cached(kind: str, root: Path, files: tuple[Path, ...]) -> str:
    """:func:`files_version`, hashed once per process while no file's state (:func:`file_states`) changes;
    files changed within :data:`SETTLE_NS` of the hash are hashed again on the next call."""
    states = file_states(files)
    key = (kind, str(root), states)
    with _versions_lock:
        found = _versions.get(key)
    if found is not None:
        return found
    version = files_version(kind, root, files)
    settled = time.time_ns() - SETTLE_NS
    if all(max(mtime, ctime) < settled for *_, mtime, ctime in states) and file_states(files) == states:
        with _versions_lock:
            if len(_versions) >= 64:  # a long-lived process seeing many model versions: start again
                _versions.clear()
            _versions[key] = version
    return version


def clear_version_cache() -> None:
    """Forget every version kept by :func:`files_version_cached` (the next call hashes the files)."""
    with _versions_lock:
        _versions.clear()


def _nnunet(spec: ImportedModelConfig, root: Path) -> tuple[tuple[Path, ...], dict[int, str]]:
    dataset_json = _need(root / "dataset.json", "nnU-Net dataset.json (labels, channel names, file ending)")
    plans = _need(root / "plans.json", "nnU-Net plans.json")
    checkpoints = [_need(root / f"fold_{f}" / spec.checkpoint, f"checkpoint of fold {f}{_other_checkpoints(root, f)}")
                   for f in spec.folds]
    return tuple(sorted([dataset_json, plans, *checkpoints])), nnunet_labels(_read_json(dataset_json), dataset_json)


BUNDLE_INFERENCE_CONFIGS = ("inference.json", "inference.yaml", "inference.yml")  # looked for in this order


def bundle_inference_config(root: Path) -> Path:
    """The inference config of the MONAI bundle folder ``root``: the first of ``configs/inference.json``,
    ``configs/inference.yaml``, ``configs/inference.yml`` that exists (``python -m monai.bundle run`` reads
    either format); ImagingInputError naming ``configs/inference.json`` when none does."""
    for name in BUNDLE_INFERENCE_CONFIGS:
        if (root / "configs" / name).is_file():
            return root / "configs" / name
    return _need(root / "configs" / "inference.json", "MONAI bundle inference config (inference.json or .yaml)")


def read_bundle_config(path: Path) -> dict:
    """A bundle config file (JSON, or YAML for ``.yaml`` / ``.yml``) as a dict; ImagingInputError naming
    ``path`` when it cannot be read or does not hold a mapping."""
    return _read_mapping(path, "YAML" if path.suffix in (".yaml", ".yml") else "JSON")


def _other_checkpoints(root: Path, fold: int | str) -> str:
    """A hint naming the checkpoint files fold ``fold`` does hold (e.g. only ``checkpoint_best.pth``), if any."""
    held = sorted(p.name for p in (root / f"fold_{fold}").glob("checkpoint*.pth"))
    return f" (the fold holds {', '.join(held)}: choose one with the model's checkpoint / --checkpoint)" if held else ""


def _bundle(root: Path) -> tuple[tuple[Path, ...], dict[int, str]]:
    read_bundle_config(bundle_inference_config(root))
    metadata = _need(root / "configs" / "metadata.json", "MONAI bundle metadata")
    if not any((root / "models" / name).is_file() for name in ("model.pt", "model.ts")):
        raise ImagingInputError(root / "models" / "model.pt", "missing MONAI bundle weights (models/model.pt or models/model.ts)")
    files = sorted(p for sub in ("configs", "models") for p in (root / sub).rglob("*") if p.is_file())
    return tuple(files), bundle_labels(_read_json(metadata), metadata)


def _project(root: Path) -> tuple[tuple[Path, ...], dict[int, str]]:
    import torch  # the project file's config holds the label values

    _need(root, "project segmentation model file (.pt)")
    try:
        config = torch.load(root, map_location="cpu", weights_only=True)["config"]
        values = [int(v) for v in config["label_values"]]
    except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and why
        raise ImagingInputError(root, f"not a segmentation model file of this project: {type(exc).__name__}: {exc}") from None
    return (root,), {v: f"class_{v}" for v in values if v}


def inspect_model(spec: ImportedModelConfig) -> ModelFiles:
    """Check that ``spec``'s model files exist (ImagingInputError naming the first missing or unreadable file)
    and return them with their labels and version. ``spec.path`` must already be absolute or relative to the
    working directory (the catalog loader resolves catalog-relative paths)."""
    root = Path(spec.path).expanduser()
    if spec.kind == "project":
        files, labels = _project(root)
    else:
        if not root.is_dir():
            raise ImagingInputError(root, f"not a folder ({spec.kind} models are folders)")
        files, labels = _nnunet(spec, root) if spec.kind == "nnunet" else _bundle(root)
    return ModelFiles(spec.kind, root, files, labels, files_version_cached(spec.kind, root, files))
