"""wce_jax in the default channels-last layout (class axis moved last on the way in, the
gradient moved back), under ``jax.jit`` for every case, and also eagerly for the cases
whose eager behaviour differs (errors and warnings). Eager value cases would only repeat
the jit: an eager call runs the checks in Python, then the same jitted computation.
A case with tangents (spec section 18) gets its JVP (``jax.jvp``) and HVP (``jax.jvp`` of
the VJP) from the same jitted program as the value and the gradient. The traced programs
are kept on disk under a digest of this code (``runners.stored_program``): a second run
neither traces nor compiles them."""

from __future__ import annotations

import functools
import sys

import jax
import jax.numpy as jnp
import numpy as np

import wce_jax
from conformance.adapters import Adapter, runners
from conformance.adapters.runners import (jax_compilation_cache, jax_modes, release_jax,
                                          run_jax, source_digest)

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


#: [CP-GLOBAL]: the arguments whose class axis is split, and that axis (after the move
#: to channels-last).
CLASS_SHARDED = {"cross_entropy": {"input": -1, "weight": 0},
                 "linear_cross_entropy": {"weight": 0, "class_weight": 0}}


@functools.lru_cache(maxsize=None)
def on_class_shards(fn, loss, shards):
    """The loss with the class axis split into ``shards``, each shard's call under a
    ``vmap`` with the named axis "classes" [CP-AXIS], as devices would run it: every shard
    returns the global loss, kept once, and differentiates its own call, so that a
    replicated argument (``hidden``) gets the gradient any one shard holds and the
    sharded ones are put back together in order."""
    axes = CLASS_SHARDED[loss]

    def split(a, axis):  # (..., C at axis, ...) -> (shards, ..., C / shards, ...)
        moved = jnp.moveaxis(a, axis, 0)
        moved = moved.reshape((shards, moved.shape[0] // shards) + moved.shape[1:])
        return jnp.moveaxis(moved, 1, axis % a.ndim + 1)

    def loss_fn(*positional, **named):
        named.update(zip(("input",), positional))
        arrays = {k: v for k, v in named.items() if isinstance(v, (jax.Array, np.ndarray))}
        static = {k: v for k, v in named.items() if k not in arrays}
        sharded = {k: split(jnp.asarray(v), axes[k]) for k, v in arrays.items() if k in axes}
        floats = {k: v for k, v in arrays.items()
                  if k not in axes and jnp.issubdtype(v.dtype, jnp.floating)}
        others = {k: v for k, v in arrays.items() if k not in axes and k not in floats}

        def call(sharded, floats):
            args = {**static, **others, **floats, **sharded}
            x = args.pop("input", None)
            args["class_axis_name"] = "classes"
            return fn(**args) if x is None else fn(x, **args)

        every = functools.partial(jax.vmap, in_axes=(0, None), axis_name="classes")

        @jax.custom_vjp
        def run(sharded, floats):
            return every(call)(sharded, floats)[0]

        def run_fwd(sharded, floats):
            return run(sharded, floats), (sharded, floats)

        def run_bwd(residuals, ct):
            def one_shard(sharded, floats):
                return jax.vjp(call, sharded, floats)[1](ct)
            d_sharded, d_floats = every(one_shard)(*residuals)
            return d_sharded, jax.tree_util.tree_map(lambda g: g[0], d_floats)

        run.defvjp(run_fwd, run_bwd)
        return run(sharded, floats)

    return loss_fn


class WceJaxAdapter(Adapter):
    name = "wce_jax"
    description = f"wce_jax (jax {jax.__version__}, {jax.default_backend()}), under jit"
    exact_errors = True
    traced = True
    supports_shards = True  # [DP-AXIS]: a vmap over the shards with a named axis
    supports_class_shards = True  # [CP-AXIS]: a vmap over the class shards
    derivatives = True  # jax.jvp, and jax.jvp of the VJP, in the same jitted program

    def __init__(self):
        jax_compilation_cache()  # for the eager calls; the traced ones are stored programs

    def argument_name(self, loss, name):
        return FIRST_ARGUMENT.get(loss, name) if name == "input" else name

    def modes(self, case):
        return jax_modes(case)

    def release(self):
        release_jax()

    def call(self, case, dtype, traced):
        fn = getattr(wce_jax, case.loss)
        if case.class_shards:
            fn = on_class_shards(fn, case.loss, case.class_shards)
        # The compiled program is that of this code, this loss and its sharding, and the
        # gradient strategy in effect (wce_jax.gradient_strategy), read when tracing.
        fingerprint = repr((SOURCE, case.loss, case.shards, case.class_shards,
                            wce_jax._losses._STRATEGY.get()))
        return run_jax(on_shards(fn) if case.shards else fn, case, dtype, traced,
                       derivatives=True, fingerprint=fingerprint)


#: The code a compiled program of this adapter comes from (see ``run_jax``).
SOURCE = source_digest(wce_jax, sys.modules[__name__], runners)


ADAPTER = WceJaxAdapter()
