"""An int8 copy of a frozen encoder for the CPU: faster reading, slightly different vectors.

Dynamic quantization stores each ``nn.Linear`` weight as int8 and quantizes activations on the
fly, so the matrix multiplications (nearly all of an encoder's time) run in int8. It changes
the vectors a little (mean cosine to fp32 about 0.98 on multilingual-e5-small features), so it
is an option, off by default, for reading texts or tokens with a frozen encoder on the CPU:
``head`` features and matrices from a model. BENCHMARKS.md ("CPU encoding") has its speed and
what it does to accuracy and neighbours. Never for training: the int8 copy has no gradients.
"""

from __future__ import annotations

import copy
import logging
import warnings
from dataclasses import replace
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:
    from embedgen.models import Encoder

from embedgen.errors import BadConfig

log = logging.getLogger(__name__)

_INT8_LINEAR = torch.ao.nn.quantized.dynamic.Linear


def is_int8(model: nn.Module) -> bool:
    """Whether ``model`` is an int8 copy made by :func:`int8_encoder`."""
    return any(isinstance(m, _INT8_LINEAR) for m in model.modules())


def int8_encoder(encoder: Encoder) -> Encoder:
    """A copy of ``encoder`` whose linear layers run as dynamic int8; the original is unchanged.

    CPU only (PyTorch's dynamic int8 kernels are CPU kernels).
    """
    if encoder.device.type != "cpu":
        raise BadConfig(
            f"int8 reading is for the CPU; this model is on {encoder.device.type}. "
            "Turn int8 off: a GPU reads in bf16 already."
        )
    model = copy.deepcopy(encoder.model).eval()
    with warnings.catch_warnings():
        # PyTorch marks its eager quantization API deprecated in favour of torchao; it still
        # works and needs no extra package.
        warnings.simplefilter("ignore")
        quantized = torch.ao.quantization.quantize_dynamic(model, {nn.Linear}, dtype=torch.qint8)
    layers = sum(isinstance(m, _INT8_LINEAR) for m in quantized.modules())
    log.info("int8 copy of %s: %d linear layers quantized", encoder.info.model_id, layers)
    return replace(encoder, model=quantized)
