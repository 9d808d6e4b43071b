"""A real nnU-Net trainer with a test-sized schedule (2 epochs of 3 iterations, 2 validation iterations), like
nnU-Net's own ``nnUNetTrainer_1epoch`` family; catalogs name it by its dotted path."""

from __future__ import annotations

import torch
from nnunetv2.training.nnUNetTrainer.nnUNetTrainer import nnUNetTrainer


class nnUNetTrainerTiny(nnUNetTrainer):  # noqa: N801 - nnU-Net's naming
    def __init__(self, plans: dict, configuration: str, fold: int, dataset_json: dict,
                 device: torch.device = torch.device("cuda")):
        super().__init__(plans, configuration, fold, dataset_json, device)
        self.num_epochs = 2
        self.num_iterations_per_epoch = 3
        self.num_val_iterations_per_epoch = 2
