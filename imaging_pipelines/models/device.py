"""Torch device choice shared by the learned models: CUDA (with mixed precision) when present, CPU otherwise.

The same training and inference code runs on both; only these helpers look at the hardware.
"""

from __future__ import annotations

import contextlib
import functools

import torch


def pick_device(prefer: str = "auto") -> torch.device:
    """The torch device to run on.

    ``prefer``: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.
    Asking for CUDA on a machine without it raises ``RuntimeError`` instead of silently using the CPU.
    """
    prefer = (prefer or "auto").lower()
    if prefer == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(prefer)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {prefer!r} requested but CUDA is not available")
    if device.type not in ("cpu", "cuda"):
        raise ValueError(f"unsupported device {prefer!r}; use 'auto', 'cpu' or 'cuda'")
    return device


def amp_dtype(device: torch.device) -> torch.dtype | None:
    """The autocast dtype used on ``device`` (bfloat16 where the GPU supports it, else float16); None on CPU."""
    if device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast_context(device: torch.device, *, cpu_bfloat16: bool = False):
    """A context manager for the forward pass: CUDA autocast on a GPU; on CPU a no-op (full float32), or
    bfloat16 autocast when ``cpu_bfloat16`` is asked for and the CPU computes bfloat16 natively
    (:func:`cpu_has_native_bfloat16`; opt-in: training only, where it doubles throughput on such CPUs)."""
    dtype = amp_dtype(device)
    if dtype is None:
        if cpu_bfloat16 and device.type == "cpu" and cpu_has_native_bfloat16():
            return torch.autocast(device_type="cpu", dtype=torch.bfloat16)
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


@functools.cache
def cpu_has_native_bfloat16() -> bool:
    """True when the CPU advertises bfloat16 arithmetic (x86 ``avx512_bf16`` or ``amx_bf16`` in
    ``/proc/cpuinfo``); elsewhere (or unreadable) False, since emulated bfloat16 is slower than float32."""
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="replace") as info:
            for line in info:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return bool(flags & {"avx512_bf16", "amx_bf16"})
    except OSError:
        return False
    return False


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only where autocast runs in float16 (bfloat16 and CPU need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
