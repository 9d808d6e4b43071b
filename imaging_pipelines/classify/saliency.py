"""Class-activation saliency of a trained classifier and how much of it lies in a region (the share of the
top-decile saliency inside a mask). Maps are ``(y, x)`` on the network input grid, scaled to [0, 1],
high = salient (the layer's map is upsampled bilinearly, aligned with the layer's stride; MONAI's default
normaliser, which maps the maximum to 0, is replaced by a plain min-max scaling).

* :func:`grad_cam`: Grad-CAM (``monai.visualize.GradCAM``): the layer's channels weighted by their
  spatially averaged gradient.
* :func:`saliency_map` (what inference and reports use): ``method="layercam"`` (default) is LayerCAM (Jiang
  et al., IEEE TIP 2021), the Grad-CAM variant that weights each activation by its own positive gradient,
  ``relu(sum_c relu(dS/dA_c) * A_c)``, so the map keeps the within-cell detail a channel-wide weight averages
  away; with ``flip`` (default: when the classifier was trained with flip augmentation) the raw maps of the
  image and of its left-right mirror (mirrored back) are summed before scaling (test-time augmentation).
  Chosen on a selection set of synthetic radiographs (seed 4), see docs/medical.md.
"""

from __future__ import annotations

import numpy as np
import torch
from monai.visualize import GradCAM

from imaging_pipelines.classify.network import GRADCAM_LAYERS, GRADCAM_STRIDES
from imaging_pipelines.classify.train import Classifier


def _scale_unit(maps: torch.Tensor) -> torch.Tensor:
    """Each map min-max scaled to [0, 1], high = salient (MONAI's default normaliser flips the scale)."""
    flat = maps.reshape(len(maps), -1)
    lo, hi = flat.min(1).values, flat.max(1).values
    span = torch.where(hi > lo, hi - lo, torch.ones_like(hi))
    return (maps - lo.view(-1, *[1] * (maps.dim() - 1))) / span.view(-1, *[1] * (maps.dim() - 1))


def strided_upsampler(stride: int | None):
    """A MONAI ``upsampler`` for a feature map whose cell ``j`` is centred on input pixel ``stride * j``
    (stride-2 3x3 convolutions with padding 1 keep that alignment): bilinear interpolation at input pixel
    ``i`` of feature coordinate ``i / stride`` (edge cells extended). MONAI's default (``align_corners=False``)
    would put the cell centres half a cell further, shifting the map by ``(stride - 1) / 2`` pixels down and
    right. ``None``: MONAI's default upsampler."""
    if stride is None:
        from monai.visualize.visualizer import default_upsampler

        return default_upsampler

    def upsampler(spatial_size):
        def up(x: torch.Tensor) -> torch.Tensor:
            axes = []
            for size, cells in zip(spatial_size, x.shape[2:]):
                j = torch.arange(size, dtype=x.dtype, device=x.device) / stride
                axes.append(2 * j / max(cells - 1, 1) - 1 if cells > 1 else torch.zeros_like(j))
            gy, gx = torch.meshgrid(axes[0], axes[1], indexing="ij")
            grid = torch.stack([gx, gy], dim=-1)[None].expand(len(x), -1, -1, -1)
            return torch.nn.functional.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=True)
        return up

    return upsampler


class LayerCAM(GradCAM):
    """LayerCAM on MONAI's Grad-CAM machinery: ``relu(sum_c relu(gradient_c) * activation_c)`` per cell."""

    def compute_map(self, x, class_idx=None, retain_graph=False, layer_idx=-1, **kwargs):  # noqa: D102
        _, acti, grad = self.nn_module(x, class_idx=class_idx, retain_graph=retain_graph, **kwargs)
        return torch.relu((torch.relu(grad[layer_idx]) * acti[layer_idx]).sum(1, keepdim=True))


SALIENCY_METHODS = {"gradcam": GradCAM, "layercam": LayerCAM}


def saliency_map(classifier: Classifier, images: np.ndarray, class_index: int | None = None, device: str = "cpu",
                 method: str = "layercam", flip: bool | None = None) -> np.ndarray:
    """``(n, y, x)`` saliency maps in [0, 1] of ``images`` (n, c, y, x; not yet normalised) for ``class_index``
    (each image's predicted class when None) by ``method`` (``"layercam"`` or ``"gradcam"``) at the network's
    Grad-CAM layer. ``flip``: also map the left-right mirrored image and add its map mirrored back before
    the min-max scaling; None = when the classifier was trained with ``flip`` / ``dihedral`` augmentation."""
    if method not in SALIENCY_METHODS:
        raise ValueError(f"unknown saliency method {method!r}; known: {sorted(SALIENCY_METHODS)}")
    model = classifier.model.to(device).eval()
    architecture = classifier.training.architecture
    if flip is None:
        flip = classifier.training.augmentation in ("flip", "dihedral")
    cam = SALIENCY_METHODS[method](nn_module=model, target_layers=GRADCAM_LAYERS[architecture],
                                   upsampler=strided_upsampler(GRADCAM_STRIDES[architecture]),
                                   postprocessing=lambda m: m)
    x = torch.from_numpy(classifier.normalisation.apply(images)).to(device)
    if class_index is None:  # one class per call: MONAI sums the scores of a batch's classes otherwise
        with torch.no_grad():
            predicted = model(x).argmax(1).cpu().numpy()
    else:
        predicted = np.full(len(x), int(class_index))
    out = np.zeros((len(x), *x.shape[2:]), np.float32)
    for value in np.unique(predicted):
        rows = np.flatnonzero(predicted == value)
        with torch.enable_grad():
            raw = cam(x[rows], class_idx=int(value))
            if flip:
                raw = raw + torch.flip(cam(torch.flip(x[rows], [-1]), class_idx=int(value)), [-1])
        out[rows] = _scale_unit(raw.detach()).cpu().numpy()[:, 0]
    return out


def grad_cam(classifier: Classifier, images: np.ndarray, class_index: int | None = None,
             device: str = "cpu") -> np.ndarray:
    """``(n, y, x)`` Grad-CAM maps of ``images`` (n, c, y, x; not yet normalised) for ``class_index``
    (the predicted class of each image when None), from the network's last feature stage."""
    model = classifier.model.to(device).eval()
    architecture = classifier.training.architecture
    cam = GradCAM(nn_module=model, target_layers=GRADCAM_LAYERS[architecture],
                  upsampler=strided_upsampler(GRADCAM_STRIDES[architecture]), postprocessing=_scale_unit)
    x = torch.from_numpy(classifier.normalisation.apply(images)).to(device)
    with torch.enable_grad():
        maps = cam(x, class_idx=class_index)
    return maps.detach().cpu().numpy()[:, 0].astype(np.float32)


def top_decile_share(saliency: np.ndarray, mask: np.ndarray) -> float:
    """Share of the saliency summed over the top-decile pixels (saliency >= its 90th percentile) that lies
    inside ``mask`` (same shape, bool); 0.0 for a map without positive saliency there."""
    top = saliency >= np.quantile(saliency, 0.9)
    total = float(saliency[top].sum())
    return float(saliency[top & mask.astype(bool)].sum()) / total if total > 0 else 0.0
