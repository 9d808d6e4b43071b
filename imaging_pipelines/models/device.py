"""Torch device choice shared by the learned models: CUDA (with mixed precision) when present, CPU otherwise.

The same training and inference code runs on both; only these helpers look at the hardware.
"""

from __future__ import annotations

import contextlib

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


def autocast_context(device: torch.device):
    """A context manager for the forward pass: CUDA autocast on a GPU, a no-op (full float32) on CPU."""
    dtype = amp_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type="cuda", dtype=dtype)


def grad_scaler(device: torch.device) -> torch.amp.GradScaler:
    """A gradient scaler, enabled only where autocast runs in float16 (bfloat16 and CPU need none)."""
    return torch.amp.GradScaler("cuda", enabled=amp_dtype(device) == torch.float16)
