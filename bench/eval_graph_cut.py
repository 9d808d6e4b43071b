"""Lesion Dice of the ``graph_cut`` baseline against the threshold baselines, on the demo brain phantoms and on
the real brain MR with a manual tumour label (``../shared/data/medical/brain_tumour_mr/brain1_*.nrrd``).

* demo phantoms: ``brain_like_phantom(seed, contrast, min_lesions=1)`` for seeds 0-7, T1 and T2, on their
  3 x 3 x 3.5 mm grid (seed 0, T1 is the case of tests/test_segment_graph_cut.py);
* brain1: resampled to 3 mm (linear, antialiased) as ``bench/eval_real_lesions.py`` does for its baselines,
  masks resampled back (nearest neighbour) and scored on the label's grid.

Nothing is trained or tuned here. Usage: ``python bench/eval_graph_cut.py`` (about 10 s on one core).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
SHARED = Path(os.environ.get("IMAGING_SHARED_DATA", REPO.parent / "shared" / "data"))
CASE = SHARED / "medical" / "brain_tumour_mr"
METHODS = ("otsu", "max_entropy", "graph_cut")


def main() -> int:
    from imaging_pipelines.core.volume import Volume
    from imaging_pipelines.medical.io.image_files import read_image_file
    from imaging_pipelines.medical.preprocess.resample import resample_like, resample_to_spacing
    from imaging_pipelines.medical.register.metrics import dice
    from imaging_pipelines.medical.segment.baselines import run_baseline
    from imaging_pipelines.tools.demo.phantom import BRAIN_LESION, brain_like_phantom

    for contrast in ("T1", "T2"):
        rows: dict[str, list[float]] = {name: [] for name in METHODS}
        for seed in range(8):
            image, labels = brain_like_phantom(seed=seed, contrast=contrast, min_lesions=1)
            volume = Volume(image, spacing=(3.0, 3.0, 3.5))
            for name in METHODS:
                rows[name].append(dice(run_baseline(name, volume)[0].array > 0, labels == BRAIN_LESION))
        for name, values in rows.items():
            print(f"demo {contrast} seeds 0-7 {name:<12} mean {np.mean(values):.3f}  "
                  + " ".join(f"{v:.3f}" for v in values))
    image_file, label_file = CASE / "brain1_image.nrrd", CASE / "brain1_label.nrrd"
    if not image_file.exists():
        print(f"{image_file} not found: brain1 skipped")
        return 0
    image, label = read_image_file(image_file), read_image_file(label_file)
    if image.spatial_shape != label.spatial_shape:
        label = resample_like(label, image, interpolator="nearest")
    work = resample_to_spacing(image, (3.0, 3.0, 3.0), interpolator="linear", antialias=True)
    for name in METHODS:
        mask = resample_like(run_baseline(name, work)[0], image, interpolator="nearest")
        print(f"brain1 (3 mm) {name:<12} {dice(np.asarray(mask.array) == 1, np.asarray(label.array) > 0):.3f}")
    return 0


if __name__ == "__main__":
    sys.path.insert(0, str(REPO))
    sys.exit(main())
