"""A DistributedDataParallel rank for tests/test_data_parallel.py: kept light, since every
spawned process imports it."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import wce_torch

FEATURES, CLASSES, PER_RANK = 5, 4, 6
WEIGHT = [0.25, 0.5, 2.0, 8.0]


def batch(world_size):
    """The global batch in float64; rank r holds rows [r*PER_RANK, (r+1)*PER_RANK). The
    ranks' sums of valid target weights differ widely, and one rank has none."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(world_size * PER_RANK, FEATURES, generator=gen, dtype=torch.float64)
    y = torch.randint(0, CLASSES, (world_size * PER_RANK,), generator=gen)
    y[:PER_RANK] = CLASSES - 1            # rank 0: only the heaviest class
    y[PER_RANK:2 * PER_RANK] = -100       # rank 1: every target ignored
    y[2 * PER_RANK::3] = -100
    return x, y


class Net(torch.nn.Module):
    """A hidden layer and an output layer; forward returns both activations."""

    def __init__(self):
        super().__init__()
        self.hidden = torch.nn.Sequential(torch.nn.Linear(FEATURES, 8), torch.nn.Tanh())
        self.output = torch.nn.Linear(8, CLASSES)

    def forward(self, x):
        hidden = self.hidden(x)
        return hidden, self.output(hidden)


def model():
    torch.manual_seed(1)
    return Net().double()


def loss(net, x, y, group):
    """The weighted, smoothed cross-entropy of the network's logits, plus the fused
    linear cross-entropy of its hidden layer through the output layer's weight."""
    weight = torch.tensor(WEIGHT, dtype=torch.float64)
    hidden, logits = net(x)
    output_weight = (net.module if hasattr(net, "module") else net).output.weight
    plain = wce_torch.cross_entropy(logits, y, weight=weight, label_smoothing=0.1,
                                    process_group=group)
    fused = wce_torch.linear_cross_entropy(hidden, output_weight, y, class_weight=weight,
                                           z_loss=1e-2, chunk_size=4, process_group=group)
    return plain + fused


def rank_main(rank, world_size, init_file, out_dir):
    """One DDP step with the global loss (process_group=WORLD) and one with the per-rank
    loss (process_group=None, DDP's default mean of means); saves losses and gradients."""
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        net = model()
        ddp = torch.nn.parallel.DistributedDataParallel(net)
        x, y = batch(world_size)
        rows = slice(rank * PER_RANK, (rank + 1) * PER_RANK)
        results = {}
        for name, group in (("global", dist.group.WORLD), ("per_rank", None)):
            net.zero_grad()
            value = loss(ddp, x[rows], y[rows], group)
            value.backward()
            results[name] = {"loss": value.detach(),
                             "grads": [p.grad.clone() for p in net.parameters()]}
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
