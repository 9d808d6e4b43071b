"""The learned-registration model: a VoxelMorph network (MONAI), its input preparation, and saving / loading.

* Network: :class:`VoxelMorphNet`, MONAI's VoxelMorph parts (``VoxelMorphUNet`` backbone, ``DVF2DDF``, ``Warp``).
  The backbone predicts a stationary velocity field that is integrated by scaling and squaring
  (:class:`monai.networks.blocks.DVF2DDF`), so the displacement is diffeomorphic (no folding in theory, very
  little after discretisation).
* Network tensors are (batch, channel, z, y, x). The output displacement (DDF) is in **voxel units** with
  channels in array-axis order (z, y, x) and samples the moving image at ``index + ddf`` (MONAI ``Warp``);
  :func:`ddf_to_world_mm` turns it into the project's (z, y, x, 3) LPS-mm displacement, components (x, y, z).
* Inputs are intensity-normalised per image (percentile scaling to [0, 1]) and zero-padded to a multiple of
  ``2 ** levels`` (one level per max-pooling in the U-Net).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from imaging_pipelines.core.storage import atomic_file
from imaging_pipelines.core.volume import Volume

DEFAULT_NETWORK = {
    "channels": (16, 32, 32, 32, 32, 32),  # (down, up) channel pairs, one pair per U-Net level
    "final_conv_channels": (16, 16),
    "integration_steps": 7,  # scaling-and-squaring steps; 0 = plain (non-diffeomorphic) displacement
    "half_res": True,  # integrate the velocity at half resolution (VoxelMorph's default int_downsize=2)
}


class VoxelMorphNet(torch.nn.Module):
    """VoxelMorph: ``forward(moving, fixed) -> (warped, ddf)``; tensors (B, 1, z, y, x) and (B, 3, z, y, x).

    Same parts as :class:`monai.networks.nets.VoxelMorph` (``VoxelMorphUNet`` backbone, ``DVF2DDF``
    scaling-and-squaring, ``Warp``), but with the half-resolution integration scaled as in the original
    VoxelMorph: a displacement of d voxels is d / 2 voxels at half resolution (MONAI 1.6.1 multiplies by 2 on
    the way down and by 0.5 on the way up, which shrinks every displacement fourfold).
    """

    def __init__(self, backbone: torch.nn.Module, integration_steps: int = 7, half_res: bool = True) -> None:
        super().__init__()
        from monai.networks.blocks import DVF2DDF, Warp

        self.backbone = backbone
        self.half_res = half_res
        with warnings.catch_warnings():  # MONAI warns that it uses torch's grid_sample (no compiled extension)
            warnings.simplefilter("ignore", UserWarning)
            self.dvf2ddf = DVF2DDF(num_steps=integration_steps) if integration_steps > 0 else None
            self.warp = Warp(mode="bilinear", padding_mode="zeros")

    def forward(self, moving: torch.Tensor, fixed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        field = self.backbone(torch.cat([moving, fixed], dim=1))
        if self.dvf2ddf is not None:  # stationary velocity -> diffeomorphic displacement
            if self.half_res:
                field = F.interpolate(field, scale_factor=0.5, mode="trilinear", align_corners=True) * 0.5
            field = self.dvf2ddf(field)
            if self.half_res:
                field = F.interpolate(field, size=moving.shape[2:], mode="trilinear", align_corners=True) * 2.0
        return self.warp(moving, field), field


def build_network(channels=DEFAULT_NETWORK["channels"], final_conv_channels=DEFAULT_NETWORK["final_conv_channels"],
                  integration_steps: int = DEFAULT_NETWORK["integration_steps"],
                  half_res: bool = DEFAULT_NETWORK["half_res"]) -> VoxelMorphNet:
    """A 3D VoxelMorph network with a MONAI ``VoxelMorphUNet`` backbone (see :class:`VoxelMorphNet`)."""
    from monai.networks.nets import VoxelMorphUNet

    backbone = VoxelMorphUNet(spatial_dims=3, in_channels=2, unet_out_channels=int(channels[1]),
                              channels=tuple(int(c) for c in channels),
                              final_conv_channels=tuple(int(c) for c in final_conv_channels))
    # VoxelMorph's flow layer starts near zero (identity transform), as in the original implementation.
    flow = backbone.net[-1].final_conv_out.conv
    torch.nn.init.normal_(flow.weight, mean=0.0, std=1e-5)
    torch.nn.init.zeros_(flow.bias)
    return VoxelMorphNet(backbone, integration_steps=int(integration_steps), half_res=bool(half_res))


def network_levels(channels) -> int:
    """Number of 2x down-samplings in a VoxelMorphUNet with these channel pairs."""
    return len(channels) // 2


def normalise_intensity(array: np.ndarray, low: float = 0.5, high: float = 99.5) -> np.ndarray:
    """Percentile scaling to [0, 1] (float32): the ``low``-th percentile maps to 0, the ``high``-th to 1, clipped."""
    a = np.asarray(array, dtype=np.float32)
    lo, hi = np.percentile(a, [low, high])
    if hi <= lo:
        return np.zeros_like(a)
    return np.clip((a - lo) / (hi - lo), 0.0, 1.0).astype(np.float32)


def padding_for(shape: tuple[int, int, int], multiple: int) -> tuple[tuple[int, int], ...]:
    """Per-axis (before, after) zero padding that makes ``shape`` a multiple of ``multiple``."""
    pads = []
    for n in shape:
        extra = (-n) % multiple
        pads.append((extra // 2, extra - extra // 2))
    return tuple(pads)


def to_network_tensor(array: np.ndarray, pads, device: torch.device) -> torch.Tensor:
    """(z, y, x) array -> zero-padded float32 tensor (1, 1, Z, Y, X) on ``device``."""
    padded = np.pad(np.asarray(array, dtype=np.float32), pads)
    return torch.from_numpy(np.ascontiguousarray(padded))[None, None].to(device)


def crop(tensor: torch.Tensor, pads) -> torch.Tensor:
    """Undo :func:`padding_for` on the last three axes of a (B, C, Z, Y, X) tensor."""
    (z0, z1), (y0, y1), (x0, x1) = pads
    z, y, x = tensor.shape[-3:]
    return tensor[..., z0:z - z1, y0:y - y1, x0:x - x1]


def ddf_to_world_mm(ddf: np.ndarray, spacing, direction) -> np.ndarray:
    """Voxel-unit DDF (3, z, y, x), channels (dz, dy, dx) -> LPS-mm displacement (z, y, x, 3), components (x, y, z).

    An index offset (di, dj, dk) = (dx, dy, dz) moves ``direction @ (spacing * (di, dj, dk))`` millimetres.
    """
    index_offsets = np.stack([ddf[2], ddf[1], ddf[0]], axis=-1).astype(np.float64)  # (z, y, x, 3): (di, dj, dk)
    mm_along_axes = index_offsets * np.asarray(spacing, dtype=np.float64)
    return mm_along_axes @ np.asarray(direction, dtype=np.float64).T


@dataclass
class LearnedModel:
    """A trained registration network and what it was trained for.

    ``network`` is in eval mode; ``grid_shape`` (z, y, x) and ``spacing`` (mm, i/j/k order) describe the fixed
    (atlas) grid it expects; ``training_curve`` is the mean loss per epoch; ``config`` holds every setting as
    plain Python values (network architecture, loss weights, normalisation, seed, ...).
    """

    network: torch.nn.Module
    grid_shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    training_curve: list[float] = field(default_factory=list)
    config: dict[str, Any] = field(default_factory=dict)

    @property
    def device(self) -> torch.device:
        return next(self.network.parameters()).device

    def save(self, path: str | Path) -> Path:
        """Write weights + config with ``torch.save``; readable with ``torch.load(path, weights_only=True)``."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        payload = {
            "format": "imaging_pipelines.learned_registration/1",
            "state_dict": {k: v.detach().cpu() for k, v in self.network.state_dict().items()},
            "grid_shape": [int(n) for n in self.grid_shape],
            "spacing": [float(s) for s in self.spacing],
            "training_curve": [float(v) for v in self.training_curve],
            "config": _plain(self.config),
        }
        with atomic_file(path) as tmp:  # a failed write never leaves a half-written model
            torch.save(payload, tmp)
        return path

    @classmethod
    def load(cls, path: str | Path, device: str = "auto") -> LearnedModel:
        """Read a model written by :meth:`save` (weights only, no pickled code) onto ``device``."""
        from imaging_pipelines.models.device import pick_device

        payload = torch.load(Path(path), map_location="cpu", weights_only=True)
        config = payload["config"]
        network = build_network(**config["network"])
        network.load_state_dict(payload["state_dict"])
        network.to(pick_device(device)).eval()
        return cls(network=network, grid_shape=tuple(payload["grid_shape"]), spacing=tuple(payload["spacing"]),
                   training_curve=list(payload["training_curve"]), config=config)


def _plain(value: Any) -> Any:
    """Config values as plain types (dict / list / str / int / float / bool / None) for ``weights_only`` loading."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.integer, np.floating, np.bool_)):
        return value.item()
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return str(value)
