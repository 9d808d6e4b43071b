"""U-Net (MONAI DynUNet) segmentation core: nnU-Net style planning, the model type and sliding-window inference.

* :func:`plan_dynunet` - nnU-Net's rule for kernel sizes, pooling strides and filters from voxel spacing.
* :class:`SegmentationModel` - a DynUNet built from a :class:`Plan`, saved as state_dict + plain-type config.
* :func:`predict` - Gaussian-weighted sliding-window inference, argmax (or a lesion probability threshold,
  :func:`~imaging_pipelines.medical.segment.operating_point.lesion_classes`), a uint8 label Volume on the input grid.
* 2D models (a :class:`Plan` with 2-element lists, :func:`plan_dynunet_2d`) segment a volume slice by slice
  across its thickest index axis (:func:`slice_axis`); brain-gated models (``brain_gate``) keep lesion
  voxels only inside the largest brain component (:mod:`~imaging_pipelines.medical.segment.brain_gate`).
* Training lives in :mod:`imaging_pipelines.medical.segment.unet_train` (:func:`train_segmentation`).

Axis conventions: ``spacing_mm`` is in ITK index order ``(i, j, k)`` = (x, y, z), as in :class:`Volume`;
``patch_size``, ``kernel_sizes`` and ``strides`` are in array order ``(z, y, x)``, as the tensors are.
No dagster import here.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import torch

from imaging_pipelines.core.storage import atomic_file
from imaging_pipelines.models.device import autocast_context, pick_device
from imaging_pipelines.medical.segment.operating_point import lesion_classes
from imaging_pipelines.medical.segment.slice_context import stack_context
from imaging_pipelines.core.volume import Volume

FORMAT_VERSION = 1


@dataclass(frozen=True)
class Plan:
    """DynUNet architecture. All per-axis lists are in array order (z, y, x), or (h, w) of a slice for a 2D
    network (2-element lists).

    ``kernel_sizes[l]`` / ``strides[l]`` are the conv kernel and stride of level ``l`` (``strides[0]`` is
    all ones: the first level does not downsample). ``patch_size`` is divisible by the product of strides.
    """

    kernel_sizes: list[list[int]]
    strides: list[list[int]]
    filters: list[int]
    patch_size: list[int]

    @property
    def n_pool_per_axis(self) -> list[int]:
        return [sum(1 for s in self.strides if s[a] > 1) for a in range(len(self.patch_size))]

    @property
    def spatial_dims(self) -> int:
        """2 for a slice-wise network, 3 for a volume network."""
        return len(self.patch_size)


def plan_dynunet(
    spacing_mm: Sequence[float],
    patch_size: Sequence[int],
    n_pool_max: int = 5,
    min_feature_size: int = 4,
    *,
    base_filters: int = 32,
    max_filters: int = 320,
) -> Plan:
    """nnU-Net (v1 ``get_pool_and_conv_props``) planning for a 3D DynUNet.

    ``spacing_mm`` in ITK order (x, y, z); ``patch_size`` in array order (z, y, x).
    At each level an axis is pooled (stride 2) only while its current spacing is within 2x of the finest
    current spacing, its feature map is at least ``2 * min_feature_size`` and it has been pooled fewer
    than ``n_pool_max`` times. Kernels are 3 along the largest group of axes whose spacings are within 2x
    of each other and 1 along the others (so a 5 mm axis among 0.8 mm ones gets kernel 1 until pooling
    has brought the in-plane spacing close). The bottleneck kernel is 3x3x3. Filters double per level
    from ``base_filters`` up to ``max_filters``. The returned patch size is padded up to a multiple of
    the total stride along each axis.
    """
    spacing = [float(s) for s in list(spacing_mm)[::-1]]  # -> (z, y, x)
    size = [int(s) for s in patch_size]
    if len(spacing) != 3 or len(size) != 3:
        raise ValueError("plan_dynunet expects 3D spacing and patch size")
    if any(s <= 0 for s in spacing) or any(p <= 0 for p in size):
        raise ValueError(f"spacing and patch size must be positive; got {spacing_mm}, {patch_size}")
    cur_spacing, cur_size = list(spacing), [float(s) for s in size]
    n_pool = [0, 0, 0]
    kernels: list[list[int]] = []
    pools: list[list[int]] = []
    while True:
        min_sp = min(cur_spacing)
        valid = [a for a in range(3) if cur_spacing[a] / min_sp < 2]
        group: list[int] = []
        for a in range(3):
            partners = [b for b in range(3) if cur_spacing[b] / cur_spacing[a] < 2 and cur_spacing[a] / cur_spacing[b] < 2]
            if len(partners) > len(group):
                group = partners
        kernel = [3 if a in group else 1 for a in range(3)]
        valid = [a for a in valid if cur_size[a] >= 2 * min_feature_size and n_pool[a] < n_pool_max]
        if not valid:
            break
        pool = [1, 1, 1]
        for a in valid:
            pool[a] = 2
            n_pool[a] += 1
            cur_spacing[a] *= 2
            cur_size[a] = math.ceil(cur_size[a] / 2)
        pools.append(pool)
        kernels.append(kernel)
    kernels.append([3, 3, 3])
    strides = [[1, 1, 1]] + pools
    divisor = [2 ** n for n in n_pool]
    padded = [int(math.ceil(s / d) * d) for s, d in zip(size, divisor)]
    filters = [min(base_filters * 2**i, max_filters) for i in range(len(kernels))]
    return Plan(kernel_sizes=kernels, strides=strides, filters=filters, patch_size=padded)


def plan_dynunet_2d(spacing_mm: float, patch_size: Sequence[int], **kwargs: Any) -> Plan:
    """A 2D plan (lists in slice order (h, w)) for in-plane pixels of ``spacing_mm`` and a ``patch_size``
    (h, w) slice patch: :func:`plan_dynunet` of a one-voxel-thick slab, the slab axis dropped."""
    p = plan_dynunet((spacing_mm, spacing_mm, 1e6), (1, *patch_size), **kwargs)
    return Plan(kernel_sizes=[k[1:] for k in p.kernel_sizes], strides=[s[1:] for s in p.strides], filters=p.filters,
                patch_size=p.patch_size[1:])


def slice_axis(spacing_mm: Sequence[float]) -> int:
    """The index axis (0 i, 1 j, 2 k) a 2D model slices across: the one of largest spacing (``spacing_mm`` in
    (x, y, z) order), k on ties (so an isotropic volume is cut into k-slices)."""
    sp = np.asarray(spacing_mm, dtype=float)
    return max(a for a in range(3) if sp[a] >= sp.max() * (1 - 1e-3))


@dataclass
class SegmentationModel:
    """A DynUNet plus everything needed to apply it: plan, classes, normalisation, provenance.

    ``label_values[c]`` is the label value written for class ``c`` (default ``c``). ``version`` is a
    sha256 hex digest given by the trainer (code + training data + parameters). ``brain_gate``: class 0 is
    outside the brain, class 1 brain, higher classes lesions, and predictions are gated to the largest brain
    component (:func:`~imaging_pipelines.medical.segment.brain_gate.gate_to_brain`); ``label_values`` then
    usually writes 0 for the brain class too. A plan with 2-element lists is a 2D network applied per slice
    (:func:`slice_axis`; ``spacing_mm`` is then the in-plane spacing, the slice axis keeps its own).
    """

    plan: Plan
    n_classes: int
    in_channels: int = 1
    deep_supervision: bool = False
    label_values: list[int] = field(default_factory=list)
    normalization: str = "zscore"
    version: str = ""
    spacing_mm: list[float] = field(default_factory=lambda: [1.0, 1.0, 1.0])
    architecture: str = "dynunet"  # "dynunet" (MONAI DynUNet) or "unet" (MONAI UNet, residual units)
    resample_input: bool = False  # predict resamples the image to spacing_mm first and the labels back
    brain_gate: bool = False  # classes: 0 outside the brain, 1 brain, 2.. lesion; lesions kept in the brain only
    slice_context: int = 0  # 2D model: neighbours each side stacked as channels (segment.slice_context; 2.5D)
    # None: the argmax; else a voxel is lesion where the summed lesion probability >= this (lesion_classes)
    lesion_threshold: float | None = None
    network: torch.nn.Module | None = None

    def __post_init__(self) -> None:
        if not self.label_values:
            self.label_values = list(range(self.n_classes))
        if len(self.label_values) != self.n_classes:
            raise ValueError(f"label_values {self.label_values} must have n_classes={self.n_classes} entries")
        if self.network is None:
            self.network = build_network(self.plan, self.in_channels, self.n_classes, self.deep_supervision,
                                         self.architecture)
        if self.slice_context and (self.plan.spatial_dims != 2 or self.in_channels != 2 * self.slice_context + 1):
            raise ValueError(f"slice_context {self.slice_context} needs a 2D plan and in_channels = "
                             f"{2 * self.slice_context + 1}; got {self.plan.spatial_dims}D, {self.in_channels}")
        if self.brain_gate and self.n_classes < 3:
            raise ValueError("a brain-gated model needs classes 0 outside, 1 brain and at least one lesion class")
        if self.lesion_threshold is not None and not 0.0 < self.lesion_threshold < 1.0:
            raise ValueError(f"lesion_threshold must lie in (0, 1) or be None (argmax); got {self.lesion_threshold}")

    def config(self) -> dict[str, Any]:
        """Plain-type (JSON-able) description of the model, everything but the weights."""
        return {
            "format_version": FORMAT_VERSION,
            "plan": asdict(self.plan),
            "n_classes": int(self.n_classes),
            "in_channels": int(self.in_channels),
            "deep_supervision": bool(self.deep_supervision),
            "label_values": [int(v) for v in self.label_values],
            "normalization": str(self.normalization),
            "version": str(self.version),
            "spacing_mm": [float(s) for s in self.spacing_mm],
            "architecture": self.architecture,
            "resample_input": bool(self.resample_input),
            "brain_gate": bool(self.brain_gate),
            "slice_context": int(self.slice_context),
            "lesion_threshold": None if self.lesion_threshold is None else float(self.lesion_threshold),
        }

    def save(self, path: str | Path) -> Path:
        """Write ``{"config": ..., "state_dict": ...}`` with ``torch.save`` (CPU tensors, plain types only)."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.network.state_dict().items()}
        with atomic_file(path) as tmp:
            torch.save({"config": self.config(), "state_dict": state}, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, map_location: str | torch.device = "cpu") -> SegmentationModel:
        """Read a file written by :meth:`save` (with ``torch.load(weights_only=True)``)."""
        blob = torch.load(Path(path), map_location=map_location, weights_only=True)
        cfg = blob["config"]
        if cfg.get("format_version") != FORMAT_VERSION:
            raise ValueError(f"unsupported model format {cfg.get('format_version')!r}")
        model = cls(
            plan=Plan(**cfg["plan"]),
            n_classes=cfg["n_classes"],
            in_channels=cfg["in_channels"],
            deep_supervision=cfg["deep_supervision"],
            label_values=cfg["label_values"],
            normalization=cfg["normalization"],
            version=cfg["version"],
            spacing_mm=cfg["spacing_mm"],
            architecture=cfg.get("architecture", "dynunet"),
            resample_input=bool(cfg.get("resample_input", False)),
            brain_gate=bool(cfg.get("brain_gate", False)),
            slice_context=int(cfg.get("slice_context", 0)),
            lesion_threshold=cfg.get("lesion_threshold"),
        )
        model.network.load_state_dict(blob["state_dict"])
        model.network.eval()
        return model


