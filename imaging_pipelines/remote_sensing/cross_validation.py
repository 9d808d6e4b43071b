"""K-fold cross-validation of the raster U-Net over column folds of one labelled image.

A labelled ``(c, y, x)`` image (columns = pixel x, left to right) is cut into ``folds`` contiguous column
strips of near-equal width; each strip is predicted by U-Nets trained on the other strips (each kept as its own
full-height training image, so no window spans the gap left by the held-out strip), without validation data
(the weights after a fixed number of epochs). The result is the out-of-fold softmax of every pixel at chosen
snapshot epochs, from which a caller scores settings and picks the epoch count and the clean-up (one
ranking signal from every labelled pixel instead of one small validation strip). Used for choosing settings
(``bench/eval_spacenet_buildings.py --cv``); the final model is then trained on every column.
"""

from __future__ import annotations

from typing import Callable

import numpy as np

from imaging_pipelines.config.remote_sensing import RasterTrainingConfig
from imaging_pipelines.remote_sensing.unet2d import predict_unet2d, train_unet2d


def column_folds(width: int, folds: int) -> list[tuple[int, int]]:
    """``folds`` contiguous ``[start, stop)`` column ranges covering ``0..width`` in order, widths differing
    by at most one pixel (the wider ones first)."""
    if folds < 2:
        raise ValueError(f"cross-validation needs at least 2 folds, got {folds}")
    if width < folds:
        raise ValueError(f"{width} columns cannot make {folds} folds")
    edges = [0]
    for k in range(folds):
        edges.append(edges[-1] + width // folds + (1 if k < width % folds else 0))
    return list(zip(edges[:-1], edges[1:]))


def training_blocks(width: int, held_out: tuple[int, int]) -> list[tuple[int, int]]:
    """The ``[start, stop)`` column ranges of ``0..width`` left of and right of the ``held_out`` range
    (empty ones omitted)."""
    start, stop = held_out
    if not 0 <= start < stop <= width:
        raise ValueError(f"held-out columns {held_out} are not inside 0..{width}")
    return [(a, b) for a, b in ((0, start), (stop, width)) if b > a]


def cross_validate_columns(
    image: np.ndarray,
    label: np.ndarray,
    classes: dict[str, int],
    training: RasterTrainingConfig,
    folds: int,
    snapshots: list[int],
    device: str = "cpu",
    log: Callable[[str], None] | None = None,
    fold_end: Callable[[int, tuple[int, int], dict[int, np.ndarray]], None] | None = None,
) -> dict[int, np.ndarray]:
    """Out-of-fold softmax ``{epoch: (n_classes, y, x) float32}`` of ``image`` ``(c, y, x)`` (NaN = invalid)
    labelled by ``label`` ``(y, x)`` class values, at each epoch of ``snapshots`` (1-based, at most
    ``training.epochs``): for each of the :func:`column_folds`, ``training.ensemble`` U-Nets (seeds
    ``training.seed + k``) are trained by :func:`train_unet2d` on the other columns, without validation, and
    the fold's columns get their averaged softmax (sliding window, overlap 0.25) of each snapshot. Channel
    order of the softmax: background, then ``classes`` in order; invalid pixels keep the softmax computed
    from zeros (callers mask them). ``fold_end(fold, (start, stop), softmax)`` is called after each fold
    (0-based) with the same dict, whose columns ``start:stop`` are then final (e.g. to report a long run's
    folds as they finish)."""
    if image.ndim != 3 or image.shape[1:] != label.shape:
        raise ValueError(f"image {image.shape} and label {label.shape} must be (c, y, x) and (y, x) on one grid")
    bad = [e for e in snapshots if not 1 <= e <= training.epochs]
    if not snapshots or bad:
        raise ValueError(f"snapshot epochs must be 1..{training.epochs} (training.epochs), got {snapshots}")
    width = image.shape[2]
    out = {e: np.zeros((len(classes) + 1, *label.shape), np.float32) for e in snapshots}
    for f, (start, stop) in enumerate(column_folds(width, folds)):
        blocks = training_blocks(width, (start, stop))
        held = image[:, :, start:stop]

        def snapshot(epoch, model, norm, class_values, start=start, stop=stop, held=held):
            if epoch in out:
                _, prob = predict_unet2d(model, norm, class_values, held, training.patch_size, 0.25, device,
                                         return_probabilities=True)
                out[epoch][:, :, start:stop] += prob / training.ensemble

        fold_log = (lambda m, f=f: log(f"fold {f + 1}/{folds} (cols {start}..{stop - 1}): {m}")) if log else None
        train_unet2d([image[:, :, a:b] for a, b in blocks], [label[:, a:b] for a, b in blocks], classes, training,
                     device, validation=None, log=fold_log, epoch_end=snapshot)
        if fold_end is not None:
            fold_end(f, (start, stop), out)
    return out
