"""On-the-fly training of the lesion DynUNet on the domain-randomised generator (CPU or CUDA through
:mod:`imaging_pipelines.models.device`), and its version.

Two shapes of model: a 2D network on slices (``patch_size`` (h, w); slices across each case's thick-slice
axis, :class:`~imaging_pipelines.medical.synth.slices.SliceSampler`; applied slice by slice across a scan's
thickest axis) or a 3D network on patches (``patch_size`` (z, y, x);
:class:`~imaging_pipelines.medical.segment.unet_train.PatchSampler`). With ``brain_gate`` the network learns
three classes from the same generated cases: 0 outside the brain, 1 brain, 2 tumour (SynthStrip-style brain
extraction with the lesion), and predictions keep lesion voxels only inside the largest brain component
(:mod:`~imaging_pipelines.medical.segment.brain_gate`); without it, two classes (background, tumour).

A pool of ``pool_size`` generated cases feeds random patches (a share ``foreground_oversampling`` of them
through the tumour, random flips); every
``refresh_every`` iterations the oldest case is replaced by a new one, so the network sees
``pool_size + iterations / refresh_every`` distinct cases. New cases are made ahead in a worker process
(:class:`~imaging_pipelines.medical.synth.prefetch.CaseFeed`, ``generation_workers=1``) while the network
trains on ``cpu_threads`` torch threads (1 on CPU: the worker takes the other core of a 2-core machine, and
one thread per process loses less to a CPU shared with other jobs; on a CPU with native bfloat16 the forward
pass runs under bfloat16 autocast, ``cpu_bfloat16``, and 2D networks in channels-last layout, about twice the
float32 step rate); ``seconds_generating`` in the report is
the time training waited for cases. With ``max_minutes`` training also stops when
that wall-clock budget (generation included) is spent, and the poly learning-rate decay follows whichever
of iterations or time is further along (so the rate reaches zero at the end either way); the report says
how many iterations ran and what stopped it. Training cases are generator indices
``0, 1, 2, ...``; held-out cases are drawn by a generator with another seed (:func:`held_out_generator`).
Images are normalised with ``"percentile"`` (:func:`~imaging_pipelines.medical.segment.unet.normalize_intensity`)
and the model resamples any input to the generator's spacing (``resample_input``), so a thick-slice scan
is segmented on the grid it was trained at. Target: the tumour (enhancing rim + necrotic core, label 1);
oedema is background unless ``target_labels`` says otherwise.

Version: SHA-256 (16 hex digits, :func:`~imaging_pipelines.models.versioning.model_version`) of the source of
the generator, network and this training module, the anatomy (template label voxels) and every generator and
training parameter. Spacings in mm; patch sizes in voxels, array order (z, y, x) or (h, w).
"""

from __future__ import annotations

import sys
import time
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any, Callable

import numpy as np
import torch

from imaging_pipelines.medical.segment import unet, unet_train
from imaging_pipelines.medical.segment import brain_gate as brain_gate_module
from imaging_pipelines.medical.segment import operating_point as operating_point_module
from imaging_pipelines.medical.segment import slice_context as slice_context_module
from imaging_pipelines.medical.segment.unet import Plan, SegmentationModel, plan_dynunet, plan_dynunet_2d
from imaging_pipelines.medical.segment.unet_train import PatchSampler, optimizer_step
from imaging_pipelines.medical.synth import (acquisition, anatomy, deform, generator, intensity, lesions, mimics, prefetch,
                                             skull_strip, slices)
from imaging_pipelines.medical.synth.generator import LesionGenerator, SynthConfig
from imaging_pipelines.medical.synth.mimics import MimicParams
from imaging_pipelines.medical.synth.prefetch import CaseFeed, TrainingPair
from imaging_pipelines.medical.synth.slices import SliceSampler
from imaging_pipelines.models.device import autocast_context, grad_scaler, pick_device
from imaging_pipelines.models.versioning import model_version

HELD_OUT_SEED_OFFSET = 1_000_003  # held-out cases come from seed + this offset, never from training indices


