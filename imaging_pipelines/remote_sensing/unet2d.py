"""A MONAI 2D U-Net for per-pixel classes of raster tiles: build, train, predict, save and load.

Images are ``(channel, y, x)`` float32 with NaN = invalid (e.g. composite bands + indices); label maps are
``(y, x)`` uint8 class *values* (0 = background, ``classes`` maps names to values). The network works on
class *indices*: ``class_values[i]`` is the value of index ``i`` (index 0 = background = 0). Inputs are
z-scored per channel with statistics of the training images (:class:`Normalisation`); NaN becomes 0
after normalising, and NaN pixels are labelled background in training and predicted as 0.
No dagster import here; the caller picks the device (CPU by default) and the torch thread count.
"""

from __future__ import annotations

import copy
import json
import os
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.losses import DiceCELoss, DiceFocalLoss, FocalLoss
from monai.networks.nets import UNet

from imaging_pipelines.core.storage import atomic_file
from imaging_pipelines.remote_sensing.augment import intensity_jitter, resize_patch, scaled_crop_size
from imaging_pipelines.remote_sensing.losses import LovaszSoftmaxLoss, SumOfLosses
from imaging_pipelines.config.remote_sensing import RasterTrainingConfig

DEPTH = 3  # default down-sampling steps (RasterTrainingConfig.depth): patch sizes must be multiples of 2**depth
WEIGHT_CLIP = (0.1, 10.0)  # inverse-frequency class weights, normalised to mean 1, then clipped


def build_unet2d(in_channels: int, n_classes: int, base_filters: int = 16, depth: int = DEPTH) -> UNet:
    """MONAI ``UNet(spatial_dims=2)``: ``depth`` down-sampling steps (strides 2), channels ``base * 2**i`` for
    i = 0..depth (default ``base * (1, 2, 4, 8)``), 2 residual units per level, batch norm (instance norm would
    discard the absolute reflectance level of uniform patches). ``n_classes`` counts the background; the
    output is ``n_classes`` logits per pixel."""
    return UNet(spatial_dims=2, in_channels=in_channels, out_channels=n_classes,
                channels=tuple(base_filters * 2 ** i for i in range(depth + 1)), strides=(2,) * depth,
                num_res_units=2, norm="batch")


class SoftmaxEnsemble(torch.nn.Module):
    """K U-Nets of one architecture whose softmax is averaged: ``forward`` returns ``log(mean_k softmax_k)``
    per pixel, so a softmax of the output is the members' mean probability (exactly, for one window).
    Sliding-window blending of these log-probabilities equals blending logits up to a per-pixel constant,
    as for a single U-Net. ``in_channels``, ``out_channels`` and ``channels`` are the members'."""

    def __init__(self, members: list[UNet]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one member")
        self.members = torch.nn.ModuleList(members)
        self.in_channels, self.out_channels = members[0].in_channels, members[0].out_channels
        self.channels = members[0].channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = torch.stack([torch.softmax(m(x), 1) for m in self.members]).mean(0)
        return torch.log(p.clamp_min(torch.finfo(p.dtype).tiny))


@dataclass
class Normalisation:
    """Per-channel z-score ``(x - mean) / std`` (statistics over valid training pixels); NaN -> 0 after it."""

    mean: list[float]
    std: list[float]

    @classmethod
    def fit(cls, images: list[np.ndarray]) -> Normalisation:
        n = images[0].shape[0]
        mean, std = [], []
        for c in range(n):
            values = np.concatenate([img[c][np.isfinite(img[c])].ravel() for img in images]).astype(np.float64)
            m = float(values.mean()) if values.size else 0.0
            s = float(values.std()) if values.size else 1.0
            mean.append(m)
            std.append(s if s > 1e-12 else 1.0)
        return cls(mean, std)

    def apply(self, image: np.ndarray) -> np.ndarray:
        """``(c, y, x)`` float32, normalised, NaN replaced by 0."""
        if image.shape[0] != len(self.mean):
            raise ValueError(f"image has {image.shape[0]} channels, the model expects {len(self.mean)}")
        mean = np.asarray(self.mean, np.float32)[:, None, None]
        std = np.asarray(self.std, np.float32)[:, None, None]
        out = (image.astype(np.float32) - mean) / std
        return np.nan_to_num(out, nan=0.0, posinf=0.0, neginf=0.0)


@dataclass
class TrainOutcome:
    model: UNet | SoftmaxEnsemble
    normalisation: Normalisation
    class_values: list[int]  # index -> class value; index 0 = 0 (background)
    curve: list[float]  # mean training loss per epoch (ensemble: mean over the members)
    validation_iou: dict[str, float] | None  # class name -> IoU of the kept (best-validation) weights
    members: list[TrainOutcome] = field(default_factory=list)  # ensemble: each member's own outcome


def build_loss(training: RasterTrainingConfig, weight: torch.Tensor | None) -> torch.nn.Module:
    """The training loss named by ``training.loss`` (softmax over class indices, one-hot targets, Dice and
    Lovász terms pooled over the batch); ``weight`` (per class) weighs the cross-entropy / focal term.
    ``lovasz``: :class:`~imaging_pipelines.remote_sensing.losses.LovaszSoftmaxLoss` alone; ``dice_ce_lovasz``:
    its sum with ``dice_ce``."""
    if training.loss == "lovasz":
        return LovaszSoftmaxLoss()
    if training.loss == "dice_ce_lovasz":
        return SumOfLosses(DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=weight),
                           LovaszSoftmaxLoss())
    if training.loss == "dice_focal":
        return DiceFocalLoss(to_onehot_y=True, softmax=True, batch=True, gamma=training.focal_gamma, weight=weight)
    if training.loss == "focal":
        return FocalLoss(to_onehot_y=True, use_softmax=True, gamma=training.focal_gamma, weight=weight)
    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True, weight=weight)


