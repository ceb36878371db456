"""Which device the work runs on, and which autocast dtype suits it."""

from __future__ import annotations

import contextlib
import enum
from dataclasses import dataclass
from typing import Any

import torch

from embedgen.errors import BadConfig
from embedgen.fields import choice as parse_choice


class DeviceChoice(enum.StrEnum):
    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"
    MPS = "mps"


def _mps_available() -> bool:
    backend = getattr(torch.backends, "mps", None)
    return bool(backend is not None and backend.is_available())


def resolve_device(choice: str = "auto") -> torch.device:
    """Return the torch device for ``choice``: CUDA when present, else MPS, else CPU for "auto"."""
    choice = parse_choice(DeviceChoice, str(choice).lower(), "device")
    if choice is DeviceChoice.AUTO:
        if torch.cuda.is_available():
            return torch.device("cuda")
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    if choice is DeviceChoice.CUDA and not torch.cuda.is_available():
        raise BadConfig(
            "Device 'cuda' was asked for but no CUDA GPU is visible to torch "
            f"(torch {torch.__version__}). Use --device cpu, or install a CUDA build of torch."
        )
    if choice is DeviceChoice.MPS and not _mps_available():
        raise BadConfig("Device 'mps' was asked for but Apple MPS is not available here.")
    return torch.device(choice.value)


def autocast_dtype(device: torch.device) -> torch.dtype | None:
    """Return bfloat16 on GPUs that support it, else None (no autocast)."""
    if device.type == "cuda" and torch.cuda.is_bf16_supported():
        return torch.bfloat16
    return None


def autocast(device: torch.device) -> contextlib.AbstractContextManager[Any]:
    """bf16 autocast where the device supports it, else a no-op context."""
    dtype = autocast_dtype(device)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)


@dataclass(frozen=True)
class DeviceInfo:
    """What the user should know about the device: its name and, on a GPU, free memory."""

    device: str
    name: str
    free_bytes: int | None = None
    total_bytes: int | None = None

    def describe(self) -> str:
        if self.free_bytes is None or self.total_bytes is None:
            return f"{self.device} ({self.name})"
        gib = 1024**3
        return (
            f"{self.device} ({self.name}, {self.free_bytes / gib:.1f} GiB free "
            f"of {self.total_bytes / gib:.1f} GiB)"
        )


def device_info(choice: str = "auto") -> DeviceInfo:
    """Return the resolved device with its name and, for CUDA, free and total memory."""
    device = resolve_device(choice)
    if device.type == "cuda":
        free, total = torch.cuda.mem_get_info(device)
        return DeviceInfo("cuda", torch.cuda.get_device_name(device), int(free), int(total))
    if device.type == "mps":
        return DeviceInfo("mps", "Apple GPU")
    return DeviceInfo("cpu", f"CPU, {torch.get_num_threads()} threads")
