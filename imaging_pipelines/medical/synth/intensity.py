"""SynthSeg-style random intensities: a Gaussian per label, partial-volume blur, a smooth multiplicative
bias field, a gamma transform and additive noise. Intensities are in arbitrary units on a 0..1 scale
before the gamma; arrays are indexed (z, y, x); sigmas are in voxels unless named ``_mm``.

Two ways to draw the per-label means (:func:`label_means`): fully random (uniform 0..1 for every label,
SynthSeg) and, with probability ``mr_like_probability``, an MR-like order of the brain tissues (T1: CSF <
GM < WM, or T2: the reverse) with random values, a dark background and random head layers. The
enhancing rim (or solid tumour) is hyper- or hypo-intense (each with probability 1/2) by a margin of at least
``lesion_contrast[0]`` (0..1 scale) beyond *both* grey and white matter: above the brighter or below the
darker of the two (hypo-intense only where the darker one leaves room for the margin above 0, else
hyper-intense), so every drawn tumour is visible against the tissue around it. A rim drawn relative to the
mean of grey and white matter (as before) fell between the two, or within 0.1 of one, in 45 % of cases:
labels on invisible lesions. Core and oedema stay relative to that mean (the core is enclosed by the rim).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from imaging_pipelines.medical.synth.deform import upsample_cubic


@dataclass(frozen=True)
class IntensityParams:
    """Ranges of the random intensity model (uniform draws)."""

    mr_like_probability: float = 0.8
    std: tuple[float, float] = (0.0, 0.06)  # within-label sd (0..1 scale)
    # rim / solid tumour beyond both GM and WM (0..1 scale). From 0.05: on a post-contrast T1 the enhancing rim is
    # often only 10-50 % above white matter (enhancement ratio 1.1-1.5), a small share of a range that bright fat
    # (scalp, marrow) sets; 0.15 (the former minimum) left the fainter half of real enhancement untrained.
    lesion_contrast: tuple[float, float] = (0.05, 0.8)
    core_factor: tuple[float, float] = (0.2, 0.9)  # necrotic core relative to the brain mean
    oedema_factor: tuple[float, float] = (0.7, 1.35)
    blur_sigma_vox: tuple[float, float] = (0.0, 1.0)  # partial-volume blur
    bias_sd: tuple[float, float] = (0.0, 0.35)  # sd of the log bias field
    bias_control_points: int = 4  # per axis
    gamma_log_sd: float = 0.25  # gamma = exp(N(0, sd))
    noise_sd: tuple[float, float] = (0.0, 0.05)  # Gaussian noise (0..1 scale, after gamma)


def label_means(rng: np.random.Generator, n_labels: int, brain_labels: tuple[int, int, int],
                lesion_labels: tuple[int, int, int], params: IntensityParams) -> tuple[np.ndarray, str]:
    """Mean intensity per label value ``0 .. n_labels-1`` and the mode drawn (``"random"``, ``"t1"``, ``"t2"``).

    ``brain_labels``: the (CSF, GM, WM) label values; ``lesion_labels``: (enhancing, core, oedema) values."""
    means = rng.uniform(0.0, 1.0, n_labels)
    mode = "random"
    csf, gm, wm = brain_labels
    if rng.random() < params.mr_like_probability:
        mode = "t1" if rng.random() < 0.5 else "t2"
        low, mid, high = np.sort(rng.uniform(0.1, 0.9, 3))
        means[[csf, gm, wm]] = (low, mid, high) if mode == "t1" else (high, mid, low)
        means[0] = rng.uniform(0.0, 0.08)
    brain = 0.5 * (means[gm] + means[wm])
    enhancing, core, oedema = lesion_labels
    means[enhancing] = lesion_mean(rng, float(means[gm]), float(means[wm]), params.lesion_contrast)
    means[core] = brain * rng.uniform(*params.core_factor)
    means[oedema] = brain * rng.uniform(*params.oedema_factor)
    return means, mode


def lesion_mean(rng: np.random.Generator, gm: float, wm: float, contrast: tuple[float, float]) -> float:
    """Mean of the enhancing rim / solid tumour: ``max(gm, wm) + c`` (hyper-intense) or ``min(gm, wm) - c``
    (hypo-intense, each with probability 1/2, hypo only when ``min(gm, wm) >= contrast[0]``), ``c`` uniform
    in ``contrast`` (0..1 scale), clipped at 0: at least ``contrast[0]`` away from both tissue means."""
    low, high = min(gm, wm), max(gm, wm)
    c = float(rng.uniform(*contrast))
    if rng.random() < 0.5 and low >= contrast[0]:
        return max(low - c, 0.0)
    return high + c


def smooth_field(rng: np.random.Generator, shape: tuple[int, int, int], control_points: int, sd: float) -> np.ndarray:
    """A smooth random field on ``shape``: Gaussian values (sd ``sd``) on a ``control_points``^3 lattice,
    interpolated cubically."""
    coarse = rng.normal(0.0, sd, (control_points,) * 3)
    return upsample_cubic(coarse, shape).astype(np.float32)


def synthesize_intensities(rng: np.random.Generator, labels: np.ndarray, means: np.ndarray,
                           params: IntensityParams) -> tuple[np.ndarray, dict[str, float]]:
    """float32 image from the label map ``labels`` (values index ``means``) and the draws made (for reports):
    Gaussian per label, blur, bias field ``exp(b)``, rescale to 0..1, gamma, noise."""
    stds = rng.uniform(*params.std, len(means))
    image = (means[labels] + stds[labels] * rng.standard_normal(labels.shape)).astype(np.float32)
    blur = float(rng.uniform(*params.blur_sigma_vox))
    if blur > 0.05:
        image = ndimage.gaussian_filter(image, blur)
    bias_sd = float(rng.uniform(*params.bias_sd))
    image *= np.exp(smooth_field(rng, labels.shape, params.bias_control_points, bias_sd))
    image = np.clip(image, 0, None)
    image /= max(float(np.percentile(image, 99.9)), 1e-6)
    gamma = float(np.exp(rng.normal(0.0, params.gamma_log_sd)))
    image = np.clip(image, 0, None) ** gamma
    noise = float(rng.uniform(*params.noise_sd))
    image = image + noise * rng.standard_normal(labels.shape).astype(np.float32)
    return image.astype(np.float32), {"blur_sigma_vox": blur, "bias_sd": bias_sd, "gamma": gamma, "noise_sd": noise}
