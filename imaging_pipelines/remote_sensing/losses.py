"""IoU-aligned training loss for the raster U-Net: the Lovász-softmax (Berman, Rannen Triki & Blaschko, CVPR 2018).

For each class ``c`` the per-pixel errors ``m_i = |1[y_i = c] - p_i(c)|`` (``p`` the softmax) are scored by the
Lovász extension of the Jaccard loss ``Delta_c(M) = 1 - |gt_c \\ M| / (|gt_c| + |M \\ gt_c|)`` of a set ``M`` of
mispredicted pixels: ``sum_i m_(i) (Delta_c(S_i) - Delta_c(S_(i-1)))`` over the errors sorted in decreasing
order (``S_i`` the ``i`` largest). It is a convex surrogate that equals ``1 - IoU_c`` exactly when the
probabilities are 0/1, and its gradient is piecewise constant. The loss is the mean over the classes present
in the reference of the batch (``classes='present'``), pixels pooled over the whole batch (as MONAI's Dice with
``batch=True``). Shapes follow MONAI's losses: logits ``(B, C, y, x)``, targets ``(B, 1, y, x)`` class indices.
"""

from __future__ import annotations

import torch


def lovasz_grad(reference_sorted: torch.Tensor) -> torch.Tensor:
    """Increments ``Delta(S_i) - Delta(S_(i-1))`` of the Jaccard loss along a decreasing error order;
    ``reference_sorted`` is the 0/1 reference of the class in that order (1-D float)."""
    gts = reference_sorted.sum()
    intersection = gts - reference_sorted.cumsum(0)
    union = gts + (1.0 - reference_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    if reference_sorted.numel() > 1:
        jaccard = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return jaccard


def lovasz_softmax(probabilities: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Lovász-softmax of ``(N, C)`` probabilities against ``(N,)`` integer class indices: the mean over the
    classes present in ``target`` of the Lovász extension of their Jaccard loss (a 0-d tensor; 0 for N = 0)."""
    if probabilities.ndim != 2 or target.shape != probabilities.shape[:1]:
        raise ValueError(f"need (N, C) probabilities and (N,) targets, got {tuple(probabilities.shape)} and "
                         f"{tuple(target.shape)}")
    losses = []
    for c in range(probabilities.shape[1]):
        fg = (target == c).to(probabilities.dtype)
        if not bool(fg.any()):
            continue
        errors = (fg - probabilities[:, c]).abs()
        errors_sorted, order = torch.sort(errors, descending=True)
        losses.append(torch.dot(errors_sorted, lovasz_grad(fg[order])))
    if not losses:
        return probabilities.sum() * 0.0
    return torch.stack(losses).mean()


class LovaszSoftmaxLoss(torch.nn.Module):
    """``forward(logits (B, C, y, x), target (B, 1, y, x) indices)``: softmax over C, then
    :func:`lovasz_softmax` with the pixels of the whole batch pooled."""

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        probabilities = torch.softmax(logits, 1).movedim(1, -1).reshape(-1, logits.shape[1])
        return lovasz_softmax(probabilities, target.reshape(-1).long())


class SumOfLosses(torch.nn.Module):
    """``forward(logits, target)`` = the sum of ``losses``' values (each called as a MONAI loss)."""

    def __init__(self, *losses: torch.nn.Module):
        super().__init__()
        self.losses = torch.nn.ModuleList(losses)

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return sum(loss(logits, target) for loss in self.losses)
