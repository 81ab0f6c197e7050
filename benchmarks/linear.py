"""Linear + weighted cross-entropy for large vocabularies (spec section 17): the fused
``linear_cross_entropy`` of wce_jax and wce_torch against the unfused computation, the
matrix product ``hidden @ weight.T`` followed by the same package's ``cross_entropy``.

A shape is ``(N, D, V)``: N tokens of hidden size D, a vocabulary of V classes. Every
case of a shape sees the same float32 ``hidden`` (N, D) (standard normal), output layer
``weight`` (V, D) (normal with variance 1/D, so the logits are of order one), class
weights (uniform in [0.5, 2)) and targets, about 10% of them ``ignore_index``. Each
step runs the loss with ``reduction="mean"`` and its gradients with respect to both
``hidden`` and ``weight``.

The unfused computation keeps the (N, V) logits and their gradient; the fused one
processes the rows in chunks of about 2**24 logits and keeps a few chunks and the
(V, D) gradient of ``weight``. Memory fractions are fractions of the (N, V) logits'
bytes; the goals compare the fused with the unfused computation of the same framework
(same loss and gradients within the run dtype's tolerance, checked before timing). On
a GPU run, Liger Kernel's and Cut Cross-Entropy's fused losses (unweighted; Triton,
CUDA only) are PyTorch context peers where installed; elsewhere their rows are skipped. A step at
the goal shape, (8192, 1024, 32768), is three 0.5 TFLOP matrix products: seconds to
minutes on a CPU, so the default shapes are smaller and the goal shape runs on request
(``--family lce --goal-shapes``, see benchmarks/README.md).
"""

from __future__ import annotations

import math

from benchmarks.builders import (IGNORE_INDEX, Impl, Inputs, class_targets, class_weights,
                                 function, normal, peer_cases, rng_for)
from benchmarks.registry import SETTINGS, Family, Unavailable, register_family

FAMILY = register_family(Family(
    name="lce",
    title="linear_cross_entropy: hidden (N, D), weight (V, D), class weights, "
          "ignore_index, mean; gradients for hidden and weight",
    shape_names="N x D x V", logits_names="N x V",
    shapes=((1024, 128, 8192), (2048, 128, 16384), (4096, 128, 32768)),
    quick_shapes=((64, 8, 256),),
    goal_shapes=((8192, 1024, 32768),),
    rounds=3, quick_rounds=3, warmup=1))


def _inputs(shape):
    n, d, v = shape
    rng = rng_for(shape)
    hidden = normal(rng, (n, d))
    weight = normal(rng, (v, d), scale=1.0 / math.sqrt(d))
    _, target = class_targets(rng, n, v)
    return {"hidden": hidden, "weight": weight, "target": target,
            "class_weight": class_weights(rng, v)}


INPUTS = Inputs(_inputs)
KEYWORDS = dict(ignore_index=IGNORE_INDEX, reduction="mean")
CALL = "(h, W, y, class_weight=w, ignore_index=-100)"


def _unfused(module):
    """``module.cross_entropy(hidden @ weight.T, ...)``: jax.numpy arrays and torch
    tensors alike."""
    cross_entropy = function(f"{module}:cross_entropy", "weight", **KEYWORDS)

    def loss(hidden, weight, target, class_weight):
        return cross_entropy(hidden @ weight.T, target, class_weight)

    loss.requires = cross_entropy.requires
    return loss


def _fused(module):
    return function(f"{module}:linear_cross_entropy", "class_weight", **KEYWORDS)


def _gpu_peer(path: str, **keywords):
    """A fused peer that runs on CUDA only (Triton kernels): ``path(hidden, weight,
    target, **keywords)``, unweighted (the class weights are dropped); Unavailable
    unless installed and the run is on a GPU."""
    call = function(path, **keywords)

    def loss(hidden, weight, target, class_weight):
        if SETTINGS.device != "gpu":
            raise Unavailable(f"{path.replace(':', '.')} runs on a CUDA device only")
        value = call(hidden, weight, target)
        return value[0] if isinstance(value, tuple) else value  # (loss, z_loss) in some

    loss.requires = call.requires
    return loss


def _three_dims(shape):
    return len(shape) == 3


def _logits_shape(shape):
    n, _, v = shape
    return (n, v)


LIGER = "liger_kernel.transformers.functional:liger_fused_linear_cross_entropy"
CCE = "cut_cross_entropy:linear_cross_entropy"
UNFUSED_TEXT = "hidden @ weight.T, then {}.cross_entropy(z, y, weight=w, ignore_index=-100)"
peer_cases(
    FAMILY.name, INPUTS, args=("hidden", "weight", "target", "class_weight"),
    wrt=("hidden", "weight"),
    jax_peers=[Impl("jax_unfused", _unfused("wce_jax"), UNFUSED_TEXT.format("wce_jax"))],
    wce_jax=Impl("wce_jax", _fused("wce_jax"), f"wce_jax.linear_cross_entropy{CALL}"),
    torch_peers=[Impl("torch_unfused", _unfused("wce_torch"),
                      UNFUSED_TEXT.format("wce_torch")),
                 Impl("liger", _gpu_peer(LIGER, ignore_index=IGNORE_INDEX, reduction="mean"),
                      "Liger Kernel's liger_fused_linear_cross_entropy(h, W, y, "
                      "ignore_index=-100): unweighted, CUDA only"),
                 Impl("cce", _gpu_peer(CCE, ignore_index=IGNORE_INDEX, reduction="mean"),
                      "Cut Cross-Entropy's linear_cross_entropy(h, W, y, ignore_index=-100): "
                      "unweighted, CUDA only")],
    wce_torch=Impl("wce_torch", _fused("wce_torch"),
                   f"wce_torch.linear_cross_entropy{CALL}"),
    goals=dict(goal_time_ratio=1.3, goal_memory_ratio=1 / 8),
    torch_memory_runs=1, applies=_three_dims, logits_shape=_logits_shape)
