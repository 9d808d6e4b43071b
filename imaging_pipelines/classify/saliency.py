"""Grad-CAM saliency of a trained classifier (``monai.visualize.GradCAM``) and how much of it lies in a
region: the share of the top-decile saliency inside a mask. Maps are ``(y, x)`` on the network input grid,
scaled to [0, 1], high = salient (MONAI upsamples the layer's map bilinearly; its default normaliser,
which maps the maximum to 0, is replaced by a plain min-max scaling)."""

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
