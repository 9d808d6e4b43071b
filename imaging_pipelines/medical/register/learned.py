"""Learned (VoxelMorph-style) deformable registration of subjects to an atlas.

Typical use::

    model = train_voxelmorph(subjects_on_atlas_grid, atlas, epochs=100, log=print)
    model.save("voxelmorph.pt")
    result = register_learned(atlas, subject, LearnedModel.load("voxelmorph.pt"))
    labels_on_atlas = warp_labels_learned(subject_labels, atlas, result)

Conventions (as in :mod:`imaging_pipelines.medical.register.result`): fixed = atlas, moving = subject; the result's
``displacement`` is (z, y, x, 3) LPS millimetres, components (x, y, z), sampled on the fixed grid, with
``point_in_moving = point_in_fixed + displacement``; ``transform`` is the same field as a SimpleITK
``DisplacementFieldTransform`` (fixed -> moving points), so ``sitk.Resample(moving, fixed, transform)`` works.

Training is unsupervised (local NCC + smoothness penalty on the displacement), optionally weakly supervised
with a Dice term on masks. The model file, the network and the loss are described in
:mod:`imaging_pipelines.medical.register.learned_model`.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from imaging_pipelines.models.device import autocast_context, grad_scaler, pick_device
from imaging_pipelines.medical.register.learned_model import (
    DEFAULT_NETWORK, LearnedModel, build_network, crop, ddf_to_world_mm, network_levels, normalise_intensity,
    padding_for, to_network_tensor,
)
from imaging_pipelines.medical.register.metrics import jacobian_stats, similarity
from imaging_pipelines.medical.register.result import RegistrationResult
from imaging_pipelines.core.volume import Volume

__all__ = [
    "LearnedModel", "train_voxelmorph", "register_learned", "warp_labels_learned", "warp_volume",
    "displacement_to_sitk_transform", "resample_to_grid",
]


# --------------------------------------------------------------------------- geometry helpers
def displacement_to_sitk_transform(displacement: np.ndarray, fixed: Volume):
    """A SimpleITK ``DisplacementFieldTransform`` from a (z, y, x, 3) LPS-mm displacement on ``fixed``'s grid.

    ``transform.TransformPoint(p) == p + displacement(p)`` (linearly interpolated; zero outside the grid),
    i.e. it maps fixed points to moving points and can be passed straight to ``sitk.Resample``.
    """
    import SimpleITK as sitk

    d = np.asarray(displacement, dtype=np.float64)
    if d.shape != (*fixed.spatial_shape, 3):
        raise ValueError(f"displacement shape {d.shape} does not match the fixed grid {fixed.spatial_shape} + (3,)")
    field = sitk.GetImageFromArray(d, isVector=True)
    field.SetSpacing(fixed.spacing)
    field.SetOrigin(fixed.origin)
    field.SetDirection(tuple(fixed.direction.ravel()))
    return sitk.DisplacementFieldTransform(field)


def warp_volume(volume: Volume, fixed: Volume, displacement: np.ndarray | None = None,
                interpolation: str = "linear", default_value: float = 0.0) -> Volume:
    """Resample ``volume`` (any grid, moving space) onto ``fixed``'s grid through a displacement field.

    ``displacement`` is (z, y, x, 3) LPS mm on the fixed grid (None = identity, a plain resampling);
    ``interpolation`` is ``"linear"`` or ``"nearest"`` (use nearest for label maps). Keeps the input dtype.
    """
    import SimpleITK as sitk

    interpolators = {"linear": sitk.sitkLinear, "nearest": sitk.sitkNearestNeighbor}
    if interpolation not in interpolators:
        raise ValueError(f"interpolation must be one of {sorted(interpolators)}; got {interpolation!r}")
    transform = (sitk.Transform(3, sitk.sitkIdentity) if displacement is None
                 else displacement_to_sitk_transform(displacement, fixed))
    reference = fixed.with_array(np.zeros(fixed.spatial_shape, dtype=np.uint8)).to_sitk()
    image = volume.to_sitk()
    out = sitk.Resample(image, reference, transform, interpolators[interpolation], float(default_value),
                        image.GetPixelID())
    return Volume.from_sitk(out)


def resample_to_grid(volume: Volume, fixed: Volume) -> Volume:
    """``volume`` on ``fixed``'s grid (returned unchanged when it already is), linear interpolation."""
    return volume if volume.same_geometry(fixed) else warp_volume(volume, fixed, None, "linear")


def warp_labels_learned(labels: Volume, fixed: Volume, result: RegistrationResult) -> Volume:
    """Map a label map / mask of the moving image onto the fixed grid with the result's displacement (nearest)."""
    if result.displacement is None:
        raise ValueError("the registration result has no displacement field")
    return warp_volume(labels, fixed, result.displacement, interpolation="nearest")