def build_network(plan: Plan, in_channels: int, n_classes: int, deep_supervision: bool = False,
                  architecture: str = "dynunet") -> torch.nn.Module:
    """A MONAI DynUNet for ``plan`` (instance norm, leaky ReLU, as nnU-Net), or with ``architecture="unet"``
    a MONAI UNet with the plan's filters and strides (two residual units per level, instance norm; no deep
    supervision); 2D or 3D after :attr:`Plan.spatial_dims`."""
    from monai.networks.nets import DynUNet, UNet

    if architecture == "unet":
        if deep_supervision:
            raise ValueError("deep supervision needs architecture 'dynunet'")
        return UNet(spatial_dims=plan.spatial_dims, in_channels=in_channels, out_channels=n_classes, channels=plan.filters,
                    strides=[tuple(s) for s in plan.strides[1:]], num_res_units=2, norm="INSTANCE")
    if architecture != "dynunet":
        raise ValueError(f"unknown architecture {architecture!r}; use 'dynunet' or 'unet'")

    n_levels = len(plan.strides)
    return DynUNet(
        spatial_dims=plan.spatial_dims,
        in_channels=in_channels,
        out_channels=n_classes,
        kernel_size=plan.kernel_sizes,
        strides=plan.strides,
        upsample_kernel_size=plan.strides[1:],
        filters=plan.filters,
        norm_name=("INSTANCE", {"affine": True}),
        deep_supervision=deep_supervision,
        deep_supr_num=max(1, min(2, n_levels - 2)),
    )