@dataclass(frozen=True)
class SynthTrainingConfig:
    """Training parameters (patch in pixels (h, w) for a 2D network, voxels (z, y, x) for a 3D one; learning
    rate per step; Adam with poly decay; ``brain_gate``: three classes, outside / brain / tumour)."""

    patch_size: tuple[int, ...] = (96, 96)
    iterations: int = 9000
    batch_size: int = 8
    learning_rate: float = 1e-2
    base_filters: int = 16
    max_filters: int = 256
    pool_size: int = 12
    refresh_every: int = 6
    foreground_oversampling: float = 0.5
    thick_axis_share: float = 0.7  # 2D: share of a thick-slice case's slices cut across its thick axis (slices.py)
    brain_gate: bool = True
    target_labels: tuple[int, ...] = lesions.TUMOUR_LABELS
    seed: int = 0
    max_minutes: float | None = None  # wall-clock budget (generation + training); None: run every iteration
    generation_workers: int = 1  # 1: cases are made ahead in a worker process (prefetch.CaseFeed); 0: inline
    cpu_threads: int | None = 1  # torch threads while training on CPU (the worker takes another core); None: torch's
    # thick-slice cases: the tumour target is its footprint on the slabs, every voxel whose slab holds at least this
    # share of tumour (acquisition.slab_footprint; partial-volume margins show on a thick slice and readers outline
    # them); None: the tumour as drawn. 0.25: a quarter of the slab, an assumption, not fitted to any real label
    slab_share: float | None = 0.25
    cpu_bfloat16: bool = True  # bfloat16 autocast on CPUs that compute it natively (models.device); weights stay float32
    # 2D: neighbouring slices each side stacked as input channels (2.5D; segment.slice_context), one slab thickness
    # apart on slices across a thick-slice axis, one grid slice apart otherwise; 0: the slice alone
    slice_context: int = 0
    # the model's tumour operating point (SegmentationModel.lesion_threshold, operating_point.lesion_classes):
    # None the argmax; t: tumour where p(tumour) >= t inside the network's brain
    lesion_threshold: float | None = None


# tumour where p >= 0.7: chosen on held-out generated cases 10-29 with run 19's weights (bench/README.md, run 21)
BENCHMARK = SynthTrainingConfig(max_minutes=18.0, lesion_threshold=0.7)
SMALL = SynthTrainingConfig(iterations=300, base_filters=8, max_filters=128)
# run 7's generator (bench/README.md); the neck tissue of run 8 (neck_probability 0.8, grid 40 mm further down)
# scored lower on brain1 (0.134 vs 0.230) and did not remove the neck false positives, so it is off
# + lesion mimics (bright curves, enhancing vessels: mimics.py) in half the cases (run 17, bench/README.md)
BENCHMARK_SYNTH = SynthConfig(spacing_mm=2.0, mimics=MimicParams(probability=0.5))
# the generator of the bench's held-out cases: run 7's, without mimics, so runs 7-17 are scored on the same cases
HELD_OUT_SYNTH = SynthConfig(spacing_mm=2.0)
# the 3D alternative measured against BENCHMARK (bench/README.md): 32^3 patches of 3 mm cases, same gate and budget
BENCHMARK_3D = SynthTrainingConfig(patch_size=(32, 32, 32), batch_size=2, pool_size=6, refresh_every=3, max_minutes=18.0)
BENCHMARK_3D_SYNTH = SynthConfig(spacing_mm=3.0)


def version_code_modules() -> list[ModuleType]:
    """The modules whose source a synthetic-lesion model's version hashes: the generator, the network, its
    training and its inference (the same list for :func:`synth_version` and the pipeline's model asset)."""
    return [anatomy, deform, lesions, intensity, acquisition, mimics, skull_strip, generator, prefetch, slices, unet,
            unet_train, brain_gate_module, operating_point_module, slice_context_module, sys.modules[__name__]]


def synth_version(synth: SynthConfig, training: SynthTrainingConfig, seed: int) -> str:
    """The model version for generator configuration ``synth`` (seed ``seed``) and ``training``."""
    code = version_code_modules()
    data = [anatomy.load_anatomy().fingerprint()]
    return model_version(code, data, {"synth": asdict(synth), "seed": int(seed), "training": asdict(training)})