# --------------------------------------------------------------------------- training
def _random_smooth_ddf(shape, n: int, amplitude_vox: float, generator: torch.Generator) -> torch.Tensor:
    """Random smooth voxel-unit displacement (n, 3, z, y, x): Gaussian noise on a 4^3 grid, trilinear upsampling."""
    coarse = torch.randn((n, 3, 4, 4, 4), generator=generator) * amplitude_vox
    return F.interpolate(coarse, size=tuple(shape), mode="trilinear", align_corners=True)


def _augment(images: torch.Tensor, warp: torch.nn.Module, generator: torch.Generator) -> torch.Tensor:
    """Random smooth deformation (all channels alike) and a random gamma on channel 0 (the image)."""
    ddf = _random_smooth_ddf(images.shape[2:], images.shape[0], 1.0, generator).to(images.device)
    out = warp(images, ddf)
    gamma = torch.exp((torch.rand((images.shape[0], 1, 1, 1, 1), generator=generator) - 0.5) * 0.4).to(images)
    return torch.cat([out[:, :1].clamp(min=0.0) ** gamma, out[:, 1:]], dim=1)


def train_voxelmorph(moving: Sequence[Volume], fixed: Volume, *, epochs: int, lr: float = 1e-3,
                     lambda_reg: float = 0.1, seed: int = 0, device: str = "auto", augment: bool = True,
                     log: Callable[[str], None] | None = None, moving_masks: Sequence[Volume] | None = None,
                     fixed_mask: Volume | None = None, dice_weight: float = 0.0, ncc_kernel: int = 7,
                     regulariser: str = "diffusion", batch_size: int = 1, network: dict | None = None,
                     ) -> LearnedModel:
    """Train a VoxelMorph network to register each ``moving`` image to ``fixed`` (the atlas).

    ``moving``: subject volumes; resampled onto ``fixed``'s grid when not already on it. Intensities are
    percentile-normalised per image. Loss per pair: ``LNCC(warped, fixed; ncc_kernel)`` +
    ``lambda_reg * regulariser(ddf)`` (``"diffusion"``: squared gradient, or ``"bending"``: bending energy, of the
    voxel-unit displacement) + ``dice_weight * (1 - Dice(warped moving mask, fixed mask))`` when masks are given
    and ``dice_weight > 0``. ``augment`` adds a random smooth deformation and gamma to each moving image per step.
    ``network`` overrides the architecture (see :data:`DEFAULT_NETWORK`). Deterministic for a seed on CPU.
    ``log`` receives one progress line every few epochs. Returns the model in eval mode.
    """
    from monai.losses import BendingEnergyLoss, DiceLoss, DiffusionLoss, LocalNormalizedCrossCorrelationLoss

    if not moving:
        raise ValueError("train_voxelmorph needs at least one moving image")
    use_dice = dice_weight > 0
    if use_dice and (moving_masks is None or fixed_mask is None or len(moving_masks) != len(moving)):
        raise ValueError("dice_weight > 0 needs one moving mask per moving image and a fixed mask")
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    dev = pick_device(device)
    net_config = {**DEFAULT_NETWORK, **(network or {})}
    net_config = {k: list(v) if isinstance(v, tuple) else v for k, v in net_config.items()}
    net = build_network(**net_config).to(dev)
    pads = padding_for(fixed.spatial_shape, 2 ** network_levels(net_config["channels"]))

    fixed_t = to_network_tensor(normalise_intensity(fixed.array), pads, dev)
    stacks = []
    for i, volume in enumerate(moving):
        channels = [to_network_tensor(normalise_intensity(resample_to_grid(volume, fixed).array), pads, dev)]
        if use_dice:
            mask = resample_to_grid(moving_masks[i].with_array(moving_masks[i].array.astype(np.float32)), fixed)
            channels.append(to_network_tensor(mask.array > 0.5, pads, dev))
        stacks.append(torch.cat(channels, dim=1))
    data = torch.cat(stacks, dim=0)  # (N, 1 or 2, Z, Y, X): image (+ mask)
    fixed_mask_t = to_network_tensor(fixed_mask.array > 0, pads, dev) if use_dice else None

    similarity_loss = LocalNormalizedCrossCorrelationLoss(spatial_dims=3, kernel_size=ncc_kernel)
    regulariser_loss = {"diffusion": DiffusionLoss(), "bending": BendingEnergyLoss()}[regulariser]
    dice_loss = DiceLoss()
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    scaler = grad_scaler(dev)
    curve: list[float] = []
    log_every = max(1, epochs // 10)
    start = time.perf_counter()
    net.train()
    for epoch in range(1, epochs + 1):
        order = torch.randperm(len(data), generator=generator)
        total = 0.0
        for first in range(0, len(data), batch_size):
            batch = data[order[first:first + batch_size]]
            if augment:
                batch = _augment(batch, net.warp, generator)
            fixed_b = fixed_t.expand(len(batch), -1, -1, -1, -1)
            with autocast_context(dev):
                warped, ddf = net(batch[:, :1], fixed_b)
            warped, ddf = warped.float(), ddf.float()
            loss = similarity_loss(warped, fixed_b) + lambda_reg * regulariser_loss(ddf)
            if use_dice:
                warped_mask = net.warp(batch[:, 1:], ddf)
                loss = loss + dice_weight * dice_loss(warped_mask, fixed_mask_t.expand_as(warped_mask))
            optimiser.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            scaler.step(optimiser)
            scaler.update()
            total += float(loss.detach()) * len(batch)
        curve.append(total / len(data))
        if log is not None and (epoch % log_every == 0 or epoch == epochs):
            elapsed = time.perf_counter() - start
            log(f"voxelmorph epoch {epoch}/{epochs} loss {curve[-1]:.4f} ({elapsed / epoch:.2f} s/epoch on {dev.type})")
    net.eval()
    config = {
        "network": net_config, "epochs": epochs, "lr": lr, "lambda_reg": lambda_reg, "regulariser": regulariser,
        "ncc_kernel": ncc_kernel, "dice_weight": dice_weight, "augment": augment, "seed": seed,
        "batch_size": batch_size, "n_training_pairs": len(moving), "intensity_percentiles": [0.5, 99.5],
        "train_seconds": time.perf_counter() - start, "train_device": dev.type,
    }
    return LearnedModel(network=net, grid_shape=fixed.spatial_shape, spacing=fixed.spacing,
                        training_curve=curve, config=config)


# --------------------------------------------------------------------------- inference
def _cpu_warp() -> torch.nn.Module:
    """MONAI's bilinear ``Warp`` (samples the image at ``index + ddf``; zero outside), without its fallback warning."""
    import warnings

    from monai.networks.blocks import Warp

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return Warp(mode="bilinear", padding_mode="zeros")


def predict_ddf(model: LearnedModel, fixed: Volume, moving_on_grid: Volume) -> np.ndarray:
    """The network's voxel-unit displacement (3, z, y, x), channels (dz, dy, dx), for a pair on the fixed grid."""
    if tuple(fixed.spatial_shape) != tuple(model.grid_shape):
        raise ValueError(f"model was trained for grid {tuple(model.grid_shape)}; fixed grid is {fixed.spatial_shape}"
                         " (resample the images onto the atlas grid the model was trained on)")
    if not np.allclose(fixed.spacing, model.spacing, rtol=1e-3):
        raise ValueError(f"model was trained for spacing {model.spacing} mm; fixed spacing is {fixed.spacing}")
    dev = model.device
    pads = padding_for(fixed.spatial_shape, 2 ** network_levels(model.config["network"]["channels"]))
    fixed_t = to_network_tensor(normalise_intensity(fixed.array), pads, dev)
    moving_t = to_network_tensor(normalise_intensity(moving_on_grid.array), pads, dev)
    model.network.eval()
    with torch.no_grad(), autocast_context(dev):
        _, ddf = model.network(moving_t, fixed_t)
    return crop(ddf.float(), pads)[0].cpu().numpy()


def register_learned(fixed: Volume, moving: Volume, model: LearnedModel) -> RegistrationResult:
    """Register ``moving`` (subject; resampled onto the fixed grid if needed) to ``fixed`` (atlas) with ``model``.

    Returns method ``"learned"``: ``warped`` = moving resampled through the field (original intensities, fixed
    geometry), ``displacement`` (z, y, x, 3) LPS mm, ``transform`` = the same as a SimpleITK displacement-field
    transform, and metrics ``ncc_before/after``, ``mi_before/after``, Jacobian statistics including
    ``folding_fraction``, and ``runtime_s``.
    """
    start = time.perf_counter()
    moving_on_grid = resample_to_grid(moving, fixed)
    ddf = predict_ddf(model, fixed, moving_on_grid)
    with torch.no_grad():
        image = torch.from_numpy(np.ascontiguousarray(moving_on_grid.array, dtype=np.float32))[None, None]
        warped_array = _cpu_warp()(image, torch.from_numpy(ddf)[None])[0, 0].numpy()
    warped = fixed.with_array(warped_array.astype(np.float32))
    displacement = ddf_to_world_mm(ddf, fixed.spacing, fixed.direction)
    before = similarity(fixed, moving_on_grid)
    after = similarity(fixed, warped)
    metrics = {"ncc_before": before["ncc"], "ncc_after": after["ncc"], "mi_before": before["mi"], "mi_after": after["mi"],
               **jacobian_stats(displacement, fixed.spacing, fixed.direction)}
    transform = displacement_to_sitk_transform(displacement, fixed)
    metrics["runtime_s"] = time.perf_counter() - start
    return RegistrationResult(method="learned", warped=warped, transform=transform, displacement=displacement,
                              metrics=metrics, stages=["learned"])
