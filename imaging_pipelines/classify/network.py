"""The classification networks (MONAI, 2D) and the layer Grad-CAM reads.

``resnet``: MONAI ``ResNet`` with basic blocks, one block per stage, channels ``base * (1, 2, 4, 8)``, a 3x3
stride-2 stem without max pooling (the stages are at 1/2, 1/2, 1/4, 1/8 and 1/16 of the input); Grad-CAM
reads the third stage (1/8 of the input: 8 x 8 cells for a 64-pixel input).
``densenet121``: MONAI ``DenseNet121`` (the chest-radiograph network of the literature; heavier on a CPU).
"""

from __future__ import annotations

from monai.networks.nets import DenseNet121, ResNet
from torch import nn

GRADCAM_LAYERS = {"resnet": "layer3", "densenet121": "class_layers.relu"}
# input pixels per cell of that layer, for aligning the upsampled map (None: MONAI's default upsampling)
GRADCAM_STRIDES = {"resnet": 8, "densenet121": None}


def build_classifier(architecture: str, in_channels: int, n_classes: int, base_filters: int = 16) -> nn.Module:
    """A 2D classifier giving ``n_classes`` logits for a ``(batch, in_channels, y, x)`` input."""
    if architecture == "resnet":
        return ResNet(block="basic", layers=(1, 1, 1, 1), block_inplanes=[base_filters * 2 ** i for i in range(4)],
                      spatial_dims=2, n_input_channels=in_channels, conv1_t_size=3, conv1_t_stride=2,
                      no_max_pool=True, num_classes=n_classes)
    if architecture == "densenet121":
        return DenseNet121(spatial_dims=2, in_channels=in_channels, out_channels=n_classes)
    raise ValueError(f"unknown architecture {architecture!r}; known: {sorted(GRADCAM_LAYERS)}")
