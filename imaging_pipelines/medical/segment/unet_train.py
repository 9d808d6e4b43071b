"""Training of the DynUNet segmentation model (nnU-Net style recipe, scaled to what the hardware allows).

Per-image z-score, random patches with foreground oversampling, random flips + intensity scale/shift,
Dice + cross-entropy loss, SGD (Nesterov, poly LR) or Adam, AMP on CUDA only, fixed seeds, and a held-out
validation split scored with Gaussian sliding-window inference after every epoch. No dagster import here.
"""

from __future__ import annotations

import inspect
import math
import random
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

import numpy as np
import torch

from imaging_pipelines.models.device import autocast_context, grad_scaler, pick_device
from imaging_pipelines.models.versioning import content_hash, volume_bytes
from imaging_pipelines.medical.segment.evaluate import segmentation_metrics
from imaging_pipelines.medical.segment import unet as unet_module
from imaging_pipelines.medical.segment.unet import SegmentationModel, normalize_intensity, plan_dynunet, predict
from imaging_pipelines.core.volume import Volume


@dataclass
class EpochRecord:
    epoch: int
    train_loss: float
    val_dice: dict[int, float]  # label value -> Dice on the validation cases (mean over cases)
    seconds: float
    lr: float


@dataclass
class TrainingReport:
    curve: list[EpochRecord] = field(default_factory=list)
    best_val_dice: float = float("nan")  # mean foreground Dice over classes, best epoch
    best_epoch: int = -1
    seconds_per_epoch: float = float("nan")
    n_train: int = 0
    n_val: int = 0
    version: str = ""

    def as_dict(self) -> dict:
        return {
            "curve": [
                {"epoch": r.epoch, "train_loss": r.train_loss, "val_dice": {str(k): v for k, v in r.val_dice.items()},
                 "seconds": r.seconds, "lr": r.lr}
                for r in self.curve
            ],
            "best_val_dice": self.best_val_dice, "best_epoch": self.best_epoch,
            "seconds_per_epoch": self.seconds_per_epoch, "n_train": self.n_train, "n_val": self.n_val,
            "version": self.version,
        }


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def training_version(images: Sequence[Volume], labels: Sequence[Volume], params: dict) -> str:
    """sha256 over this code (plan/model/training modules), the training arrays + geometry and ``params``."""
    data = (chunk for vol in [*images, *labels] for chunk in volume_bytes(vol))
    return content_hash([unet_module, inspect.getmodule(training_version)], data, params)


class PatchSampler:
    """Random patches ``(image [1,z,y,x], label [1,z,y,x])`` with foreground oversampling and augmentation."""

    def __init__(self, images: list[np.ndarray], labels: list[np.ndarray], patch: list[int], n_classes: int,
                 fg_fraction: float, rng: np.random.Generator, augment: bool = True):
        self.patch, self.rng, self.fg_fraction, self.augment = patch, rng, fg_fraction, augment
        self.images, self.labels, self.fg = [], [], []
        for img, lab in zip(images, labels):
            pad = [(0, max(0, p - s)) for p, s in zip(patch, img.shape)]
            img = np.pad(img, pad, mode="constant", constant_values=float(img.min()))
            lab = np.pad(lab, pad, mode="constant", constant_values=0)
            self.images.append(img)
            self.labels.append(lab)
            self.fg.append({c: np.argwhere(lab == c) for c in range(1, n_classes) if np.any(lab == c)})

    def sample(self, force_fg: bool) -> tuple[np.ndarray, np.ndarray]:
        i = int(self.rng.integers(len(self.images)))
        img, lab, fg = self.images[i], self.labels[i], self.fg[i]
        shape = np.array(img.shape)
        patch = np.array(self.patch)
        if force_fg and fg:
            cls = list(fg)[int(self.rng.integers(len(fg)))]
            centre = fg[cls][int(self.rng.integers(len(fg[cls])))]
            start = centre - patch // 2 + self.rng.integers(-(patch // 4), patch // 4 + 1)
        else:
            start = np.array([self.rng.integers(0, s - p + 1) for s, p in zip(shape, patch)])
        start = np.clip(start, 0, shape - patch)
        sl = tuple(slice(int(a), int(a + p)) for a, p in zip(start, patch))
        x, y = img[sl].copy(), lab[sl].copy()
        if self.augment:
            for axis in range(3):
                if self.rng.random() < 0.5:
                    x, y = np.flip(x, axis), np.flip(y, axis)
            x = x * self.rng.uniform(0.9, 1.1) + self.rng.uniform(-0.1, 0.1)
        return np.ascontiguousarray(x[None], dtype=np.float32), np.ascontiguousarray(y[None], dtype=np.int64)

    def batch(self, batch_size: int) -> tuple[torch.Tensor, torch.Tensor]:
        # nnU-Net: the last round(fg_fraction * batch) samples of a batch are forced to contain foreground;
        # with batch 2 and 0.33 that is every other batch, done here by a coin flip per sample.
        items = [self.sample(self.rng.random() < self.fg_fraction) for _ in range(batch_size)]
        return torch.from_numpy(np.stack([a for a, _ in items])), torch.from_numpy(np.stack([b for _, b in items]))


