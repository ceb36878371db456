"""Choosing the device: CUDA, else MPS, else CPU; clear words when a choice is impossible."""

from __future__ import annotations

import pytest
import torch

from embedgen.device import autocast, autocast_dtype, device_info, resolve_device
from embedgen.errors import BadConfig


def test_auto_picks_the_best_available_device() -> None:
    expected = "cuda" if torch.cuda.is_available() else None
    got = resolve_device("auto").type
    if expected:
        assert got == expected
    else:
        assert got in ("cpu", "mps")


def test_cpu_is_always_available() -> None:
    assert resolve_device("CPU") == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_what_to_do() -> None:
    with pytest.raises(BadConfig, match="no CUDA GPU.*--device cpu"):
        resolve_device("cuda")


def test_unknown_device_lists_the_choices() -> None:
    with pytest.raises(BadConfig, match="auto, cpu, cuda, mps"):
        resolve_device("tpu")


def test_no_autocast_on_cpu() -> None:
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu) is None
    with autocast(cpu):
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_device_info_describes_the_cpu() -> None:
    info = device_info("cpu")
    assert info.device == "cpu" and "threads" in info.describe()
