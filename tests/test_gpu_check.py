"""bench/gpu_check.py must be ready for the first minutes of a lent GPU: it exits cleanly without CUDA, and
every section runs end to end on the CPU with tiny sizes (``--cpu-smoke``), printing real figures."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "gpu_check.py"


def run(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=timeout)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_without_cuda_it_says_so_and_exits_cleanly():
    done = run()
    assert done.returncode == 0, done.stderr
    assert "no CUDA device" in done.stdout


def test_cpu_smoke_training_and_inference(tmp_path):
    out = tmp_path / "figures.json"
    done = run("--cpu-smoke", "--skip", "nnunet", "--json", str(out))
    assert done.returncode == 0, done.stdout + done.stderr
    figures = json.loads(out.read_text())
    assert figures["device"]["device"] == "cpu" and figures["device"]["autocast_dtype"] == "None"
    training, inference = figures["training"], figures["inference"]
    assert training["seconds_per_iteration"] > 0 and training["patch_mvoxel_per_s"] > 0
    assert inference["bare_monai_s"] > 0 and inference["project_predict_s"] > 0
    assert inference["throughput_ratio"] == pytest.approx(inference["bare_monai_s"] / inference["project_predict_s"],
                                                          rel=0.01)
    assert inference["verdict"].startswith(("PASS", "FAIL"))


@pytest.mark.slow
def test_cpu_smoke_nnunet(tmp_path):
    pytest.importorskip("nnunetv2")
    out = tmp_path / "figures.json"
    done = run("--cpu-smoke", "--skip", "training,inference", "--json", str(out))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    nnunet = json.loads(out.read_text())["nnunet"]
    assert nnunet["cases"] == 2 and nnunet["predict_s_per_case"] > 0 and nnunet["train_s"] > 0
    assert nnunet["plans"]["configuration"] == "3d_fullres"
