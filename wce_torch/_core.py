"""Row machinery shared by wce_torch's losses: class terms, weight casting, reduction,
the collectives of data parallelism [DP-PROCESS-GROUP], the autograd engine's
retain-graph flag, whether a higher derivative or a transform is at work (spec section
18), and torch's autocast policy.

Every loss module imports these by their public names; the mirror of this file is
wce_jax/_core.py.
"""

from __future__ import annotations

import functools
import math

import torch
import torch.autograd.forward_ad as forward_ad


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


#: Elements a block of rows holds where only the loss is needed (4 MB in float32): a
#: block's temporaries stay in the caches and their memory is reused, instead of
#: logits-sized buffers written once each.
BLOCK_ELEMENTS = 2 ** 20


def row_blocks(tensor):
    """Indices of ``tensor`` by blocks of its first axis of about ``BLOCK_ELEMENTS``
    elements each (a 0-d tensor is one block)."""
    if tensor.ndim == 0:
        return [...]
    step = max(1, BLOCK_ELEMENTS // max(1, math.prod(tensor.shape[1:])))
    return [slice(i, i + step) for i in range(0, tensor.shape[0], step)]


def elementwise_loss_alone(elements, reduction, shape, process_group, x, *others):
    """[CE-NONE] [CE-SUM] [CE-MEAN] of a loss of one term per element of ``x``, when no
    gradient is asked for: ``elements(x, *others)`` (``others`` broadcast to ``x``, or
    None) by blocks of rows, whose temporaries stay in the caches. A reduced loss keeps
    each block's total, not a losses-sized buffer."""
    others = [None if t is None else torch.broadcast_to(t, x.shape) for t in others]
    blocks = ((x[s], *(None if t is None else t[s] for t in others)) for s in row_blocks(x))
    if reduction == "none":
        losses = torch.empty_like(x)
        for s, block in zip(row_blocks(x), blocks):
            losses[s] = elements(*block)
        return losses.reshape(shape)
    total = torch.stack([elements(*block).sum() for block in blocks] or [x.new_zeros(())]).sum()
    count = torch.tensor(float(x.numel()), dtype=total.dtype, device=total.device)
    return reduce_total(total, count, reduction, process_group)


def nan_rows(bad, rows):
    """0, or NaN with a NaN gradient for every entry of a bad row [TRACE-TARGET-RANGE]."""
    if traced() or bad.any():
        # (not where(bad, rows.sum() * nan, 0): its gradient is 0 * nan on good rows)
        return torch.where(bad[:, None], rows, 0.0).sum(dim=-1) * torch.where(bad, torch.nan,
                                                                               0.0)
    return 0.0


def reduce(losses, target_weights, reduction, shape, process_group=None, valid=None):
    """[CE-NONE] [CE-SUM] [CE-MEAN]; ``target_weights=None`` means the plain mean.

    A mean over zero weight is undefined: it divides by NaN, so its gradient is NaN for
    valid elements and exactly zero for ignored ones [EDGE-ZERO-WEIGHT-SUM]
    [EDGE-ALL-IGNORED] [EDGE-EMPTY]. With a ``process_group``: [DP-PROCESS-GROUP].
    With the ``valid`` mask of class targets, a mean whose targets are all ignored is NaN
    with a tangent of 0, not the ``0/0`` of forward mode [JVP].
    """
    if reduction == "none":
        return losses.reshape(shape)
    total = losses.sum()
    count = (torch.tensor(float(losses.numel()), dtype=total.dtype, device=total.device)
             if target_weights is None else target_weights.sum())
    return reduce_total(total, count, reduction, process_group, valid)


def reduce_total(total, count, reduction, process_group=None, valid=None):
    """:func:`reduce` from the losses' ``total`` and the mean's denominator ``count``."""
    if process_group is not None:
        return global_total(total, count, reduction, process_group)
    if reduction == "sum":
        return total
    if valid is not None and valid.numel():  # all ignored: 0 / 1 + NaN, whose tangent is 0
        some = valid.any()
        return (total / torch.where(some, torch.where(count == 0, torch.nan, count), 1.0)
                + torch.where(some, 0.0, torch.nan).to(total.dtype))
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


def traced() -> bool:
    """Whether values cannot be looked at: torch.compile traces, or a torch.func transform
    (``vmap``, ``grad``, ``jvp``, ``jacrev``, ...) is active, where data-dependent Python
    control flow would break the transform."""
    return torch.compiler.is_compiling() or torch._C._are_functorch_transforms_active()


def higher_order(*tensors) -> bool:
    """Whether this call must be differentiable beyond the fused first-order gradient:
    a torch.func transform is active, or an argument carries a forward-mode tangent
    (``torch.autograd.forward_ad``) [JVP]. Double backward is decided later, in the
    backward pass, by ``torch.is_grad_enabled()`` (``create_graph=True``)."""
    return traced() or any(t is not None and forward_ad.unpack_dual(t).tangent is not None
                           for t in tensors)


def refuse_forward_over_forward(loss: str) -> None:
    """Raise inside a fused loss's ``jvp`` when forward mode is nested in forward mode
    (``jacfwd(jacfwd(f))``, ``jvp`` of ``jvp``): torch differentiates a custom ``jvp``
    only once, and the second-order tangent would come back as zeros. ``hessian``
    (``jacfwd(jacrev)``), ``jacrev(jacrev)``, ``jvp`` of ``grad`` and double backward
    are supported."""
    from torch._functorch.pyfunctorch import retrieve_all_functorch_interpreters

    levels = [i for i in retrieve_all_functorch_interpreters()
              if i.key() == torch._C._functorch.TransformType.Jvp]
    if len(levels) > 1:
        raise NotImplementedError(
            f"wce_torch.{loss}: forward mode over forward mode (jacfwd(jacfwd(...)), jvp "
            f"of jvp) is not supported; use torch.func.hessian (jacfwd over jacrev), "
            f"jacrev(jacrev(...)) or jvp of grad for second derivatives")


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


def _autocast_device(tensor):
    """The device type of ``tensor`` if autocast is enabled for it, else None."""
    if not isinstance(tensor, torch.Tensor):
        return None
    try:
        return tensor.device.type if torch.is_autocast_enabled(tensor.device.type) else None
    except RuntimeError:  # a device type autocast does not know
        return None


def _cast(tensor, dtype):
    half = tensor.is_floating_point() and tensor.dtype in (torch.float16, torch.bfloat16,
                                                             torch.float32)
    return tensor.to(dtype) if half else tensor


def autocast_float32(loss):
    """torch's autocast policy for the losses on its float32 list (cross_entropy,
    nll_loss, the binary losses): inside ``torch.autocast`` a half-precision ``input`` is
    cast to float32, the loss runs with autocast off and returns float32, as
    ``torch.nn.functional`` does. Outside autocast it changes nothing."""

    @functools.wraps(loss)
    def wrapper(input, *args, **kwargs):
        device = _autocast_device(input)
        if device is None:
            return loss(input, *args, **kwargs)
        with torch.autocast(device, enabled=False):
            return loss(_cast(input, torch.float32), *args, **kwargs)

    return wrapper


def autocast_matmul(loss):
    """torch's autocast policy for a matrix product followed by a float32-list loss (what
    ``F.cross_entropy(F.linear(hidden, weight), ...)`` does inside ``torch.autocast``):
    ``hidden`` and ``weight`` are rounded to the autocast dtype, the products accumulate in
    float32 and the loss is float32."""

    @functools.wraps(loss)
    def wrapper(hidden, weight, *args, **kwargs):
        device = _autocast_device(hidden)
        if device is None:
            return loss(hidden, weight, *args, **kwargs)
        dtype = torch.get_autocast_dtype(device)
        with torch.autocast(device, enabled=False):
            return loss(_cast(_cast(hidden, dtype), torch.float32),
                        _cast(_cast(weight, dtype), torch.float32), *args, **kwargs)

    return wrapper
