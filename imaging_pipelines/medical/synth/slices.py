"""2D training patches cut from generated 3D cases, for slice-wise (2D) lesion models.

A real thick-slice scan is segmented slice by slice across its thickest axis
(:func:`~imaging_pipelines.medical.segment.unet.slice_axis`), so a case with a thick-slice acquisition along
index axis ``a`` (0 i, 1 j, 2 k; :class:`~.prefetch.TrainingPair.thick_axis`) gives slices across ``a`` in a
share ``thick_axis_share`` of its samples and across a random axis in the rest (a thick-slice scan resampled to
isotropic voxels before it reaches the model is cut across k whatever its acquisition axis, as the held-out
generated cases are); an isotropic case gives slices across a random axis per sample. A slice is cropped or padded (with the image
minimum, class 0) to the patch size ``(h, w)`` (pixels); augmentation: flips of both in-plane axes, a transpose
when the patch is square, intensity scale 0.9-1.1 and shift +-0.1. Arrays are indexed (z, y, x); a slice keeps
the order of the two remaining axes. With ``context`` c > 0 (2.5D,
:mod:`~imaging_pipelines.medical.segment.slice_context`) a sample's image has ``2c + 1`` channels: the slice and
its neighbours across the slice axis, one slab thickness apart on a slice across the case's thick-slice axis
(:func:`~imaging_pipelines.medical.segment.slice_context.neighbour_step` of the thickness and ``spacing_mm``),
one grid slice apart otherwise, as :func:`~imaging_pipelines.medical.segment.unet.predict` stacks them.
"""

from __future__ import annotations

import numpy as np
import torch

from imaging_pipelines.medical.segment.slice_context import neighbour_indices, neighbour_step
from imaging_pipelines.medical.synth.prefetch import TrainingPair


class SliceSampler:
    """Random 2D patches from a pool of :class:`TrainingPair` (slots replaced as new cases arrive).

    ``fg_fraction``: chance that a sample is a slice through ``fg_class`` (the lesion), centred near one of
    its pixels; otherwise a random slice at a random position. ``thick_axis_share``, ``context`` (neighbours
    each side) and ``spacing_mm`` (the cases' grid spacing): see the module notes."""

    def __init__(self, pairs: list[TrainingPair], patch: tuple[int, int], fg_fraction: float, fg_class: int,
                 rng: np.random.Generator, thick_axis_share: float = 1.0, context: int = 0,
                 spacing_mm: float = 2.0) -> None:
        if len(patch) != 2:
            raise ValueError(f"a slice patch is (h, w) pixels; got {patch}")
        self.context, self.spacing_mm = int(context), float(spacing_mm)
        self.patch, self.fg_fraction, self.fg_class, self.rng = tuple(int(p) for p in patch), fg_fraction, fg_class, rng
        self.thick_axis_share = float(thick_axis_share)
        self.pairs: list[TrainingPair] = []
        self.fg_slices: list[dict[int, np.ndarray]] = []
        for pair in pairs:
            self.pairs.append(pair)
            self.fg_slices.append(self._fg_slices(pair))

    def _fg_slices(self, pair: TrainingPair) -> dict[int, np.ndarray]:
        fg = pair.target == self.fg_class
        return {a: np.flatnonzero(fg.any(axis=tuple(d for d in range(3) if d != 2 - a))) for a in range(3)}

    def replace(self, slot: int, pair: TrainingPair) -> None:
        """Put ``pair`` in pool slot ``slot``."""
        self.pairs[slot] = pair
        self.fg_slices[slot] = self._fg_slices(pair)

    def sample(self, force_fg: bool) -> tuple[np.ndarray, np.ndarray]:
        """(image ``[2 context + 1, h, w]`` float32, classes ``[1, h, w]`` int64)."""
        i = int(self.rng.integers(len(self.pairs)))
        pair = self.pairs[i]
        thick = pair.thick_axis in (0, 1, 2) and self.rng.random() < self.thick_axis_share
        axis = pair.thick_axis if thick else int(self.rng.integers(3))
        dim = 2 - axis  # array dimension of the slice axis
        fg = self.fg_slices[i][axis]
        force_fg = force_fg and fg.size > 0
        k = int(fg[self.rng.integers(fg.size)]) if force_fg else int(self.rng.integers(pair.image.shape[dim]))
        step = neighbour_step(pair.thickness_mm, self.spacing_mm) if thick else 1
        planes = neighbour_indices(pair.image.shape[dim], np.array([k]), self.context, step)[0]
        img = np.moveaxis(np.take(pair.image, planes, axis=dim), dim, 0)  # [2 context + 1, h, w]
        lab = np.take(pair.target, k, axis=dim)
        centre = None
        if force_fg:
            pixels = np.argwhere(lab == self.fg_class)
            centre = pixels[int(self.rng.integers(len(pixels)))]
        img, lab = self._crop(img, lab, centre)
        for ax in (0, 1):
            if self.rng.random() < 0.5:
                img, lab = np.flip(img, ax + 1), np.flip(lab, ax)
        if self.patch[0] == self.patch[1] and self.rng.random() < 0.5:
            img, lab = img.transpose(0, 2, 1), lab.T
        img = img * self.rng.uniform(0.9, 1.1) + self.rng.uniform(-0.1, 0.1)
        return np.ascontiguousarray(img, dtype=np.float32), np.ascontiguousarray(lab[None], dtype=np.int64)

    def _crop(self, img: np.ndarray, lab: np.ndarray, centre: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
        """Crop / pad the channel-first image ``[c, h, w]`` and the classes ``[h, w]`` to the patch."""
        patch = np.array(self.patch)
        pad = [(0, max(0, p - s)) for p, s in zip(patch, lab.shape)]
        img = np.pad(img, [(0, 0), *pad], mode="constant", constant_values=float(img.min()))
        lab = np.pad(lab, pad, mode="constant", constant_values=0)
        shape = np.array(lab.shape)
        if centre is None:
            start = np.array([self.rng.integers(0, s - p + 1) for s, p in zip(shape, patch)])
        else:
            start = centre - patch // 2 + self.rng.integers(-(patch // 4), patch // 4 + 1)
        start = np.clip(start, 0, shape - patch)
        sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, patch))
        return img[(slice(None), *sl)], lab[sl]

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``batch_size`` samples (each forced through the lesion with probability ``fg_fraction``) as tensors
        ``[n, 2 context + 1, h, w]`` (image) and ``[n, 1, h, w]`` (classes)."""
        items = [self.sample(self.rng.random() < self.fg_fraction) for _ in range(batch_size)]
        return torch.from_numpy(np.stack([a for a, _ in items])), torch.from_numpy(np.stack([b for _, b in items]))
