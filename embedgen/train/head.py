"""The head that fine-tuning trains: ``Linear(hidden -> d)``, then a classifier over the labels."""

from __future__ import annotations

import torch
from torch import nn


class Head(nn.Module):
    """Projection ``Linear(hidden -> dim)`` then a classifier over the labels.

    The projection is what the ``projected`` and (from a run) ``contextual`` matrices pass
    their vectors through, so the matrix carries what the labels taught it.
    """

    def __init__(self, hidden: int, dim: int, num_classes: int, dropout: float = 0.1) -> None:
        super().__init__()
        self.projection = nn.Linear(hidden, dim)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dim, num_classes)

    def project(self, features: torch.Tensor) -> torch.Tensor:
        """The d-dim vectors the embedding matrix uses (before the activation)."""
        return self.projection(features)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.dropout(torch.tanh(self.project(features))))