def held_out_generator(gen: LesionGenerator) -> LesionGenerator:
    """A generator with the same configuration and a seed no training run of ``gen`` uses."""
    return LesionGenerator(gen.config, seed=gen.seed + HELD_OUT_SEED_OFFSET)


def network_plan(gen: LesionGenerator, config: SynthTrainingConfig) -> Plan:
    """The DynUNet plan: 2D for a 2-element ``patch_size`` (in-plane pixels of the generator's spacing), else
    3D at the generator's isotropic spacing."""
    kwargs = {"base_filters": config.base_filters, "max_filters": config.max_filters}
    if len(config.patch_size) == 2:
        return plan_dynunet_2d(gen.config.spacing_mm, config.patch_size, **kwargs)
    if len(config.patch_size) != 3:
        raise ValueError(f"patch_size must be (h, w) or (z, y, x); got {config.patch_size}")
    return plan_dynunet((gen.config.spacing_mm,) * 3, config.patch_size, **kwargs)


def train_on_generator(gen: LesionGenerator, config: SynthTrainingConfig = BENCHMARK, *, device: str = "auto",
                       log: Callable[[str], None] | None = None) -> tuple[SegmentationModel, dict[str, Any]]:
    """Train a DynUNet on cases of ``gen`` made on the fly: 3 classes (outside the brain, brain, tumour; brain
    and outside written as 0, tumour as 1) with ``brain_gate``, else 2 (background, tumour 1); returns the
    model (version set, ``resample_input`` on, spacing = the generator's) and a JSON-able report (loss curve
    every 25 iterations, seconds spent generating and training, cases seen)."""
    say = log or (lambda _m: None)
    with CaseFeed(gen, config.target_labels, workers=config.generation_workers,
                  brain_classes=config.brain_gate, slab_share=config.slab_share) as feed:  # forks before torch computes
        torch.manual_seed(config.seed)
        rng = np.random.default_rng(config.seed)
        dev = pick_device(device)
        plan = network_plan(gen, config)
        gated, context = config.brain_gate, config.slice_context
        if context and len(plan.patch_size) != 2:
            raise ValueError(f"slice_context needs a 2D patch_size (h, w); got {config.patch_size}")
        model = SegmentationModel(plan=plan, n_classes=3 if gated else 2, label_values=[0, 0, 1] if gated else [0, 1],
                                  normalization="percentile", version=synth_version(gen.config, config, gen.seed),
                                  spacing_mm=[gen.config.spacing_mm] * 3, resample_input=True, brain_gate=gated,
                                  in_channels=2 * context + 1, slice_context=context,
                                  lesion_threshold=config.lesion_threshold)
        net = model.network.to(dev)
        if len(plan.patch_size) == 2:
            net = net.to(memory_format=torch.channels_last)  # faster 2D convolutions on CPU (oneDNN) and GPU
        say(f"plan: kernels={plan.kernel_sizes} strides={plan.strides} filters={plan.filters} patch={plan.patch_size}")
        from monai.losses import DiceCELoss

        loss_fn = DiceCELoss(to_onehot_y=True, softmax=True, batch=True)  # batch Dice: patches without lesion count
        opt = torch.optim.Adam(net.parameters(), lr=config.learning_rate, weight_decay=3e-5)
        threads = torch.get_num_threads()
        if dev.type == "cpu" and config.cpu_threads:
            torch.set_num_threads(config.cpu_threads)
        try:
            losses, curve, stats = _training_loop(net, opt, grad_scaler(dev), loss_fn, feed, plan.patch_size, config,
                                                  model.n_classes, rng, dev, say)
        finally:
            torch.set_num_threads(threads)
    done = stats["iterations_done"]
    if losses and (not curve or curve[-1]["iteration"] != done):
        curve.append({"iteration": done, "loss": float(np.mean(losses[-25:]))})
    net.eval()
    report = {"version": model.version, "curve": curve, "device": str(dev), **stats, "training": asdict(config),
              "generator": gen.parameters()}
    return model, report


