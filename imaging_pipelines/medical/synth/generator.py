"""The domain-randomised lesion generator: (image, lesion label) pairs on real anatomy, made on the fly.

One case ``n`` of a generator with seed ``s`` is a pure function of ``(s, n)`` and the configuration
(``numpy.random.default_rng([s, n])``), so any case can be re-made exactly and disjoint index ranges give
disjoint training / held-out sets. Steps per case:

1. an axis-aligned working grid of ``spacing_mm`` (isotropic, mm) and ``field_of_view_mm`` ((x, y, z)
   mm) centred on the template's brain, LPS;
2. a random affine (:func:`~.deform.random_affine`) and elastic displacement
   (:func:`~.deform.elastic_displacement`) map it into the MNI152 template; tissue labels are sampled
   (nearest) and the extra-cerebral layers painted at random thicknesses (:func:`~.anatomy.head_layers`),
   with probability ``clutter_probability`` random blobs beyond them (:func:`~.anatomy.clutter`), and with
   probability ``neck_probability`` in the head below the brain (:func:`~.anatomy.neck_zone`; the working
   grid is centred ``grid_shift_mm`` from the brain centre, so a downward shift shows that region);
3. 1..3 irregular lesions (:mod:`~.lesions`) inside the brain; with mass effect the anatomy is re-sampled
   with the surrounding tissue pushed outwards;
   with probability ``mimics.probability``, lesion mimics: bright curves (enhancing vessels) in the brain and
   CSF outside the lesions, as bright as a tumour rim, labelled background (:mod:`~.mimics`);
4. intensities: a random Gaussian per label, blur, bias field, gamma, noise (:mod:`~.intensity`);
5. with probability ``anisotropic_probability`` a thick-slice acquisition (thickness uniform in
   ``slice_thickness_mm``, along a random index axis) resampled back (:mod:`~.acquisition`);
6. with probability ``skull_strip_probability`` the scan is skull-stripped as BraTS-style data is: zero
   outside the brain mask grown or shrunk by a margin uniform in ``skull_strip_margin_mm``
   (:mod:`~.skull_strip`); lesion and brain labels are cut to what is kept. This is drawn after every other
   draw, so a case's anatomy, lesions and intensities do not depend on it.

The image Volume (float32), the lesion label Volume (uint8, :data:`~.lesions.LESION_LABELS`) and the brain
mask (uint8 0/1: brain tissue labels 1-3 or lesion, after deformation and mass effect; what a brain-gated
model learns as "brain") share the working grid. :meth:`LesionGenerator.parameters` is the JSON-able configuration (used in model versions).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Iterator

import numpy as np

from imaging_pipelines.core.volume import Volume
from imaging_pipelines.medical.synth import acquisition, anatomy, deform, intensity, lesions, mimics, skull_strip


@dataclass(frozen=True)
class SynthConfig:
    """Every parameter of the generator (lengths in mm, angles in degrees)."""

    spacing_mm: float = 2.0
    field_of_view_mm: tuple[float, float, float] = (176.0, 208.0, 176.0)  # (x, y, z)
    max_rotation_deg: float = 15.0
    scale_range: tuple[float, float] = (0.85, 1.15)
    max_shear: float = 0.05
    max_translation_mm: float = 10.0
    elastic_mm: float = 4.0  # maximum elastic displacement
    elastic_control_mm: float = 32.0
    head_layers_mm: tuple[tuple[float, float], ...] = ((0.5, 3.0), (2.0, 8.0), (1.0, 7.0), (0.5, 3.0))  # per layer
    clutter_probability: float = 0.8  # random blobs beyond the head layers (anatomy.clutter)
    clutter_extent_mm: tuple[float, float] = (10.0, 45.0)
    clutter_blob_mm: float = 6.0  # smoothing (sd, mm) of the blob field
    neck_probability: float = 0.0  # blobs also fill the head below the brain (anatomy.neck_zone)
    neck_level_mm: tuple[float, float] = (15.0, 40.0)  # from this far below the brain centre (S, mm)
    neck_radii_mm: tuple[tuple[float, float], tuple[float, float]] = ((45.0, 70.0), (55.0, 90.0))  # (L, P) semi-axes
    grid_shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)  # working grid centre minus the brain centre (LPS)
    anisotropic_probability: float = 0.7
    slice_thickness_mm: tuple[float, float] = (1.0, 7.0)
    skull_strip_probability: float = 0.0  # BraTS-style brain-only scans (skull_strip.py)
    skull_strip_margin_mm: tuple[float, float] = (-4.0, 4.0)  # mask boundary beyond (+) or inside (-) the brain
    lesions: lesions.LesionParams = field(default_factory=lesions.LesionParams)
    mimics: mimics.MimicParams = field(default_factory=mimics.MimicParams)  # bright curves that are not lesion
    intensity: intensity.IntensityParams = field(default_factory=intensity.IntensityParams)


@dataclass(frozen=True)
class SynthCase:
    """One generated case: ``image`` (float32), ``label`` (uint8 lesion sub-regions), ``brain`` (uint8 0/1
    brain mask, lesions included) on one grid, and ``draws`` (the random choices made, plain types, for
    reports; ``thick_axis`` is the index axis (0 i, 1 j, 2 k) of a thick-slice acquisition, when drawn)."""

    image: Volume
    label: Volume
    draws: dict[str, Any]
    brain: Volume


N_TISSUES = len(anatomy.TISSUES)  # lesion sub-region v is painted as tissue label N_TISSUES - 1 + v


class LesionGenerator:
    """Yields :class:`SynthCase` on the fly; case ``n`` depends only on ``(seed, n)`` and the configuration."""

    def __init__(self, config: SynthConfig | None = None, seed: int = 0) -> None:
        self.config = config or SynthConfig()
        self.seed = int(seed)
        if not 0 < self.config.spacing_mm <= 8:
            raise ValueError(f"spacing_mm must lie in (0, 8] mm; got {self.config.spacing_mm}")
        self.anatomy = anatomy.load_anatomy()
        brain = np.argwhere(self.anatomy.labels.array > 0)
        centre_ijk = (brain.min(axis=0) + brain.max(axis=0))[::-1] / 2.0  # (i, j, k)
        self.centre_mm = tuple((self.anatomy.labels.index_to_world_lps() @ np.array([*centre_ijk, 1.0]))[:3])
        grid_centre = tuple(c + d for c, d in zip(self.centre_mm, self.config.grid_shift_mm))
        self.grid = deform.centred_grid(grid_centre, self.config.field_of_view_mm, self.config.spacing_mm)

    def parameters(self) -> dict[str, Any]:
        """The configuration and seed as plain JSON-able types."""
        return {"config": asdict(self.config), "seed": self.seed}

    def __iter__(self) -> Iterator[SynthCase]:
        n = 0
        while True:
            yield self.case(n)
            n += 1

    def _tissues(self, points: np.ndarray, layers_mm: tuple[float, ...]) -> np.ndarray:
        labels = deform.sample_on_grid(self.anatomy.labels, points, order=0)
        distance = deform.sample_on_grid(self.anatomy.distance_mm, points, order=1, cval=1e3)
        return anatomy.head_layers(labels, distance, layers_mm)

    def case(self, index: int) -> SynthCase:
        """Case ``index`` (a non-negative integer) of this generator."""
        cfg = self.config
        rng = np.random.default_rng([self.seed, int(index)])
        affine = deform.random_affine(rng, self.centre_mm, cfg.max_rotation_deg, cfg.scale_range, cfg.max_shear,
                                      cfg.max_translation_mm)
        displacement = deform.elastic_displacement(rng, self.grid, cfg.elastic_mm, cfg.elastic_control_mm)
        layers_mm = tuple(float(rng.uniform(*r)) for r in cfg.head_layers_mm)
        grid_points = self.grid.world_points()
        tissues = self._tissues(deform.deformed_points(self.grid, affine, displacement), layers_mm)
        brain = np.isin(tissues, (2, 3))  # lesion centres in grey or white matter
        seeds = lesions.draw_seeds(rng, grid_points.reshape(3, -1).T[brain.ravel()], cfg.lesions)
        pushed = [s for s in seeds if s.mass_effect > 0]
        if pushed:
            for s in pushed:
                displacement = displacement + deform.mass_effect_displacement(
                    grid_points, s.centre_mm, float(np.mean(s.semi_axes_mm)), s.mass_effect)
            tissues = self._tissues(deform.deformed_points(self.grid, affine, displacement), layers_mm)
        if rng.random() < cfg.clutter_probability:
            from scipy import ndimage

            distance = deform.sample_on_grid(self.anatomy.distance_mm, deform.deformed_points(self.grid, affine, displacement),
                                             order=1, cval=1e3)
            field = ndimage.gaussian_filter(rng.standard_normal(tissues.shape).astype(np.float32),
                                            cfg.clutter_blob_mm / cfg.spacing_mm)
            tissues = anatomy.clutter(tissues, distance, sum(layers_mm), float(rng.uniform(*cfg.clutter_extent_mm)), field)
        if rng.random() < cfg.neck_probability:
            from scipy import ndimage

            radii = (float(rng.uniform(*cfg.neck_radii_mm[0])), float(rng.uniform(*cfg.neck_radii_mm[1])))
            zone = (tissues == 0) & anatomy.neck_zone(deform.deformed_points(self.grid, affine, displacement),
                                                      self.centre_mm, float(rng.uniform(*cfg.neck_level_mm)), radii)
            field = ndimage.gaussian_filter(rng.standard_normal(tissues.shape).astype(np.float32),
                                            cfg.clutter_blob_mm / cfg.spacing_mm)
            tissues = anatomy.fill_clutter(tissues, zone, field)
        brain_mask = np.isin(tissues, anatomy.BRAIN_LABELS)
        lesion = lesions.draw_lesions(seeds, grid_points, self.grid.spacing_mm, brain_mask)
        combined = np.where(lesion > 0, N_TISSUES - 1 + lesion, tissues).astype(np.intp)
        lesion_values = tuple(N_TISSUES - 1 + v for v in lesions.LESION_LABELS)
        means, mode = intensity.label_means(rng, N_TISSUES + len(lesions.LESION_LABELS), (1, 2, 3),
                                            lesion_values, cfg.intensity)  # type: ignore[arg-type]
        mimic_voxels = 0
        if cfg.mimics.probability > 0 and rng.random() < cfg.mimics.probability:
            curves = mimics.curve_mask(rng, np.isin(tissues, (1, 2, 3)) & (lesion == 0), cfg.spacing_mm, cfg.mimics)
            means = np.append(means, mimics.mimic_mean(rng, float(means[2]), float(means[3]),
                                                       cfg.intensity.lesion_contrast))
            combined = np.where(curves, len(means) - 1, combined)
            mimic_voxels = int(curves.sum())
        image, draws = intensity.synthesize_intensities(rng, combined, means, cfg.intensity)
        volume = self.grid.volume(image)
        draws.update({"contrast": mode, "n_lesions": len(seeds), "mass_effect": len(pushed),
                      "mimic_ml": mimic_voxels * cfg.spacing_mm ** 3 / 1000.0,
                      "lesion_hyperintense": bool(means[lesion_values[0]] > 0.5 * (means[2] + means[3]))})
        if rng.random() < cfg.anisotropic_probability:
            axis, thickness = int(rng.integers(3)), float(rng.uniform(*cfg.slice_thickness_mm))
            volume = acquisition.simulate_acquisition(volume, axis, thickness)[1]
            draws.update({"thick_axis": axis, "thickness_mm": thickness})
        image, brain = volume.array, brain_mask | (lesion > 0)
        if cfg.skull_strip_probability > 0 and rng.random() < cfg.skull_strip_probability:
            margin = float(rng.uniform(*cfg.skull_strip_margin_mm))
            kept = skull_strip.strip_mask(brain, (cfg.spacing_mm,) * 3, margin)
            image, lesion, brain = np.where(kept, image, 0), np.where(kept, lesion, 0), brain & kept
            draws.update({"skull_strip_margin_mm": margin})
        return SynthCase(image=volume.with_array(image.astype(np.float32)), label=self.grid.volume(lesion),
                         draws=draws, brain=self.grid.volume(brain.astype(np.uint8)))
