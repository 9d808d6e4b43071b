"""An imported model's version (hash of its files) is kept per process while the files are unchanged, and
computed again as soon as one is written, replaced, restored with an old modification time, or added."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import pytest

from imaging_pipelines.config.segmentation import ImportedModelConfig
from imaging_pipelines.medical.segment import model_files
from imaging_pipelines.medical.segment.model_files import clear_version_cache, files_version, inspect_model


def tiny_bundle(folder: Path) -> ImportedModelConfig:
    """The files ``inspect_model`` checks of a MONAI bundle (weights: arbitrary bytes, never loaded here)."""
    (folder / "configs").mkdir(parents=True)
    (folder / "models").mkdir()
    (folder / "configs" / "inference.json").write_text(json.dumps({"dataset": {"data": []}, "output_dir": "."}))
    metadata = {"network_data_format": {"outputs": {"pred": {"channel_def": {"0": "background", "1": "lesion"}}}}}
    (folder / "configs" / "metadata.json").write_text(json.dumps(metadata))
    (folder / "models" / "model.pt").write_bytes(b"\x01" * 4096)
    return ImportedModelConfig(kind="monai_bundle", path=str(folder))


@pytest.fixture
def hashes(monkeypatch) -> list[str]:
    """Counts the hashing of model files; the version cache starts empty and is emptied afterwards."""
    calls: list[str] = []
    real = model_files.files_version
    monkeypatch.setattr(model_files, "files_version", lambda kind, root, files: (calls.append(kind), real(kind, root, files))[1])
    clear_version_cache()
    yield calls
    clear_version_cache()


def tick() -> None:
    """Let the file system clock move on (timestamps come from a coarse clock, a few ms per step)."""
    time.sleep(0.05)


def test_unchanged_files_are_hashed_once_and_every_change_is_seen(tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(model_files, "SETTLE_NS", 0)  # the files here are seconds old at most
    spec = tiny_bundle(tmp_path / "bundle")
    weights = tmp_path / "bundle" / "models" / "model.pt"
    first = inspect_model(spec).version
    assert inspect_model(spec).version == first and len(hashes) == 1
    assert first == files_version("monai_bundle", tmp_path / "bundle", inspect_model(spec).files)

    tick()
    stat = weights.stat()
    with weights.open("r+b") as handle:  # rewritten in place: same size, same inode
        handle.write(b"\x02")
    os.utime(weights, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # the old modification time put back (cp -p)
    second = inspect_model(spec).version
    assert second != first and len(hashes) == 2, "an in-place rewrite with the old mtime was not seen"

    tick()
    replacement = tmp_path / "other.pt"
    replacement.write_bytes(b"\x03" * 4096)
    os.replace(replacement, weights)  # replaced by rename
    third = inspect_model(spec).version
    assert third not in (first, second) and len(hashes) == 3

    tick()
    (tmp_path / "bundle" / "configs" / "notes.txt").write_text("a new file under configs/ is hashed")
    assert inspect_model(spec).version != third and len(hashes) == 4
    assert inspect_model(spec).version == inspect_model(spec).version and len(hashes) == 4


def test_a_file_changed_just_before_its_hash_is_hashed_again(tmp_path, hashes):
    """Within SETTLE_NS of a change the times may not tell a second write apart: no version is kept."""
    spec = tiny_bundle(tmp_path / "bundle")
    inspect_model(spec)
    inspect_model(spec)
    assert len(hashes) == 2


def test_a_copied_folder_keeps_the_version_but_not_the_cache_entry(tmp_path, hashes, monkeypatch):
    monkeypatch.setattr(model_files, "SETTLE_NS", 0)
    spec = tiny_bundle(tmp_path / "bundle")
    copy = shutil.copytree(tmp_path / "bundle", tmp_path / "copy", copy_function=shutil.copy2)
    assert inspect_model(spec).version == inspect_model(ImportedModelConfig(kind="monai_bundle", path=str(copy))).version
    assert len(hashes) == 2  # other paths and inodes: hashed, same bytes, same version
