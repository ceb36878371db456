"""What trains, by strategy: which of the encoder's parameters, and the frozen layers cast once.

``head`` trains the head alone (the encoder is frozen and not copied); ``top-k`` the top
``top_k`` transformer blocks too; ``full`` everything but the input embeddings (unless
``train_embeddings``).
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import torch
from torch import nn

from embedgen.device import autocast_dtype
from embedgen.errors import BadConfig
from embedgen.train.config import FinetuneConfig, Strategy

log = logging.getLogger(__name__)


def model_to_train(
    model: nn.Module, config: FinetuneConfig, device: torch.device
) -> tuple[nn.Module, list[str]]:
    """The model a run trains on ``device``, and the frozen linear layers cast to bf16 (their
    names, to put back with :func:`restore_frozen_linears`).

    ``head`` uses the caller's model as it is (frozen: never changed); the tuned strategies a
    copy, with what they train unfrozen and, where the device autocasts, the frozen linear
    layers stored in its dtype once.
    """
    if config.strategy is Strategy.HEAD:
        log.info("Strategy head: the encoder is frozen")
        return model.to(device), []
    model = copy.deepcopy(model).to(device)
    trainable = set_trainable(model, config)
    log.info("Strategy %s: %d trainable encoder parameters", config.strategy, trainable)
    dtype = autocast_dtype(device)
    cast = cast_frozen_linears(model, dtype) if dtype is not None else []
    if cast:
        log.info("%d frozen linear layers kept in %s", len(cast), dtype)
    return model, cast


def transformer_layers(model: nn.Module) -> nn.ModuleList:
    """The stack of transformer blocks (the longest ModuleList matching the layer count)."""
    n = getattr(model.config, "num_hidden_layers", None)
    candidates = [m for m in model.modules() if isinstance(m, nn.ModuleList) and len(m) > 0]
    matching = [m for m in candidates if n is None or len(m) == n]
    if not matching:
        raise BadConfig(
            f"Cannot find the transformer layers of {type(model).__name__}; use strategy 'head' "
            "or 'full' for this model."
        )
    return max(matching, key=len)


def set_trainable(model: nn.Module, config: FinetuneConfig) -> int:
    """Freeze what the strategy keeps fixed; return the number of trainable encoder parameters."""
    for p in model.parameters():
        p.requires_grad = False
    if config.strategy is Strategy.TOP_K:
        layers = transformer_layers(model)
        if config.top_k > len(layers):
            raise BadConfig(
                f"top-k asks for {config.top_k} layers but the model has {len(layers)}. "
                f"Choose 1..{len(layers)}, or strategy 'full'."
            )
        for layer in layers[-config.top_k :]:
            for p in layer.parameters():
                p.requires_grad = True
    elif config.strategy is Strategy.FULL:
        for p in model.parameters():
            p.requires_grad = True
        if not config.train_embeddings:
            for p in model.get_input_embeddings().parameters():
                p.requires_grad = False
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def cast_frozen_linears(model: nn.Module, dtype: torch.dtype) -> list[str]:
    """Store the weights of ``model``'s frozen ``nn.Linear`` layers in ``dtype`` once; return
    their names (to put the originals back with :func:`restore_frozen_linears`).

    Under autocast a linear layer's weight is cast to bf16 at every call, and the cast is
    cached only for weights that train: a frozen layer paid one cast per step (issue 10's
    launch-bound ``top-k``). Cast once, the layer computes the same numbers: autocast would
    have cast the same weights to the same dtype.
    """
    names = []
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and not any(
            p.requires_grad for p in module.parameters(recurse=False)
        ):
            module.to(dtype)
            names.append(name)
    return names


def restore_frozen_linears(model: nn.Module, original: nn.Module, names: Sequence[str]) -> None:
    """Put back the frozen linear layers ``names`` of ``model`` as ``original`` holds them, in
    its dtype (a run saves its encoder at full precision)."""
    for name in names:
        module, source = model.get_submodule(name), original.get_submodule(name)
        module.to(next(source.parameters()).dtype)
        module.load_state_dict(source.state_dict())
