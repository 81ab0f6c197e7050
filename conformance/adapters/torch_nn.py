"""torch.nn.functional: the third opinion.

Arguments go to torch exactly as a user would pass them (no casts), so where torch
differs from the spec the difference shows. The spec marks those clauses
*torch: differs*; they are this adapter's documented deviations.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from conformance import spec
from conformance.adapters import TORCH_LOSSES, Adapter, Outcome, split_args


def to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    if np.dtype(a.dtype).kind == "f":
        return torch.from_numpy(np.array(a, dtype=np.float64)).to(getattr(torch, dtype))
    return torch.from_numpy(np.array(a, dtype=dtype))


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).numpy()


def run_torch(fn, case, dtype):
    """Call ``fn`` (a torch.nn.functional-style function) on the case, and backward."""
    args = split_args(case, dtype, to_torch)
    x = args.get("input")
    if x is not None and x.is_floating_point():
        x.requires_grad_()
    output = fn(**args)
    grad = None
    if case.grad_output is not None and output.requires_grad:
        (grad,) = torch.autograd.grad(output, x, to_torch(case.grad_output, dtype),
                                      allow_unused=True)
    grad_dtype = None if grad is None else str(grad.dtype).removeprefix("torch.")
    return Outcome(to_numpy(output), None if grad is None else to_numpy(grad),
                   str(output.dtype).removeprefix("torch."), grad_dtype)


class TorchAdapter(Adapter):
    name = "torch"
    description = f"torch.nn.functional (torch {torch.__version__})"
    losses = TORCH_LOSSES
    deviations = spec.torch_deviations()

    def call(self, case, dtype, traced):
        return run_torch(getattr(F, case.loss), case, dtype)


ADAPTER = TorchAdapter()
