"""torch.nn.functional: the third opinion.

Arguments go to torch exactly as a user would pass them (no casts), so where torch
differs from the spec the difference shows. The spec marks those clauses
*torch: differs*; they are this adapter's documented deviations.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from conformance import clauses
from conformance.adapters import TORCH_LOSSES, Adapter
from conformance.adapters.runners import DEVICE, run_torch


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
    deviations = clauses.torch_deviations()
    supports_shards = True  # as DDP does it: the mean of the per-rank losses
    derivatives = True  # torch.func.jvp and double backward

    def call(self, case, dtype, traced):
        fn = getattr(F, case.loss)
        return run_torch(ddp_mean_of_shards(fn) if case.shards else fn, case, dtype,
                         derivatives=True)


ADAPTER = TorchAdapter()