def normalize_intensity(array: np.ndarray, mode: str = "zscore") -> np.ndarray:
    """Per-image z-score: ``"zscore"`` over the whole image, ``"zscore_nonzero"`` over voxels > 0; or
    ``"percentile"``: ``(a - p0.5) / (p99.5_head - p0.5)`` clipped to [-0.5, 2], with ``p0.5`` the 0.5th
    percentile of the image and ``p99.5_head`` the 99.5th of the voxels above the image mean (a crude head
    mask), robust to contrast, air fraction and bright outliers."""
    a = np.asarray(array, dtype=np.float32)
    if mode == "percentile":
        low = float(np.percentile(a, 0.5))
        head = a[a > a.mean()]
        high = float(np.percentile(head, 99.5)) if head.size else float(a.max())
        return np.clip((a - low) / max(high - low, 1e-8), -0.5, 2.0).astype(np.float32)
    if mode == "zscore":
        values = a
    elif mode == "zscore_nonzero":
        values = a[a > 0] if np.any(a > 0) else a
    else:
        raise ValueError(f"unknown normalization {mode!r}")
    mean, std = float(values.mean()), float(values.std())
    return ((a - mean) / max(std, 1e-8)).astype(np.float32)


def _blended_logits(model: SegmentationModel, x: torch.Tensor, overlap: float, sw_batch_size: int,
                    dev: torch.device, axis: int = 2) -> torch.Tensor:
    """Gaussian-blended sliding-window logits ``[1, C, z, y, x]`` (float32) of the normalised input ``x``
    (``[1, 1, z, y, x]``, already on ``dev``), left on ``dev``. A 2D model sees the slices across index axis
    ``axis`` (0 i, 1 j, 2 k) as a batch of 2D images, each with its ``slice_context`` neighbours on each side
    (the adjacent slices of this grid) as extra channels
    (:func:`~imaging_pipelines.medical.segment.slice_context.stack_context`)."""
    from monai.inferers import sliding_window_inference

    net = model.network.to(dev).eval()

    def forward(batch: torch.Tensor) -> torch.Tensor:
        with autocast_context(dev):
            return net(batch).float()

    dim = 2 + (2 - axis)  # the tensor dimension of the slice axis
    if model.plan.spatial_dims == 2:
        x = x[0].movedim(dim - 1, 0)  # [slices, 1, h, w]
        if model.slice_context:
            x = stack_context(x[:, 0], model.slice_context)  # [slices, 2 context + 1, h, w]
        sw_batch_size = max(sw_batch_size, 16)
    out = sliding_window_inference(
        x, roi_size=list(model.plan.patch_size), sw_batch_size=sw_batch_size, predictor=forward,
        overlap=overlap, mode="gaussian", padding_mode="constant", cval=float(x.min()),
    ).float()
    return out.movedim(0, dim - 1)[None] if model.plan.spatial_dims == 2 else out


