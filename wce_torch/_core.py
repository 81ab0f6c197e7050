"""Row machinery shared by wce_torch's losses: class terms, weight casting, reduction,
the collectives of data parallelism [DP-PROCESS-GROUP], and the autograd engine's
retain-graph flag.

Every loss module imports these by their public names; the mirror of this file is
wce_jax/_core.py.
"""

from __future__ import annotations

import torch


def rows(a: torch.Tensor) -> torch.Tensor:
    """(C,) or (N, C, d1..dk) -> (M, C) with the class axis last (spec section 0)."""
    if a.dim() == 1:
        return a.unsqueeze(0)
    if a.dim() == 2:
        return a
    return a.movedim(1, -1).reshape(-1, a.shape[1])


def class_weights_or_ones(weight, num_classes, dtype, device):
    if weight is None:
        return torch.ones(num_classes, dtype=dtype, device=device)
    return weight.to(dtype=dtype, device=device)


def class_terms(target, w, num_classes, ignore_index):
    """Per-element valid mask, safe class index and target weight.

    ``w_y`` is 0 for ignored elements and NaN for an out-of-range target (reachable only
    under torch.compile, where values are not checked) [TRACE-TARGET-RANGE]; it is also
    what the weighted mean divides by [CE-MEAN].
    """
    target = target.to(torch.int64)
    valid = target != ignore_index
    in_range = (target >= 0) & (target < num_classes)
    y = torch.where(valid & in_range, target, 0)
    w_y = torch.where(valid, w.index_select(0, y), 0.0)  # (w[y] is 500x slower on CPU)
    w_y = torch.where(valid & ~in_range, torch.nan, w_y)
    return valid, y, w_y


def nan_rows(bad, rows):
    """0, or NaN with a NaN gradient for every entry of a bad row [TRACE-TARGET-RANGE]."""
    if torch.compiler.is_compiling() or bad.any():
        return torch.where(bad, rows.sum(dim=-1) * torch.nan, 0.0)
    return 0.0


def reduce(losses, target_weights, reduction, shape, process_group=None):
    """[CE-NONE] [CE-SUM] [CE-MEAN]; ``target_weights=None`` means the plain mean.

    A mean over zero weight is undefined: it divides by NaN, so its gradient is NaN for
    valid elements and exactly zero for ignored ones [EDGE-ZERO-WEIGHT-SUM]
    [EDGE-ALL-IGNORED] [EDGE-EMPTY]. With a ``process_group``: [DP-PROCESS-GROUP].
    """
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    count = (torch.tensor(float(losses.numel()), dtype=total.dtype, device=total.device)
             if target_weights is None else target_weights.sum())
    if process_group is not None:
        return global_total(total, count, reduction, process_group)
    if reduction == "sum":
        return total
    return total / torch.where(count == 0, torch.nan, count)


def global_total(total, count, reduction, group):
    """[DP-PROCESS-GROUP]: the global loss on every rank, from this rank's numerator and
    the denominator summed over the ranks."""
    if reduction == "mean":
        count = all_reduced(count.to(total.dtype), group)
        total = total / torch.where(count == 0, torch.nan, count)
    return global_share(total, group)


def global_share(local, group):
    """The sum of ``local`` over the group's ranks, on every rank, with the gradient of
    ``world_size * local``: DistributedDataParallel averages the ranks' gradients, which
    turns that into the gradient of the sum."""
    import torch.distributed as dist

    share = dist.get_world_size(group) * local
    return all_reduced(local, group) + (share - share.detach())


def all_reduced(value, group):
    """A detached copy of ``value`` summed over the group's ranks."""
    import torch.distributed as dist

    value = value.detach().clone()
    dist.all_reduce(value, group=group)
    return value


def graph_is_kept() -> bool:
    """Whether the running backward pass keeps the graph (``retain_graph=True``).

    Read from the autograd engine; if a torch version does not say, assume it is kept,
    which costs one logits-sized copy and is always correct. Under torch.compile the
    backward is traced once and its in-place updates are made functional anyway.
    """
    if torch.compiler.is_compiling():
        return True
    try:
        return bool(torch._C._autograd._get_current_graph_task_keep_graph())
    except (AttributeError, RuntimeError):
        return True
