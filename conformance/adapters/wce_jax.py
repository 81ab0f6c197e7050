"""wce_jax in the default channels-last layout (class axis moved last on the way in, the
gradient moved back), under ``jax.jit`` for every case, and also eagerly for the cases
whose eager behaviour differs (errors and warnings). Eager value cases would only repeat
the jit: an eager call runs the checks in Python, then the same jitted computation.
A case with tangents (spec section 18) gets its JVP (``jax.jvp``) and HVP (``jax.jvp`` of
the VJP) from the same jitted program as the value and the gradient."""

from __future__ import annotations

import functools

import jax

import wce_jax
from conformance.adapters import Adapter
from conformance.adapters.runners import jax_compilation_cache, jax_modes, release_jax, run_jax

# wce_jax names the first argument after what it holds.
FIRST_ARGUMENT = {"cross_entropy": "logits", "nll_loss": "log_probs",
                  "binary_cross_entropy": "probs",
                  "binary_cross_entropy_with_logits": "logits",
                  "sigmoid_focal_loss": "logits", "softmax_focal_loss": "logits"}


@functools.lru_cache(maxsize=None)
def on_shards(fn):
    """The loss of stacked shards, each computed by its own call with a collective over
    the named shard axis [DP-AXIS]; every shard returns the global loss, kept once."""
    def loss(x, target, **shared):
        def one_shard(x, target):
            return fn(x, target, **shared, axis_name="shards")
        return jax.vmap(one_shard, axis_name="shards")(x, target)[0]
    return loss


class WceJaxAdapter(Adapter):
    name = "wce_jax"
    description = f"wce_jax (jax {jax.__version__}, {jax.default_backend()}), under jit"
    exact_errors = True
    traced = True
    supports_shards = True  # [DP-AXIS]: a vmap over the shards with a named axis
    derivatives = True  # jax.jvp, and jax.jvp of the VJP, in the same jitted program

    def __init__(self):
        jax_compilation_cache()

    def argument_name(self, loss, name):
        return FIRST_ARGUMENT.get(loss, name) if name == "input" else name

    def modes(self, case):
        return jax_modes(case)

    def release(self):
        release_jax()

    def call(self, case, dtype, traced):
        fn = getattr(wce_jax, case.loss)
        return run_jax(on_shards(fn) if case.shards else fn, case, dtype, traced,
                       derivatives=True)


ADAPTER = WceJaxAdapter()
