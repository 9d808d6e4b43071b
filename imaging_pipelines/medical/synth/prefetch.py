"""Training cases of the lesion generator made ahead of need, in a worker process, while the network trains.

On a small CPU, generating a case (deformation, lesions, intensities, thick-slice resampling: about a second
at 3 mm) and a training step compete for the same cores. :class:`CaseFeed` makes case ``n`` (a
:class:`TrainingPair`: normalised image, target, thick-slice axis; arrays indexed (z, y, x) on the generator's
grid) in one worker process (``workers=1``)
a few indices ahead, so generation overlaps
training; ``workers=0`` makes each case in the calling process when asked. The worker is forked (POSIX
``fork``: no re-import of the caller's main script, as ``spawn`` would do, and no pickling of the template)
when the feed is created, before any torch computation, and runs only numpy / SciPy / SimpleITK code; where
``fork`` is not available the feed makes cases inline. Cases depend only on the
generator's configuration, its seed and the index, so both ways give identical arrays.
"""

from __future__ import annotations

import multiprocessing
from concurrent.futures import Future, ProcessPoolExecutor
from typing import NamedTuple

import numpy as np

from imaging_pipelines.medical.segment.unet import normalize_intensity
from imaging_pipelines.medical.synth.acquisition import slab_footprint
from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig

_FORKED_GENERATOR: list[LesionGenerator] = []  # the generator the forked worker inherits (set before the fork)


class TrainingPair(NamedTuple):
    """One training case: ``image`` (normalised float32), ``target`` (uint8 classes, see :func:`training_pair`),
    ``thick_axis`` (index axis 0 i, 1 j, 2 k of the thick-slice acquisition; -1 when none was drawn) and its
    slice ``thickness_mm`` (0 when none)."""

    image: np.ndarray
    target: np.ndarray
    thick_axis: int
    thickness_mm: float = 0.0


def binary_target(label: np.ndarray, target_labels: tuple[int, ...]) -> np.ndarray:
    """uint8 0/1: voxels whose lesion label is one of ``target_labels``."""
    return np.isin(label, target_labels).astype(np.uint8)


def brain_lesion_target(label: np.ndarray, brain: np.ndarray, target_labels: tuple[int, ...]) -> np.ndarray:
    """uint8 classes for a brain-gated model: 0 outside the brain, 1 brain (``brain`` > 0, oedema included),
    2 lesion (lesion label in ``target_labels``)."""
    out = (np.asarray(brain) > 0).astype(np.uint8)
    out[np.isin(label, target_labels)] = 2
    return out


def training_pair(gen: LesionGenerator, index: int, target_labels: tuple[int, ...],
                  normalization: str = "percentile", brain_classes: bool = False,
                  slab_share: float | None = None) -> TrainingPair:
    """Case ``index`` of ``gen`` as a :class:`TrainingPair`: the target is 0/1 lesion
    (:func:`binary_target`), or 0 outside / 1 brain / 2 lesion with ``brain_classes`` (:func:`brain_lesion_target`).
    ``slab_share``: on a thick-slice case the lesion target is its footprint on the slabs
    (:func:`~imaging_pipelines.medical.synth.acquisition.slab_footprint` at that share), as a reader outlines it
    on the thick-slice scan; None: the lesion as drawn."""
    case = gen.case(index)
    lesion = binary_target(case.label.array, target_labels)
    if slab_share is not None and "thick_axis" in case.draws:
        lesion = slab_footprint(case.label.with_array(lesion), int(case.draws["thick_axis"]),
                                float(case.draws["thickness_mm"]), slab_share).astype(np.uint8)
    if brain_classes:
        target = brain_lesion_target(lesion, case.brain.array, (1,))
    else:
        target = lesion
    return TrainingPair(normalize_intensity(case.image.array, normalization), target,
                        int(case.draws.get("thick_axis", -1)), float(case.draws.get("thickness_mm", 0.0)))


def _worker_pair(config: SynthConfig, seed: int, index: int, target_labels: tuple[int, ...],
                 normalization: str, brain_classes: bool, slab_share: float | None) -> TrainingPair:
    if not _FORKED_GENERATOR or _FORKED_GENERATOR[0].config != config or _FORKED_GENERATOR[0].seed != seed:
        _FORKED_GENERATOR[:] = [LesionGenerator(config, seed=seed)]
    return training_pair(_FORKED_GENERATOR[0], index, target_labels, normalization, brain_classes, slab_share)


class CaseFeed:
    """Training pairs of ``gen`` by index (:func:`training_pair`, targets with ``brain_classes`` or not, and
    ``slab_share``), made
    ``ahead`` indices in advance by ``workers`` (0 or 1) worker processes. Use as a context manager (the
    worker stops on exit)."""

    def __init__(self, gen: LesionGenerator, target_labels: tuple[int, ...], *, workers: int = 1, ahead: int = 2,
                 normalization: str = "percentile", brain_classes: bool = False,
                 slab_share: float | None = None) -> None:
        if workers not in (0, 1):
            raise ValueError(f"workers must be 0 or 1; got {workers}")
        self.gen, self.target_labels, self.ahead, self.normalization = gen, tuple(target_labels), ahead, normalization
        self.brain_classes, self.slab_share = bool(brain_classes), slab_share
        self._pool: ProcessPoolExecutor | None = None
        self._pending: dict[int, Future] = {}
        if workers and "fork" in multiprocessing.get_all_start_methods():
            _FORKED_GENERATOR[:] = [gen]
            self._pool = ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("fork"))
            for index in range(ahead + 1):  # forks the worker now
                self._submit(index)

    def _submit(self, index: int) -> None:
        if self._pool is not None and index not in self._pending:
            self._pending[index] = self._pool.submit(_worker_pair, self.gen.config, self.gen.seed, index,
                                                     self.target_labels, self.normalization, self.brain_classes,
                                                     self.slab_share)

    def get(self, index: int) -> TrainingPair:
        """The pair of case ``index``; also starts the next ``ahead`` cases in the worker."""
        for nxt in range(index, index + 1 + self.ahead):
            self._submit(nxt)
        future = self._pending.pop(index, None)
        if future is None:
            return training_pair(self.gen, index, self.target_labels, self.normalization, self.brain_classes,
                                 self.slab_share)
        return future.result()

    def close(self) -> None:
        """Stop the worker (pending cases are dropped)."""
        if self._pool is not None:
            for future in self._pending.values():
                future.cancel()
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self._pending.clear()

    def __enter__(self) -> CaseFeed:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