def _network_input(model: SegmentationModel, image: Volume, dev: torch.device) -> torch.Tensor:
    if image.is_timeseries:
        raise ValueError("predict expects a 3D image Volume")
    return torch.from_numpy(normalize_intensity(image.array, model.normalization))[None, None].to(dev)


@torch.no_grad()
def predict_probabilities(
    model: SegmentationModel,
    image: Volume,
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    device: str | torch.device = "auto",
    flip_tta: bool = False,
    softmax: bool = True,
    axis: int | None = None,
) -> torch.Tensor:
    """Softmax class probabilities ``[C, z, y, x]`` (float32, CPU) by Gaussian sliding-window inference
    (the blended logits instead with ``softmax=False``), on ``image``'s own grid (no resampling, no gate).

    ``flip_tta``: also predict the input flipped along every non-empty subset of the three axes (8 passes,
    nnU-Net's mirroring; a 2D model: of its two in-plane axes, 4 passes, as a flip across the slices changes
    nothing) and average the softmax outputs after flipping them back. ``axis``: the slice axis
    of a 2D model (default :func:`slice_axis` of the image spacing)."""
    dev = device if isinstance(device, torch.device) else pick_device(device)
    x = _network_input(model, image, dev)
    axis = slice_axis(image.spacing) if axis is None else axis

    def scores(inp: torch.Tensor) -> torch.Tensor:
        logits = _blended_logits(model, inp, overlap, sw_batch_size, dev, axis)
        return (torch.softmax(logits, dim=1) if softmax or flip_tta else logits)[0].cpu()

    if not flip_tta:
        return scores(x)
    # a 2D model segments each slice alone, so a flip across the slices gives the same scores: in-plane only
    dims = [d for d in (2, 3, 4) if model.plan.spatial_dims == 3 or d != 2 + (2 - axis)]
    flips = [[d for k, d in enumerate(dims) if mask >> k & 1] for mask in range(2 ** len(dims))]
    total = sum(scores(torch.flip(x, f)).flip([a - 1 for a in f]) if f else scores(x) for f in flips)
    return total / len(flips)


