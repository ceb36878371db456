"""Fine-tuning: the config, the head, batches of tokenised text, and the training loop.

- ``config.py``: :class:`FinetuneConfig` and :class:`Strategy`, every default and limit.
- ``head.py``: the :class:`Head` that trains (projection + classifier).
- ``batches.py``: tokenised, length-sorted, padded batches and pooled features (shared with
  matrix building).
- ``metrics.py``: macro-F1 and the confusion matrix.
- ``loop.py``: :func:`finetune` and the :class:`Run` it returns.
- ``distributed.py``: training under torchrun: the process group, which process writes, and
  the collectives the loop needs (no-ops in a single process).
"""

from embedgen.train.config import FinetuneConfig, Pooling, Strategy
from embedgen.train.head import Head
from embedgen.train.loop import EpochMetrics, Run, finetune

__all__ = [
    "EpochMetrics",
    "FinetuneConfig",
    "Head",
    "Pooling",
    "Run",
    "Strategy",
    "finetune",
]
