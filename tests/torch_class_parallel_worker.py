"""A gloo rank for tests/test_class_parallel.py: class-parallel wce_torch losses
(``class_process_group``), alone and with ``process_group`` (data parallel); kept light,
since every spawned process imports it."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist

import wce_torch

ROWS, CLASSES, FEATURES = 16, 24, 5
#: (reduction, label_smoothing, weighted) for cross_entropy; (reduction, label_smoothing,
#: z_loss, softcap) for linear_cross_entropy.
CE_SETTINGS = [("none", 0.1, True), ("sum", 0.1, True), ("mean", 0.1, True),
               ("mean", 0.0, False)]
LINEAR_SETTINGS = [("mean", 0.1, 1e-2, None), ("none", 0.1, 1e-2, 30.0),
                   ("sum", 0.0, 0.0, 30.0)]


def problem():
    """The problem of tests/jax_class_parallel_checks.py, in float64: rows 0-7 ignored
    (data rank 0 of dp=2 has no valid target), no target in classes 3-5, class 7 a
    target with zero weight, logits at a large scale."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(ROWS, FEATURES, generator=gen, dtype=torch.float64)
    choices = torch.tensor([c for c in range(CLASSES) if c not in (3, 4, 5)])
    y = choices[torch.randint(0, len(choices), (ROWS,), generator=gen)]
    y[:ROWS // 2] = -100
    y[ROWS // 2 + 1] = 7
    y[ROWS // 2 + 4] = -100
    params = 40.0 * torch.randn(FEATURES, CLASSES, generator=gen, dtype=torch.float64)
    weight = 0.25 + 3.75 * torch.rand(CLASSES, generator=gen, dtype=torch.float64)
    weight[7] = 0.0
    ct = torch.randn(ROWS, generator=gen, dtype=torch.float64)
    return x, y, params, weight, ct


def cross_entropy_step(setting, x, y, params, weight, ct, **groups):
    """Loss and gradients of (params, weight) for one setting; "none" is contracted
    with the upstream gradient ``ct``."""
    reduction, eps, weighted = setting
    params, weight = params.clone().requires_grad_(), weight.clone().requires_grad_()
    out = wce_torch.cross_entropy(x @ params, y, weight=weight if weighted else None,
                                  reduction=reduction, label_smoothing=eps, **groups)
    (out * ct).sum().backward() if reduction == "none" else out.backward()
    return {"value": out.detach(), "grads": [params.grad, weight.grad]}


def linear_step(setting, x, y, params, weight, ct, **groups):
    """Loss and gradients of (hidden, lm-head) for one setting."""
    reduction, eps, z_loss, softcap = setting
    hidden, lm_head = x.clone().requires_grad_(), params.T.clone().requires_grad_()
    out = wce_torch.linear_cross_entropy(hidden, lm_head, y, class_weight=weight,
                                         reduction=reduction, label_smoothing=eps,
                                         z_loss=z_loss, softcap=softcap, chunk_size=3,
                                         **groups)
    (out * ct).sum().backward() if reduction == "none" else out.backward()
    return {"value": out.detach(), "grads": [hidden.grad, lm_head.grad]}


def meshes(world_size):
    """(name, dp, tp) of the meshes run on this many ranks; rank = d * tp + t."""
    return [("tp2", 1, 2)] if world_size == 2 else [("tp4", 1, 4), ("dp2xtp2", 2, 2)]


def rank_main(rank, world_size, init_file, out_dir):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank,
                            world_size=world_size)
    try:
        x, y, params, weight, ct = problem()
        results = {}
        for name, dp, tp in meshes(world_size):
            class_groups = [dist.new_group([d * tp + t for t in range(tp)]) for d in range(dp)]
            data_groups = [dist.new_group([d * tp + t for d in range(dp)]) for t in range(tp)]
            d, t = divmod(rank, tp)
            groups = {"class_process_group": class_groups[d],
                      "process_group": data_groups[t] if dp > 1 else None}
            rows = slice(d * ROWS // dp, (d + 1) * ROWS // dp)
            cols = slice(t * CLASSES // tp, (t + 1) * CLASSES // tp)
            shard = (x[rows], y[rows], params[:, cols], weight[cols], ct[rows])
            for setting in CE_SETTINGS:
                if dp == 1 or setting[0] != "none":
                    results[(name, "cross_entropy", setting)] = cross_entropy_step(
                        setting, *shard, **groups)
            for setting in LINEAR_SETTINGS:
                if dp == 1 or setting[0] != "none":
                    results[(name, "linear_cross_entropy", setting)] = linear_step(
                        setting, *shard, **groups)
        torch.save(results, os.path.join(out_dir, f"rank{rank}.pt"))
    finally:
        dist.destroy_process_group()