def _check_patch(patch_size: int, depth: int = DEPTH) -> None:
    if patch_size % 2 ** depth:
        raise ValueError(f"patch_size {patch_size} must be a multiple of {2 ** depth} (U-Net depth {depth})")


def _to_indices(label: np.ndarray, class_values: list[int], invalid: np.ndarray) -> np.ndarray:
    """Class values -> indices (unknown values and invalid pixels -> 0)."""
    lut = np.zeros(256, np.int64)
    for i, v in enumerate(class_values):
        lut[v] = i
    out = lut[np.asarray(label, np.uint8)]
    out[invalid] = 0
    return out


def _class_weights(labels: list[np.ndarray], n: int) -> torch.Tensor:
    counts = np.zeros(n, np.float64)
    for lab in labels:
        counts += np.bincount(lab.ravel(), minlength=n)[:n]
    freq = counts / max(counts.sum(), 1.0)
    w = np.where(freq > 0, 1.0 / np.maximum(freq, 1e-12), 0.0)
    w = w / w[w > 0].mean() if np.any(w > 0) else np.ones(n)
    return torch.tensor(np.clip(w, *WEIGHT_CLIP), dtype=torch.float32)


class _Patches:
    """Random ``patch x patch`` crops (a share ``foreground`` centred near a foreground pixel), random flips and
    rot90, and the random scale and intensity of :mod:`imaging_pipelines.remote_sensing.augment`."""

    def __init__(self, images, labels, patch: int, rng: np.random.Generator, foreground: float = 1 / 3,
                 scale: float = 0.0, intensity: float = 0.0):
        self.patch, self.rng = patch, rng
        self.foreground, self.scale, self.intensity = foreground, scale, intensity
        self.images, self.labels, self.fg = [], [], []
        side = patch if scale <= 0 else int(np.ceil(patch * np.exp(scale))) + 1  # largest crop drawn
        for img, lab in zip(images, labels):
            pad = [(0, max(0, side - s)) for s in lab.shape]
            self.images.append(np.pad(img, [(0, 0)] + pad))
            self.labels.append(np.pad(lab, pad))
            self.fg.append(np.argwhere(self.labels[-1] > 0))

    def sample(self) -> tuple[np.ndarray, np.ndarray]:
        rng = self.rng
        p = scaled_crop_size(self.patch, self.scale, rng)
        i = int(rng.integers(len(self.images)))
        img, lab, fg = self.images[i], self.labels[i], self.fg[i]
        h, w = lab.shape
        if len(fg) and rng.random() < self.foreground:
            cy, cx = fg[int(rng.integers(len(fg)))] + rng.integers(-p // 4, p // 4 + 1, 2)
            y0, x0 = int(np.clip(cy - p // 2, 0, h - p)), int(np.clip(cx - p // 2, 0, w - p))
        else:
            y0, x0 = int(rng.integers(0, h - p + 1)), int(rng.integers(0, w - p + 1))
        x, y = resize_patch(img[:, y0:y0 + p, x0:x0 + p], lab[y0:y0 + p, x0:x0 + p], self.patch)
        k = int(rng.integers(4))
        x, y = np.rot90(x, k, axes=(1, 2)), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, :, ::-1], y[:, ::-1]
        x = intensity_jitter(np.ascontiguousarray(x), self.intensity, rng)
        return np.ascontiguousarray(x, np.float32), np.ascontiguousarray(y[None])

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        items = [self.sample() for _ in range(n)]
        return (torch.from_numpy(np.stack([a for a, _ in items])),
                torch.from_numpy(np.stack([b for _, b in items])))


def train_unet2d(
    images: list[np.ndarray],
    labels: list[np.ndarray],
    classes: dict[str, int],
    training: RasterTrainingConfig,
    device: str = "cpu",
    validation: tuple[list[np.ndarray], list[np.ndarray]] | None = None,
    log: Callable[[str], None] | None = None,
    epoch_end: Callable[[int, torch.nn.Module, Normalisation, list[int]], None] | None = None,
) -> TrainOutcome:
    """Train a U-Net on ``images`` (c, y, x) / ``labels`` (y, x) class values; seeded by ``training.seed``.

    ``training.epochs`` x ``iterations_per_epoch`` Adam steps (constant learning rate, or cosine-annealed to 0
    over all steps with ``schedule == 'cosine'``) on batches of random augmented patches (a share
    ``foreground_fraction`` centred near a foreground pixel; flips, rot90, ``scale_augmentation``,
    ``intensity_augmentation``),
    With ``average_last_epochs`` = N > 0 the weights at the end of the last N epochs are averaged (stochastic
    weight averaging; batch-norm statistics recomputed on 16 training batches), and the averaged model is
    kept unless the best single epoch scores higher on ``validation``.
    loss :func:`build_loss` (``training.loss``: MONAI ``DiceCELoss``, ``DiceFocalLoss`` or ``FocalLoss``; class
    weights = inverse frequency normalised to mean 1 and clipped to [0.1, 10] when ``class_weights ==
    'inverse_frequency'``). With ``validation`` (images, labels) the
    weights of the epoch with the best mean foreground IoU are kept (sliding-window prediction, overlap 0.25).
    With ``training.ensemble`` = K > 1, K U-Nets are trained so, seeded ``training.seed + k`` (k = 0..K-1:
    member k is the single model of that seed), and combined in a :class:`SoftmaxEnsemble`; its
    ``validation_iou`` is that of the averaged softmax, ``curve`` the members' mean, and each member's own
    outcome is in ``members``. ``epoch_end(epoch, model, normalisation, class_values)`` is called after each
    epoch (1-based) of each single U-Net with its current weights (e.g. to score snapshots out of fold).
    """
    if training.ensemble == 1:
        return _train_member(images, labels, classes, training, device, validation, log, epoch_end)
    members = []
    for k in range(training.ensemble):
        member_log = (lambda m, k=k: log(f"member {k + 1}/{training.ensemble}: {m}")) if log else None
        cfg = training.model_copy(update={"seed": training.seed + k, "ensemble": 1})
        members.append(_train_member(images, labels, classes, cfg, device, validation, member_log, epoch_end))
    model = SoftmaxEnsemble([m.model for m in members]).eval()
    first = members[0]
    ious = (_validate(model, first.normalisation, first.class_values, classes, validation, training.patch_size,
                      device) if validation is not None else None)
    if log and ious is not None:
        log(f"ensemble of {training.ensemble}: val IoU " + ", ".join(f"{k} {v:.3f}" for k, v in ious.items()))
    curve = [float(v) for v in np.mean([m.curve for m in members], axis=0)]
    return TrainOutcome(model, first.normalisation, first.class_values, curve, ious, members)


def _train_member(images, labels, classes, training, device, validation, log, epoch_end=None) -> TrainOutcome:
    """One U-Net of :func:`train_unet2d`, seeded by ``training.seed`` (``training.ensemble`` is ignored)."""
    if not images or len(images) != len(labels):
        raise ValueError(f"need as many label maps as images (got {len(images)} images, {len(labels)} labels)")
    for img, lab in zip(images, labels):
        if img.ndim != 3 or img.shape[1:] != lab.shape:
            raise ValueError(f"image {img.shape} and label {lab.shape} must be (c, y, x) and (y, x) on one grid")
    p = training.patch_size
    _check_patch(p, training.depth)
    torch.manual_seed(training.seed)
    rng = np.random.default_rng(training.seed)
    class_values = [0] + [int(v) for v in classes.values()]
    norm = Normalisation.fit(images)
    x_train = [norm.apply(img) for img in images]
    y_train = [_to_indices(lab, class_values, ~np.isfinite(img).all(axis=0)) for img, lab in zip(images, labels)]
    n = len(class_values)
    weight = _class_weights(y_train, n) if training.class_weights == "inverse_frequency" else None
    loss_fn = build_loss(training, weight.to(device) if weight is not None else None)
    model = build_unet2d(images[0].shape[0], n, training.base_filters, training.depth).to(device)
    opt = torch.optim.Adam(model.parameters(), lr=training.learning_rate)
    sampler = _Patches(x_train, y_train, p, rng, training.foreground_fraction, training.scale_augmentation,
                       training.intensity_augmentation)
    steps = training.epochs * training.iterations_per_epoch
    schedule = (torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if training.schedule == "cosine" else None)
    curve: list[float] = []
    best_score, best_state, best_iou = -1.0, None, None
    averaged = None  # running mean of the weights at the end of the last `average_last_epochs` epochs
    for epoch in range(training.epochs):
        model.train()
        losses = []
        for _ in range(training.iterations_per_epoch):
            xb, yb = sampler.batch(training.batch_size)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb.to(device)), yb.to(device))
            loss.backward()
            opt.step()
            if schedule is not None:
                schedule.step()
            losses.append(float(loss.detach()))
        curve.append(float(np.mean(losses)))
        if training.epochs - epoch <= training.average_last_epochs:
            if averaged is None:
                averaged = torch.optim.swa_utils.AveragedModel(model)
            averaged.update_parameters(model)
        msg = f"epoch {epoch + 1}/{training.epochs} loss {curve[-1]:.4f}"
        if validation is not None:
            ious = _validate(model, norm, class_values, classes, validation, p, device)
            score = float(np.mean(list(ious.values()))) if ious else 0.0
            if score > best_score:
                best_score, best_iou = score, ious
                best_state = copy.deepcopy(model.state_dict())
            msg += " val IoU " + ", ".join(f"{k} {v:.3f}" for k, v in ious.items())
        if log:
            log(msg)
        if epoch_end is not None:
            epoch_end(epoch + 1, model, norm, class_values)
    if best_state is not None:
        model.load_state_dict(best_state)
    if averaged is not None:
        # batch-norm statistics of the averaged weights, from fresh training batches
        torch.optim.swa_utils.update_bn([sampler.batch(training.batch_size)[0].to(device) for _ in range(16)],
                                        averaged.module)
        ious = (_validate(averaged.module, norm, class_values, classes, validation, p, device)
                if validation is not None else None)
        score = float(np.mean(list(ious.values()))) if ious else 0.0
        if log and ious is not None:
            log(f"weights averaged over the last {training.average_last_epochs} epochs: val IoU "
                + ", ".join(f"{k} {v:.3f}" for k, v in ious.items()))
        if validation is None or score >= best_score:
            model, best_iou = averaged.module, ious
    model.eval()
    return TrainOutcome(model, norm, class_values, curve, best_iou)


