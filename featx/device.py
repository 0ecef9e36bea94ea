"""Device selection and the CUDA-only speed-ups (autocast, pinned memory) in one place."""
from __future__ import annotations

import contextlib

import torch

from featx.errors import FeatxError, arg

DEVICES = ("auto", "cpu", "cuda")


def resolve_device(spec: str | torch.device = "auto") -> torch.device:
    """Turn ``auto|cpu|cuda[:N]`` into a device; ``auto`` picks CUDA when present."""
    if isinstance(spec, torch.device):
        return spec
    spec = (spec or "auto").lower()
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec.startswith("cuda"):
        if not torch.cuda.is_available():
            raise FeatxError(f"{arg('device', spec)}: CUDA is not available on this machine; use "
                             f"{arg('device', 'cpu')} or {arg('device', 'auto')}")
        try:
            device = torch.device(spec)
        except RuntimeError:
            raise FeatxError(f"{arg('device', spec)}: not a device; use cuda or cuda:N") from None
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise FeatxError(f"{arg('device', spec)}: this machine has {torch.cuda.device_count()} CUDA device(s), "
                             f"cuda:0 to cuda:{torch.cuda.device_count() - 1}")
        return device
    raise FeatxError(f"{arg('device', spec)}: unknown device; choose one of: auto, cpu, cuda, cuda:N")


def autocast(device: torch.device, enabled: bool = True):
    """Mixed precision on CUDA (float16 autocast); a no-op context on the CPU."""
    if enabled and device.type == "cuda":
        return torch.autocast(device_type="cuda", dtype=torch.float16)
    return contextlib.nullcontext()


def pin_memory(device: torch.device) -> bool:
    """Pinned host memory only pays off when batches go to a CUDA device."""
    return device.type == "cuda"


def memory_format(device: torch.device) -> torch.memory_format:
    """channels-last is faster for convolutions on the CPU (oneDNN) and with AMP on CUDA."""
    return torch.channels_last
