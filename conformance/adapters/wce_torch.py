"""wce_torch, called eagerly like torch.nn.functional (class axis 1)."""

from __future__ import annotations

import torch

import wce_torch
from conformance.adapters import Adapter
from conformance.adapters.runners import DEVICE, run_torch


class WceTorchAdapter(Adapter):
    name = "wce_torch"
    description = f"wce_torch (torch {torch.__version__}, {DEVICE})"
    exact_errors = True

    def call(self, case, dtype, traced):
        return run_torch(getattr(wce_torch, case.loss), case, dtype)


ADAPTER = WceTorchAdapter()