def _validate(model, norm, class_values, classes, validation, patch, device) -> dict[str, float]:
    """Per-class IoU pooled over the validation images (intersections and unions summed)."""
    inter = {k: 0 for k in classes}
    union = {k: 0 for k in classes}
    for img, ref in zip(*validation):
        pred = predict_unet2d(model, norm, class_values, img, patch, 0.25, device)
        valid = np.isfinite(img).all(axis=0)
        for name, v in classes.items():
            a, b = (pred == v) & valid, (ref == v) & valid
            inter[name] += int((a & b).sum())
            union[name] += int((a | b).sum())
    return {k: (inter[k] / union[k] if union[k] else 1.0) for k in classes}


@torch.no_grad()
def predict_unet2d(model: UNet | SoftmaxEnsemble, normalisation: Normalisation, class_values: list[int],
                   image: np.ndarray, patch_size: int, overlap: float = 0.25, device: str = "cpu",
                   return_probabilities: bool = False, tta: bool = False):
    """``(y, x)`` uint8 class values of a ``(c, y, x)`` image: MONAI sliding-window inference
    (``patch_size`` windows, ``overlap`` fraction, Gaussian blending), argmax, NaN-invalid pixels -> 0.
    ``return_probabilities``: also the ``(n_classes, y, x)`` float32 softmax, index order of ``class_values``.
    ``tta``: the softmax is averaged over the image and its flips in y, in x and in both. A
    :class:`SoftmaxEnsemble` gives its members' averaged softmax."""
    _check_patch(patch_size, len(model.channels) - 1 if hasattr(model, "channels") else DEPTH)
    if image.ndim != 3:
        raise ValueError(f"image must be (c, y, x), got {image.shape}")
    was_training = model.training
    model.eval()
    x = torch.from_numpy(normalisation.apply(image)[None]).to(device)
    flips = [(), (2,), (3,), (2, 3)] if tta else [()]
    probability = None
    for dims in flips:
        xi = torch.flip(x, dims) if dims else x
        logits = sliding_window_inference(xi, (patch_size, patch_size), sw_batch_size=4, predictor=model,
                                          overlap=overlap, mode="gaussian")
        p = torch.softmax(logits, 1)
        p = torch.flip(p, dims) if dims else p
        probability = p if probability is None else probability + p
    probability = probability / len(flips)
    model.train(was_training)
    index = probability.argmax(1)[0].cpu().numpy()
    out = np.asarray(class_values, np.uint8)[index]
    out[~np.isfinite(image).all(axis=0)] = 0
    if return_probabilities:
        return out, probability[0].float().cpu().numpy()
    return out