class _Patches:
    """Patches from the pool: slices for a 2D patch, 3D patches otherwise; ``put`` replaces one pool slot."""

    def __init__(self, pool: list[TrainingPair], patch_size: list[int], config: SynthTrainingConfig, n_classes: int,
                 rng: np.random.Generator, spacing_mm: float) -> None:
        self.pool, self.patch_size, self.config, self.n_classes, self.rng = pool, patch_size, config, n_classes, rng
        self.slices = SliceSampler(pool, tuple(patch_size), config.foreground_oversampling, n_classes - 1,  # type: ignore[arg-type]
                                   rng, config.thick_axis_share, config.slice_context,
                                   spacing_mm) if len(patch_size) == 2 else None
        self.volumes = None if self.slices else self._volume_sampler()

    def _volume_sampler(self) -> PatchSampler:
        return PatchSampler([p.image for p in self.pool], [p.target for p in self.pool], list(self.patch_size),
                            self.n_classes, self.config.foreground_oversampling, self.rng)

    def put(self, slot: int, pair: TrainingPair) -> None:
        self.pool[slot] = pair
        if self.slices is not None:
            self.slices.replace(slot, pair)
        else:
            self.volumes = self._volume_sampler()

    def batch(self, n: int) -> tuple[torch.Tensor, torch.Tensor]:
        return (self.slices or self.volumes).batch(n)  # type: ignore[union-attr]


def _training_loop(net: torch.nn.Module, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler, loss_fn: Any,
                   feed: CaseFeed, patch_size: list[int], config: SynthTrainingConfig, n_classes: int,
                   rng: np.random.Generator, dev: torch.device,
                   say: Callable[[str], None]) -> tuple[list[float], list[dict], dict[str, Any]]:
    """The iterations of :func:`train_on_generator`: (losses, curve, stats: cases_generated, iterations_done,
    stopped_by, seconds_generating (waiting for cases), seconds_training)."""
    t0 = time.perf_counter()
    patches = _Patches([feed.get(i) for i in range(config.pool_size)], patch_size, config, n_classes, rng,
                       feed.gen.config.spacing_mm)
    next_index, t_gen, t_train = config.pool_size, time.perf_counter() - t0, 0.0
    curve: list[dict] = []
    losses: list[float] = []
    start, budget_s = time.perf_counter() - t_gen, (config.max_minutes or 0.0) * 60.0
    done, stopped_by = 0, "iterations"
    net.train()
    for it in range(config.iterations):
        progress = it / config.iterations
        if budget_s:
            progress = max(progress, (time.perf_counter() - start) / budget_s)
            if progress >= 1.0:
                stopped_by = "time"
                break
        if it and it % config.refresh_every == 0:
            t0 = time.perf_counter()
            patches.put(next_index % config.pool_size, feed.get(next_index))
            next_index += 1
            t_gen += time.perf_counter() - t0
        t0 = time.perf_counter()
        for group in opt.param_groups:
            group["lr"] = config.learning_rate * (1 - progress) ** 0.9
        x, y = patches.batch(config.batch_size)
        x, y = x.to(dev), y.to(dev)
        if x.dim() == 4:
            x = x.contiguous(memory_format=torch.channels_last)
        opt.zero_grad(set_to_none=True)
        with autocast_context(dev, cpu_bfloat16=config.cpu_bfloat16):
            out = net(x)
        losses.append(optimizer_step(net, opt, scaler, loss_fn(out.float(), y)))
        t_train += time.perf_counter() - t0
        done = it + 1
        if (it + 1) % 25 == 0 or it + 1 == config.iterations:
            curve.append({"iteration": it + 1, "loss": float(np.mean(losses[-25:]))})
            say(f"iteration {it + 1}/{config.iterations}: loss {curve[-1]['loss']:.4f} "
                f"({t_gen:.0f} s generating, {t_train:.0f} s training)")
    stats = {"cases_generated": next_index, "iterations_done": done, "stopped_by": stopped_by,
             "seconds_generating": t_gen, "seconds_training": t_train}
    return losses, curve, stats
