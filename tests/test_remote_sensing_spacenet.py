"""The issue 15 land-cover goal on the visible real case: building IoU >= 0.50 on the held-out right 30 % of the
SpaceNet Atlanta sample tile, through ``bench/eval_spacenet_buildings.py`` with its default (seeded) settings,
and a mean IoU above the majority-class predictor's. The bench's default is an ensemble of 5 U-Nets on 128 px
patches, 40 epochs each, 1 thread (about 9-12 min of one core, longer on a loaded machine): slow."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from tests.conftest import REPO

MEASURED = ("measured 2026-12-06 with the bench's default (an ensemble of 5 U-Nets trained on the whole training "
            "side, cols 0..629, 40 epochs, --patch 128, 1 thread: the setting 3-fold column cross-validation with 3 "
            "U-Nets per fold picked among patch 96 / 128 and depth 3 / 4): building IoU 0.463 (members alone "
            "0.24-0.44; the 96 px, 64-epoch default before it 0.457), mean IoU 0.717 against the majority "
            "predictor's 0.484; variants and CV figures: bench/README.md")


def run_bench(shared_data) -> str:
    env = {**os.environ, "IMAGING_SHARED_DATA": str(shared_data), "PYTHONPATH": str(REPO)}
    done = subprocess.run([sys.executable, str(REPO / "bench" / "eval_spacenet_buildings.py")], env=env,
                          capture_output=True, text=True, timeout=3600, check=True)
    return done.stdout


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason=f"goal not met: {MEASURED}")
def test_spacenet_building_iou_on_held_out_columns(shared_data):
    out = run_bench(shared_data)
    iou = float(re.search(r"U-Net ([0-9.]+)", out).group(1))
    unet_miou = float(re.search(r"held-out unet +accuracy [0-9.]+ +mean IoU ([0-9.]+)", out).group(1))
    majority_miou = float(re.search(r"held-out majority class \(background\) accuracy [0-9.]+ +mean IoU ([0-9.]+)",
                                    out).group(1))
    assert unet_miou > majority_miou
    assert iou >= 0.50
