"""torch.nn.functional: the third opinion.

Arguments go to torch exactly as a user would pass them (no casts), so where torch
differs from the spec the difference shows. The spec marks those clauses
*torch: differs*; they are this adapter's documented deviations.
"""

from __future__ import annotations

import os

import numpy as np
import torch
import torch.nn.functional as F

from conformance import spec
from conformance.adapters import TORCH_LOSSES, Adapter, Outcome, grad_arguments, split_args


#: Where the cases' tensors are made: the environment's WCE_TORCH_DEVICE (``cuda``), else
#: the CPU. Values are rounded to the run dtype on the CPU first, so every device sees
#: the same inputs.
DEVICE = torch.device(os.environ.get("WCE_TORCH_DEVICE") or "cpu")


def to_torch(a: np.ndarray, dtype: str) -> torch.Tensor:
    if np.dtype(a.dtype).kind == "f":
        t = torch.from_numpy(np.array(a, dtype=np.float64)).to(getattr(torch, dtype))
        return t.to(DEVICE)
    return torch.from_numpy(np.array(a, dtype=dtype)).to(DEVICE)


def to_numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().to(torch.float64).cpu().numpy()


def _dtype(t: torch.Tensor) -> str:
    return str(t.dtype).removeprefix("torch.")


def run_torch(fn, case, dtype):
    """Call ``fn`` (a torch.nn.functional-style function) on the case, and backward."""
    args = split_args(case, dtype, to_torch)
    names = grad_arguments(case) if case.grad_output is not None else []
    for name in names:
        args[name].requires_grad_()
    output = fn(**args)
    outcome = Outcome(to_numpy(output), None, _dtype(output), None)
    if names and output.requires_grad:
        grads = torch.autograd.grad(output, [args[n] for n in names],
                                    to_torch(case.grad_output, dtype), allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is None:
                continue
            if name == "input":
                outcome.grad_input, outcome.grad_dtype = to_numpy(grad), _dtype(grad)
            else:
                outcome.grads[name] = (to_numpy(grad), _dtype(grad))
    return outcome


def ddp_mean_of_shards(fn):
    """What DistributedDataParallel computes from per-rank losses: each shard's loss on its
    own, averaged (DDP averages the ranks' gradients) [DP-GLOBAL]."""
    def loss(input, target, **shared):
        per_shard = [fn(x, t, **shared) for x, t in zip(input, target)]
        return torch.stack(per_shard).mean()
    return loss


class TorchAdapter(Adapter):
    name = "torch"
    description = f"torch.nn.functional (torch {torch.__version__}, {DEVICE}); DDP for shards"
    losses = TORCH_LOSSES
    deviations = spec.torch_deviations()
    supports_shards = True  # as DDP does it: the mean of the per-rank losses

    def call(self, case, dtype, traced):
        fn = getattr(F, case.loss)
        return run_torch(ddp_mean_of_shards(fn) if case.shards else fn, case, dtype)


ADAPTER = TorchAdapter()