def working_spacing(model: SegmentationModel, image: Volume, axis: int) -> list[float]:
    """The spacing (mm, (x, y, z)) ``predict`` segments ``image`` at: ``model.spacing_mm``, except along the
    slice axis ``axis`` of a 2D model, which keeps the image's own spacing."""
    target = [float(s) for s in model.spacing_mm]
    if model.plan.spatial_dims == 2:
        target[axis] = float(image.spacing[axis])
    return target


@torch.no_grad()
def predict(
    model: SegmentationModel,
    image: Volume,
    *,
    overlap: float = 0.5,
    sw_batch_size: int = 2,
    device: str | torch.device = "auto",
    flip_tta: bool = False,
    atlas_gate: bool = True,
) -> Volume:
    """uint8 label Volume on ``image``'s grid: argmax of the sliding-window softmax (a model with a
    ``lesion_threshold``: :func:`~imaging_pipelines.medical.segment.operating_point.lesion_classes` at that
    threshold), brain-gated for a
    ``brain_gate`` model (:func:`~imaging_pipelines.medical.segment.brain_gate.gate_to_brain`; with
    ``atlas_gate`` the brain is first limited to the registered MNI152 brain when that registration is
    trusted, :func:`~imaging_pipelines.medical.segment.atlas_brain.trusted_atlas_brain`, and the label map's
    ``brain_prior`` attribute says which gate was used; ``network_brain_ml`` is the gated brain's volume in
    mL and ``brain_warning`` is set when it is implausibly small,
    :func:`~imaging_pipelines.medical.segment.brain_gate.brain_volume_warning`), mapped to ``label_values``. Without TTA the argmax
    runs on the device, so only the label map (1 byte per voxel) comes back to the host. A model with ``resample_input`` predicts on ``image`` resampled (linear, anti-aliased,
    same field of view and direction) to :func:`working_spacing` and returns the labels resampled back
    (nearest neighbour). A 2D model segments the slices across :func:`slice_axis` of ``image``."""
    axis = slice_axis(image.spacing)
    target = working_spacing(model, image, axis)
    if model.resample_input and not np.allclose(image.spacing, target, rtol=1e-3):
        from imaging_pipelines.medical.preprocess.resample import resample_like, resample_to_spacing

        work = resample_to_spacing(image, target, interpolator="linear", antialias=True)
        labels = _predict_on_grid(model, work, overlap, sw_batch_size, device, flip_tta, axis, atlas_gate)
        back = resample_like(labels, image, interpolator="nearest")
        return Volume(array=np.asarray(back.array, dtype=np.uint8), spacing=image.spacing, origin=image.origin,
                      direction=image.direction, attributes=dict(labels.attributes))
    return _predict_on_grid(model, image, overlap, sw_batch_size, device, flip_tta, axis, atlas_gate)


def _predict_on_grid(model: SegmentationModel, image: Volume, overlap: float, sw_batch_size: int,
                     device: str | torch.device, flip_tta: bool, axis: int, atlas_gate: bool = False) -> Volume:
    dev = device if isinstance(device, torch.device) else pick_device(device)
    if flip_tta or model.lesion_threshold is not None:
        probabilities = predict_probabilities(model, image, overlap=overlap, sw_batch_size=sw_batch_size,
                                              device=dev, flip_tta=flip_tta, axis=axis)
        classes = lesion_classes(probabilities, model.brain_gate, model.lesion_threshold)
    else:  # argmax of logits = argmax of softmax
        logits = _blended_logits(model, _network_input(model, image, dev), overlap, sw_batch_size, dev, axis)
        classes = torch.argmax(logits[0], dim=0).to(torch.uint8).cpu().numpy()
    attributes = {"model_version": model.version}
    if model.brain_gate:
        from imaging_pipelines.medical.segment.brain_gate import brain_volume_warning, gate_to_brain

        prior = None
        if atlas_gate and not image.is_timeseries:
            from imaging_pipelines.medical.segment.atlas_brain import trusted_atlas_brain

            prior, attributes["brain_prior"] = trusted_atlas_brain(image, classes >= 1)
        classes = gate_to_brain(classes, prior)
        brain_ml = float(np.count_nonzero(classes >= 1)) * float(np.prod(image.spacing)) / 1000.0
        attributes["network_brain_ml"] = round(brain_ml, 1)
        if (warning := brain_volume_warning(brain_ml)) is not None:
            attributes["brain_warning"] = warning
    lut = np.asarray(model.label_values, dtype=np.uint8)
    return Volume(array=lut[classes], spacing=image.spacing, origin=image.origin, direction=image.direction,
                  attributes=attributes)