def save_unet2d(outcome: TrainOutcome, path: str | os.PathLike, meta: dict | None = None) -> None:
    """``torch.save`` of the state dict (CPU tensors; an ensemble: ``members``, one per member) +
    hyper-parameters, normalisation, class values, curve and ``meta`` (JSON-serialisable; stored as a JSON
    string). Written atomically."""
    model = outcome.model
    nets = list(model.members) if isinstance(model, SoftmaxEnsemble) else [model]
    states = [{k: v.detach().cpu() for k, v in net.state_dict().items()} for net in nets]
    blob = {
        "hyper": {"in_channels": int(model.in_channels), "n_classes": int(model.out_channels),
                  "base_filters": int(model.channels[0]), "depth": len(model.channels) - 1},
        **({"members": states} if isinstance(model, SoftmaxEnsemble) else {"state_dict": states[0]}),
        "normalisation": {"mean": [float(m) for m in outcome.normalisation.mean],
                          "std": [float(s) for s in outcome.normalisation.std]},
        "class_values": [int(v) for v in outcome.class_values],
        "meta": json.dumps(meta or {}, default=str),
    }
    with atomic_file(path) as tmp:
        torch.save(blob, tmp)


def load_unet2d(path: str | os.PathLike, device: str = "cpu"
                ) -> tuple[UNet | SoftmaxEnsemble, Normalisation, list[int], dict]:
    """``(model in eval mode, normalisation, class_values, meta)`` from a :func:`save_unet2d` file
    (``torch.load(weights_only=True)``); a file of an ensemble (``members``: K state dicts) gives a
    :class:`SoftmaxEnsemble`."""
    blob = torch.load(os.fspath(path), map_location=device, weights_only=True)
    nets = []
    for state in blob["members"] if "members" in blob else [blob["state_dict"]]:
        nets.append(build_unet2d(**blob["hyper"]).to(device))
        nets[-1].load_state_dict(state)
    model = SoftmaxEnsemble(nets) if "members" in blob else nets[0]
    model.eval()
    norm = Normalisation(list(blob["normalisation"]["mean"]), list(blob["normalisation"]["std"]))
    return model, norm, list(blob["class_values"]), json.loads(blob["meta"])
