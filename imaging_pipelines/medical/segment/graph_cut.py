"""Graph-cut segmentation: a binary s-t minimum cut (PyMaxflow, Boykov-Kolmogorov) on a 3D Volume.

Energy, minimised exactly by the cut (every voxel is a node, 6-connected):

* **t-links** (data term): the negative log-likelihood of the voxel's intensity under a Gaussian model of the
  foreground and of the background, ``0.5 * ((I - mean) / sd)^2 + log(sd)`` (image units). A model may have
  several components (a mixture read as its best-fitting component: e.g. grey and white matter as one
  "normal tissue" background), plus ``-log`` of the class prior (MAP labelling). Models come from the caller, from seed masks, or from an initial Otsu split.
* **n-links** (smoothness): between face neighbours ``smoothness * scale * exp(-(dI)^2 / (2 sigma^2)) / d``
  (Boykov-Jolly), with ``dI`` the intensity difference, ``sigma`` its noise scale (default: the spread of a
  neighbour difference within a uniform region, ``sqrt(2)`` x the robust per-voxel noise estimate
  :func:`noise_sigma`, the homogeneous-region value of GrabCut's ``<dI^2>``) and ``d`` the neighbour distance in mm (the voxel spacing along that axis), so
  cuts prefer strong edges and the weights stay comparable across anisotropic grids. ``scale`` is the data
  term's scale: by default the median over the region of ``|fg cost - bg cost|`` (the typical voxel's
  evidence, in nats, under the current models), so ``smoothness`` is dimensionless and the balance between
  the two terms does not move with the image's contrast-to-noise ratio (noise shrinks the data term as
  ``(contrast / noise)^2`` while the contrast term with ``sigma`` from the noise stays the same); pass
  ``data_scale=1`` for absolute n-link weights.
* **hard constraints**: foreground seeds are tied to the source, background seeds and voxels outside
  ``region`` to the sink.

Works on the volume's own grid; the result is a ``uint8`` 0/1 Volume with the input's geometry (LPS).
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
from skimage.filters import threshold_otsu

from imaging_pipelines.core.volume import Volume

Gaussian = tuple[float, float]  # (mean, standard deviation), image units
_HARD = 1e9


def _maxflow():
    try:
        import maxflow
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise ImportError("graph-cut segmentation needs PyMaxflow: pip install PyMaxflow") from exc
    return maxflow


def gaussian_of(values: np.ndarray, what: str) -> Gaussian:
    """Robust Gaussian (median, 1.4826 x MAD, floored at 1e-3 x the median's magnitude or 1e-6) of ``values``."""
    if values.size == 0:
        raise ValueError(f"graph cut: no voxels to model the {what} intensities")
    centre = float(np.median(values))
    spread = 1.4826 * float(np.median(np.abs(values - centre)))
    return centre, max(spread, 1e-3 * abs(centre), 1e-6)


def _nll(values: np.ndarray, model: Sequence[Gaussian], prior: float) -> np.ndarray:
    costs = [0.5 * ((values - mean) / sd) ** 2 + np.log(sd) for mean, sd in model]
    return np.min(costs, axis=0) - np.log(prior)


def _prior(n_foreground: int, n_background: int) -> float:
    return float(np.clip(n_foreground / max(n_foreground + n_background, 1), 1e-3, 1 - 1e-3))


def noise_sigma(values: np.ndarray) -> float:
    """Noise scale (image units) from face-neighbour differences: 1.4826 x MAD / sqrt(2), all three axes."""
    diffs = np.concatenate([np.diff(values, axis=a).ravel() for a in range(values.ndim)])
    sigma = 1.4826 * float(np.median(np.abs(diffs))) / np.sqrt(2.0)
    return sigma if sigma > 0 else max(float(np.std(diffs)), 1e-6)


def _cut(image: Volume, values: np.ndarray, foreground_model: Sequence[Gaussian],
         background_model: Sequence[Gaussian], foreground_seeds: np.ndarray | None,
         background_seeds: np.ndarray | None, inside: np.ndarray, smoothness: float,
         sigma: float, fg_prior: float, data_scale: float | None) -> tuple[np.ndarray, float, float]:
    """One s-t min cut; boolean foreground (source side), the cut's energy and the n-links' data scale."""
    shape = values.shape
    fg_cost = _nll(values, foreground_model, fg_prior)
    bg_cost = _nll(values, background_model, 1.0 - fg_prior)
    if data_scale is None:
        data_scale = max(float(np.median(np.abs(fg_cost - bg_cost)[inside])), 1e-6)
    floor = np.minimum(fg_cost, bg_cost)
    source_caps, sink_caps = bg_cost - floor, fg_cost - floor  # paid when the voxel ends up bg / fg
    if foreground_seeds is not None:
        source_caps = np.where(foreground_seeds, _HARD, source_caps)
        sink_caps = np.where(foreground_seeds, 0.0, sink_caps)
    hard_bg = ~inside if background_seeds is None else (~inside | np.asarray(background_seeds, bool))
    source_caps, sink_caps = np.where(hard_bg, 0.0, source_caps), np.where(hard_bg, _HARD, sink_caps)

    maxflow = _maxflow()
    graph = maxflow.Graph[float]()
    nodes = graph.add_grid_nodes(shape)
    for axis in range(3):
        step_mm = image.spacing[2 - axis]  # array axis 0 is k (z), spacing is in (i, j, k) order
        diff = np.zeros(shape)
        head = [slice(None)] * 3
        head[axis] = slice(0, -1)
        diff[tuple(head)] = np.diff(values, axis=axis)
        weights = smoothness * data_scale * np.exp(-(diff**2) / (2.0 * sigma**2)) / step_mm
        structure = np.zeros((3, 3, 3))
        offset = [1, 1, 1]
        offset[axis] = 2
        structure[tuple(offset)] = 1.0
        graph.add_grid_edges(nodes, weights=weights, structure=structure, symmetric=True)
    graph.add_grid_tedges(nodes, source_caps, sink_caps)
    energy = float(graph.maxflow())
    return ~graph.get_grid_segments(nodes), energy, data_scale


def graph_cut_segmentation(
    image: Volume,
    foreground_seeds: np.ndarray | None = None,
    background_seeds: np.ndarray | None = None,
    region: np.ndarray | None = None,
    foreground_model: Sequence[Gaussian] | None = None,
    background_model: Sequence[Gaussian] | None = None,
    smoothness: float = 1.0,
    sigma: float | None = None,
    iterations: int = 5,
    prior: float | None = None,
    data_scale: float | None = None,
) -> tuple[Volume, dict[str, Any]]:
    """Binary graph-cut segmentation of the 3D ``image``: ``(mask, report)``, mask ``uint8`` 0/1 on its grid.

    Models (lists of ``(mean, sd)`` in image units): given, else fitted to the seed voxels (both seed masks
    needed), else to the two sides of an Otsu threshold inside ``region`` (brighter side = foreground).
    Seeds and ``region`` are boolean arrays shaped like the image (z, y, x). ``smoothness`` weighs the
    n-links (per mm) relative to ``data_scale`` (default: the median ``|fg cost - bg cost|`` over the region
    under the current models, recomputed each round; give 1.0 for absolute weights), ``sigma`` is their
    intensity scale (default ``sqrt(2)`` x :func:`noise_sigma`, the noise of a neighbour difference). When the models
    were fitted here (not given), they are refitted to the cut's two sides and the cut repeated, up to
    ``iterations`` rounds or until the mask stops changing (GrabCut-style). ``prior`` is the foreground's
    prior probability (adds ``-log prior`` to its t-link costs, ``-log(1 - prior)`` to the background's):
    given, or the fitted split's foreground fraction, or 0.5 with given models.
    """
    if image.is_timeseries or image.array.ndim != 3:
        raise ValueError(f"graph cut needs a 3D volume; got array shape {image.array.shape}")
    values = image.array.astype(np.float64)
    shape = values.shape
    inside = np.ones(shape, bool) if region is None else np.asarray(region, bool)
    for name, arr in (("foreground_seeds", foreground_seeds), ("background_seeds", background_seeds), ("region", region)):
        if arr is not None and np.shape(arr) != shape:
            raise ValueError(f"graph cut: {name} shape {np.shape(arr)} differs from the image's {shape}")
    if not inside.any():
        raise ValueError("graph cut: the region is empty")
    threshold, fg_prior = None, 0.5 if prior is None else float(prior)
    if not 0.0 < fg_prior < 1.0:
        raise ValueError(f"graph cut: the foreground prior must be in (0, 1); got {fg_prior}")
    refit = foreground_model is None or background_model is None
    if foreground_model is None or background_model is None:
        if foreground_seeds is not None and background_seeds is not None:
            fg_init, bg_init = np.asarray(foreground_seeds, bool), np.asarray(background_seeds, bool)
        else:
            threshold = float(threshold_otsu(values[inside]))
            fg_init, bg_init = inside & (values > threshold), inside & (values <= threshold)
        foreground_model = foreground_model or [gaussian_of(values[fg_init], "foreground")]
        background_model = background_model or [gaussian_of(values[bg_init], "background")]
        fg_prior = _prior(np.count_nonzero(fg_init), np.count_nonzero(bg_init))

    sigma = float(sigma) if sigma is not None else float(np.sqrt(2.0)) * noise_sigma(values)
    mask, energy, rounds, scale = None, 0.0, 0, data_scale
    for rounds in range(1, max(1, iterations) + 1):
        new, energy, scale = _cut(image, values, foreground_model, background_model, foreground_seeds,
                                  background_seeds, inside, smoothness, sigma, fg_prior, data_scale)
        converged = mask is not None and np.array_equal(new, mask)
        mask = new
        if converged or not refit or not new.any() or new[inside].all():
            break
        # GrabCut-style: refit the single-Gaussian models to the current cut and cut again
        foreground_model = [gaussian_of(values[mask], "foreground")]
        background_model = [gaussian_of(values[inside & ~mask], "background")]
        fg_prior = _prior(np.count_nonzero(mask), np.count_nonzero(inside & ~mask))
    report = {
        "foreground_model": [list(m) for m in foreground_model],
        "background_model": [list(m) for m in background_model],
        "otsu_threshold": threshold,
        "sigma": sigma,
        "smoothness": smoothness,
        "data_scale": scale,
        "foreground_prior": fg_prior,
        "cut_energy": energy,
        "rounds": rounds,
        "foreground_voxels": int(mask.sum()),
    }
    return image.with_array(mask.astype(np.uint8)), report