def optimizer_step(net: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   loss: torch.Tensor, max_grad_norm: float = 12.0) -> float:
    """Backward pass of ``loss`` through the (possibly disabled) gradient scaler, gradient-norm clipping at
    ``max_grad_norm`` (nnU-Net's 12), one optimiser step; returns the loss as a float."""
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    torch.nn.utils.clip_grad_norm_(net.parameters(), max_grad_norm)
    scaler.step(opt)
    scaler.update()
    return float(loss.detach())


def _to_classes(label: np.ndarray, label_values: list[int]) -> np.ndarray:
    out = np.zeros(label.shape, dtype=np.uint8)
    for c, v in enumerate(label_values):
        if c:
            out[label == v] = c
    return out


def train_segmentation(
    images: list[Volume],
    labels: list[Volume],
    *,
    n_classes: int,
    patch_size: Sequence[int],
    epochs: int,
    batch_size: int = 2,
    lr: float = 1e-2,
    optimizer: str = "sgd",
    iterations_per_epoch: int = 50,
    foreground_oversampling: float = 0.33,
    seed: int = 0,
    device: str = "auto",
    val_fraction: float = 0.2,
    label_values: Sequence[int] | None = None,
    normalization: str = "zscore",
    base_filters: int = 32,
    n_pool_max: int = 5,
    deep_supervision: bool = False,
    overlap: float = 0.5,
    architecture: str = "dynunet",
    log: Callable[[str], None] | None = None,
) -> tuple[SegmentationModel, TrainingReport]:
    """Train a DynUNet on ``images`` / ``labels`` (label Volumes on the same grids).

    Labels are class indices ``0 .. n_classes-1``, or, with ``label_values`` (e.g. ``[0, 5]``), the label
    value of each class (other values become background) which :func:`predict` writes back. The plan comes
    from :func:`plan_dynunet` on the first image's spacing. ``optimizer``: ``"sgd"`` (momentum 0.99,
    Nesterov, weight decay 3e-5, poly LR ``lr * (1 - epoch/epochs) ** 0.9`` as nnU-Net) or ``"adam"``
    (same poly schedule). ``architecture``: ``"dynunet"`` or ``"unet"`` (see :func:`build_network`). One epoch = ``iterations_per_epoch`` batches. The last ``val_fraction`` of the
    cases (after a seeded shuffle; at least one when there are two or more cases) is held out and scored
    every epoch by sliding-window inference; the returned model carries the weights of the best epoch
    (mean foreground Dice), or of the last epoch when there is no validation split.
    """
    if len(images) != len(labels) or not images:
        raise ValueError("images and labels must be non-empty lists of the same length")
    for img, lab in zip(images, labels):
        if img.spatial_shape != lab.spatial_shape or img.is_timeseries:
            raise ValueError("each label Volume must be 3D and on its image's grid")
    values = list(label_values) if label_values is not None else list(range(n_classes))
    if len(values) != n_classes:
        raise ValueError(f"label_values {values} must have n_classes={n_classes} entries")
    say = log or (lambda _msg: None)
    _seed_everything(seed)
    rng = np.random.default_rng(seed)
    dev = pick_device(device)

    params = {k: v for k, v in locals().items() if k in (
        "n_classes", "patch_size", "epochs", "batch_size", "lr", "optimizer", "iterations_per_epoch",
        "foreground_oversampling", "seed", "val_fraction", "normalization", "base_filters", "n_pool_max",
        "deep_supervision", "architecture")}
    params["patch_size"], params["label_values"] = list(patch_size), values
    version = training_version(images, labels, params)

    order = rng.permutation(len(images))
    n_val = int(round(val_fraction * len(images))) if len(images) > 1 else 0
    n_val = min(max(n_val, 1 if val_fraction > 0 and len(images) > 1 else 0), len(images) - 1)
    val_idx, train_idx = list(order[len(images) - n_val:]), list(order[: len(images) - n_val])

    plan = plan_dynunet(images[0].spacing, patch_size, n_pool_max=n_pool_max, base_filters=base_filters)
    model = SegmentationModel(plan=plan, n_classes=n_classes, deep_supervision=deep_supervision,
                              label_values=values, normalization=normalization, version=version,
                              spacing_mm=list(images[0].spacing), architecture=architecture)
    net = model.network.to(dev)
    say(f"plan: kernels={plan.kernel_sizes} strides={plan.strides} filters={plan.filters} patch={plan.patch_size}")

    sampler = PatchSampler(
        [normalize_intensity(images[i].array, normalization) for i in train_idx],
        [_to_classes(np.asarray(labels[i].array), values) for i in train_idx],
        list(plan.patch_size), n_classes, foreground_oversampling, rng)
    val_refs = [labels[i].with_array(np.where(np.isin(labels[i].array, values[1:]), labels[i].array, 0).astype(np.uint8))
                for i in val_idx]

    from monai.losses import DiceCELoss

    loss_fn = DiceCELoss(to_onehot_y=True, softmax=True)
    if optimizer == "sgd":
        opt = torch.optim.SGD(net.parameters(), lr=lr, momentum=0.99, nesterov=True, weight_decay=3e-5)
    elif optimizer == "adam":
        opt = torch.optim.Adam(net.parameters(), lr=lr, weight_decay=3e-5)
    else:
        raise ValueError(f"unknown optimizer {optimizer!r}; use 'sgd' or 'adam'")
    scaler = grad_scaler(dev)

    report = TrainingReport(n_train=len(train_idx), n_val=len(val_idx), version=version)
    best_state, best = None, -math.inf
    for epoch in range(epochs):
        t0 = time.perf_counter()
        cur_lr = lr * (1 - epoch / epochs) ** 0.9
        for group in opt.param_groups:
            group["lr"] = cur_lr
        net.train()
        losses = []
        for _ in range(iterations_per_epoch):
            x, y = sampler.batch(batch_size)
            x, y = x.to(dev), y.to(dev)
            opt.zero_grad(set_to_none=True)
            with autocast_context(dev):
                out = net(x)
            out = out.float()
            if deep_supervision:  # [B, heads, C, ...], all at full size; weights 1, 1/2, 1/4 ... normalised
                w = torch.tensor([0.5**i for i in range(out.shape[1])])
                w = w / w.sum()
                loss = sum(w[i] * loss_fn(out[:, i], y) for i in range(out.shape[1]))
            else:
                loss = loss_fn(out, y)
            losses.append(optimizer_step(net, opt, scaler, loss))
        val_dice: dict[int, float] = {}
        if val_idx:
            per_label: dict[int, list[float]] = {v: [] for v in values[1:]}
            for i, ref in zip(val_idx, val_refs):
                pred = predict(model, images[i], overlap=overlap, sw_batch_size=batch_size, device=dev)
                for v, m in segmentation_metrics(pred, ref, labels=values[1:]).items():
                    per_label[v].append(m["dice"])
            val_dice = {v: float(np.mean(d)) for v, d in per_label.items()}
        seconds = time.perf_counter() - t0
        record = EpochRecord(epoch, float(np.mean(losses)), val_dice, seconds, cur_lr)
        report.curve.append(record)
        score = float(np.mean(list(val_dice.values()))) if val_dice else -float(record.train_loss)
        if score > best:
            best, report.best_epoch = score, epoch
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        say(f"epoch {epoch}: loss {record.train_loss:.4f} val dice {val_dice} lr {cur_lr:.2e} {seconds:.1f}s")
    if best_state is not None and val_idx:
        net.load_state_dict(best_state)
    else:
        report.best_epoch = epochs - 1
    net.eval()
    report.best_val_dice = best if val_idx else float("nan")
    report.seconds_per_epoch = float(np.mean([r.seconds for r in report.curve])) if report.curve else float("nan")
    return model, report
