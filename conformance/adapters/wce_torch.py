"""wce_torch, called eagerly like torch.nn.functional (class axis 1); the JVP through
``torch.func.jvp`` and the HVP through double backward (spec section 18)."""

from __future__ import annotations

import torch

import wce_torch
from conformance.adapters import Adapter
from conformance.adapters.runners import DEVICE, run_torch


class WceTorchAdapter(Adapter):
    name = "wce_torch"
    description = f"wce_torch (torch {torch.__version__}, {DEVICE})"
    exact_errors = True
    derivatives = True  # torch.func.jvp and double backward

    def call(self, case, dtype, traced):
        return run_torch(getattr(wce_torch, case.loss), case, dtype, derivatives=True)


ADAPTER = WceTorchAdapter()
