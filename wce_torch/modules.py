"""nn.Module versions, with torch.nn's names and constructor arguments.

Weights are registered as buffers, as in torch, so ``.to(device)``, ``state_dict`` and
``load_state_dict`` behave the same and state dicts are interchangeable with torch's.
"""

from __future__ import annotations

import torch
from torch import nn

from wce_torch import functional as F
from wce_torch._checks import reduction as legacy_reduction


class _Loss(nn.Module):
    def __init__(self, size_average=None, reduce=None, reduction="mean", process_group=None):
        super().__init__()
        self.reduction = legacy_reduction(size_average, reduce, reduction)
        self.process_group = process_group  # [DP-PROCESS-GROUP]; None: this rank only


class _WeightedLoss(_Loss):
    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 process_group=None):
        super().__init__(size_average, reduce, reduction, process_group)
        self.register_buffer("weight", weight)
        self.weight: torch.Tensor | None


class CrossEntropyLoss(_WeightedLoss):
    """:func:`wce_torch.cross_entropy` as a module, like ``torch.nn.CrossEntropyLoss``."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", label_smoothing=0.0, *, process_group=None):
        super().__init__(weight, size_average, reduce, reduction, process_group)
        self.ignore_index = ignore_index
        self.label_smoothing = label_smoothing

    def forward(self, input, target):
        return F.cross_entropy(input, target, weight=self.weight,
                               ignore_index=self.ignore_index, reduction=self.reduction,
                               label_smoothing=self.label_smoothing,
                               process_group=self.process_group)


class NLLLoss(_WeightedLoss):
    """:func:`wce_torch.nll_loss` as a module, like ``torch.nn.NLLLoss``."""

    def __init__(self, weight=None, size_average=None, ignore_index=-100, reduce=None,
                 reduction="mean", *, process_group=None):
        super().__init__(weight, size_average, reduce, reduction, process_group)
        self.ignore_index = ignore_index

    def forward(self, input, target):
        return F.nll_loss(input, target, weight=self.weight, ignore_index=self.ignore_index,
                          reduction=self.reduction, process_group=self.process_group)


class BCELoss(_WeightedLoss):
    """:func:`wce_torch.binary_cross_entropy` as a module, like ``torch.nn.BCELoss``."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean", *,
                 process_group=None):
        super().__init__(weight, size_average, reduce, reduction, process_group)

    def forward(self, input, target):
        return F.binary_cross_entropy(input, target, weight=self.weight,
                                      reduction=self.reduction,
                                      process_group=self.process_group)


class BCEWithLogitsLoss(_Loss):
    """:func:`wce_torch.binary_cross_entropy_with_logits` as a module, like
    ``torch.nn.BCEWithLogitsLoss``."""

    def __init__(self, weight=None, size_average=None, reduce=None, reduction="mean",
                 pos_weight=None, *, process_group=None):
        super().__init__(size_average, reduce, reduction, process_group)
        self.register_buffer("weight", weight)
        self.register_buffer("pos_weight", pos_weight)
        self.weight: torch.Tensor | None
        self.pos_weight: torch.Tensor | None

    def forward(self, input, target):
        return F.binary_cross_entropy_with_logits(input, target, weight=self.weight,
                                                  reduction=self.reduction,
                                                  pos_weight=self.pos_weight,
                                                  process_group=self.process_group)
