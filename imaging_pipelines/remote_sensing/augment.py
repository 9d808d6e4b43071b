"""Training-time augmentation of raster patches for the 2D U-Net (``unet2d``): random scale and intensity.

Patches are ``(channel, y, x)`` float32 already z-scored by the model's normalisation (NaN already 0);
labels are ``(y, x)`` int64 class indices on the same pixel grid. Both functions draw from the caller's
``numpy.random.Generator`` so training stays seeded. Geometric flips and 90-degree rotations are applied
by the patch sampler itself.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def scaled_crop_size(patch: int, max_log_scale: float, rng: np.random.Generator) -> int:
    """Side in pixels of the crop that :func:`resize_patch` maps onto ``patch`` pixels: ``patch / s`` with the
    zoom ``s = exp(u)``, ``u ~ U(-max_log_scale, max_log_scale)`` (``s > 1`` magnifies: objects look larger).
    ``max_log_scale == 0`` gives ``patch`` (no scaling)."""
    if max_log_scale <= 0:
        return patch
    s = float(np.exp(rng.uniform(-max_log_scale, max_log_scale)))
    return max(8, int(round(patch / s)))


def resize_patch(image: np.ndarray, label: np.ndarray, patch: int) -> tuple[np.ndarray, np.ndarray]:
    """Resample a square crop ``(c, n, n)`` / ``(n, n)`` to ``patch x patch`` pixels: bilinear for the image,
    nearest for the class indices (no new classes at edges)."""
    if image.shape[-1] == patch and image.shape[-2] == patch:
        return image, label
    x = F.interpolate(torch.from_numpy(np.ascontiguousarray(image, np.float32))[None], size=(patch, patch),
                      mode="bilinear", align_corners=False)[0].numpy()
    y = F.interpolate(torch.from_numpy(np.ascontiguousarray(label, np.float32))[None, None], size=(patch, patch),
                      mode="nearest")[0, 0].numpy().astype(label.dtype)
    return x, y


def intensity_jitter(image: np.ndarray, strength: float, rng: np.random.Generator) -> np.ndarray:
    """Random per-channel contrast, brightness and gamma of a z-scored ``(c, y, x)`` patch.

    For each channel: gamma ``g = exp(U(-strength, strength))`` applied to the patch rescaled to [0, 1]
    (its own min/max, mapped back after), then ``x * a + b`` with contrast ``a = exp(U(-strength, strength))``
    and brightness ``b ~ U(-strength, strength)`` (units: training standard deviations), then Gaussian noise of
    standard deviation ``U(0, strength / 4)``. ``strength == 0`` returns the patch unchanged."""
    if strength <= 0:
        return image
    out = np.empty_like(image, dtype=np.float32)
    for c in range(image.shape[0]):
        x = image[c].astype(np.float32)
        lo, hi = float(x.min()), float(x.max())
        if hi - lo > 1e-6:
            g = float(np.exp(rng.uniform(-strength, strength)))
            x = lo + (hi - lo) * ((x - lo) / (hi - lo)) ** g
        a = float(np.exp(rng.uniform(-strength, strength)))
        b = float(rng.uniform(-strength, strength))
        x = x * a + b
        sigma = float(rng.uniform(0, strength / 4))
        if sigma > 0:
            x = x + rng.normal(0.0, sigma, x.shape).astype(np.float32)
        out[c] = x
    return out
