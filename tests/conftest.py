"""Shared fixtures: real data from ../shared/data, and isolated catalog/storage/instance per test."""

from __future__ import annotations

import os
import textwrap
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]

# The suite opts into the public development pseudonym key (its data is synthetic); without this opt-in (or
# IMAGING_PIPELINES_PSEUDONYM_KEY) the definitions refuse to load. Subprocesses (servers, workers) inherit it.
os.environ.setdefault("IMAGING_PIPELINES_ALLOW_DEVELOPMENT_KEY", "1")
# Tests write complete files and scan at once: no quiescence wait unless a test's catalog sets one.
os.environ.setdefault("IMAGING_PIPELINES_QUIESCENT_SECONDS", "0")


def shared_data_root() -> Path:
    return Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_root()
    if not root.is_dir():
        pytest.skip(f"shared data folder {root} not found (set IMAGING_SHARED_DATA)")
    return root


def write_catalog(folder: Path, dataset_id: str = "test_ds", inbox: str = "inbox", **extra: str) -> Path:
    """Write a medical catalog entry into ``folder/catalog``; returns the catalog folder."""
    catalog = folder / "catalog"
    catalog.mkdir(parents=True, exist_ok=True)
    lines = "\n".join(f"{k}: {v}" for k, v in extra.items())
    (catalog / f"{dataset_id}.yaml").write_text(
        textwrap.dedent(
            f"""\
            id: {dataset_id}
            domain: medical
            inbox: ../{inbox}
            formats: [dicom, nifti, nrrd, mha]
            partitioning: patient
            """
        )
        + lines
        + "\n"
    )
    return catalog


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A temporary data root with a catalog (dataset `test_ds`, inbox `inbox/`) and a storage root."""
    monkeypatch.setenv("IMAGING_PIPELINES_DATA_ROOTS", str(tmp_path))
    monkeypatch.setenv("IMAGING_PIPELINES_STORAGE_ROOT", str(tmp_path / "storage"))
    (tmp_path / "inbox").mkdir()
    catalog = write_catalog(tmp_path)
    monkeypatch.setenv("IMAGING_PIPELINES_CATALOG", str(catalog))
    return tmp_path


@pytest.fixture(scope="session")
def nnunet_model(tmp_path_factory) -> Path:
    """ONE tiny multi-class nnU-Net v2 results folder per session (folds 0 and 1), planned by nnU-Net on
    phantoms (tests/test_imported_models.py, tests/test_imported_model_assets.py)."""
    pytest.importorskip("nnunetv2", reason="nnunetv2 is not installed (optional extra segment-export)")
    from imaging_pipelines.tools.demo.imported_models import write_tiny_nnunet_model

    return write_tiny_nnunet_model(tmp_path_factory.mktemp("nnunet") / "Dataset990_Tiny", folds=(0, 1))


@pytest.fixture(scope="module")
def one_torch_thread():
    """Small CPU models train faster on one thread, and far faster when other processes share the cores
    (OpenMP threads spin); the previous setting is restored afterwards."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
