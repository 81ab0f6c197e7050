"""wce_jax in the default channels-last layout (class axis moved last on the way in, the
gradient moved back), under ``jax.jit`` for every case, and also eagerly for the cases
whose eager behaviour differs (errors and warnings). Eager value cases would only repeat
the jit: an eager call runs the checks in Python, then the same jitted computation."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import wce_jax
from conformance.adapters import Adapter, Outcome, grad_arguments, split_args

# wce_jax names the first argument after what it holds.
FIRST_ARGUMENT = {"cross_entropy": "logits", "nll_loss": "log_probs",
                  "binary_cross_entropy": "probs",
                  "binary_cross_entropy_with_logits": "logits",
                  "sigmoid_focal_loss": "logits", "softmax_focal_loss": "logits"}
CLASS_AXIS_LOSSES = ("cross_entropy", "nll_loss", "softmax_focal_loss")


def to_host(a: np.ndarray, dtype: str) -> np.ndarray:
    """A NumPy array of ``dtype`` (bfloat16 through ml_dtypes): no JAX op, nothing to compile."""
    return np.asarray(a).astype(ml_dtypes.bfloat16 if dtype == "bfloat16" else dtype)


def to_float64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def channels_last(case, args):
    """torch layout (class axis 1) -> JAX layout (class axis last), and the way back."""
    x = args.get("input")
    axis = 2 if case.shards else 1  # shards are stacked on a leading axis
    if case.loss not in CLASS_AXIS_LOSSES or x.ndim < axis + 2:
        return args, lambda g: g
    args = dict(args, input=np.moveaxis(x, axis, -1))
    t = args.get("target")
    if isinstance(t, np.ndarray) and t.shape == x.shape:  # probability target
        args["target"] = np.moveaxis(t, axis, -1)
    return args, lambda g: np.moveaxis(g, -1, axis)


@functools.lru_cache(maxsize=None)
def on_shards(fn):
    """The loss of stacked shards, each computed by its own call with a collective over
    the named shard axis [DP-AXIS]; every shard returns the global loss, kept once."""
    def loss(x, target, **shared):
        def one_shard(x, target):
            return fn(x, target, **shared, axis_name="shards")
        return jax.vmap(one_shard, axis_name="shards")(x, target)[0]
    return loss


def run_jax(fn, case, dtype, traced, layout="channels_last"):
    """Call ``fn`` (JAX, spec argument names, the first one positional) on the case, with
    the VJP for every argument the case has gradients for; under ``jax.jit`` if traced.
    ``layout="channels_last"`` moves the class axis last on the way in and back out."""
    with jax.enable_x64(True):
        args = split_args(case, dtype, to_host)
        restore = lambda g: g  # noqa: E731
        if layout == "channels_last":
            args, restore = channels_last(case, args)
        static = tuple(sorted((k, v) for k, v in args.items()
                              if not isinstance(v, np.ndarray)))
        arrays = {k: jnp.asarray(v) for k, v in args.items() if isinstance(v, np.ndarray)}
        names = tuple(grad_arguments(case)) if case.grad_output is not None else ()
        diff = {name: arrays.pop(name) for name in names}
        g = None if case.grad_output is None else jnp.asarray(to_host(case.grad_output, dtype))
        step = _jitted_step(fn, static) if traced else _step(fn, static)
        output, grads = step(diff, arrays, g)
        outcome = Outcome(to_float64(output), None, str(output.dtype), None)
        for name, grad in grads.items():
            if name == "input":
                outcome.grad_input = restore(to_float64(grad))
                outcome.grad_dtype = str(grad.dtype)
            else:
                outcome.grads[name] = (to_float64(grad), str(grad.dtype))
        return outcome


def _step(fn, static):
    """The output and the VJP with respect to ``diff`` (a dict of arrays) for ``g``."""
    static = dict(static)

    def call(diff, rest):
        kwargs = dict(rest, **diff)
        x = kwargs.pop("input", None)  # positional: implementations name it per loss
        return fn(**kwargs, **static) if x is None else fn(x, **kwargs, **static)

    def step(diff, rest, g):
        if g is None:
            return call(diff, rest), {}
        output, vjp = jax.vjp(lambda d: call(d, rest), diff)
        return output, vjp(g)[0]

    return step


@functools.lru_cache(maxsize=512)
def _jitted_step(fn, static):
    """One jitted step per function and static arguments, so that cases (and fuzz
    examples) with the same shapes reuse the compiled program."""
    return jax.jit(_step(fn, static))


class WceJaxAdapter(Adapter):
    name = "wce_jax"
    description = f"wce_jax (jax {jax.__version__}, {jax.default_backend()}), under jit"
    exact_errors = True
    traced = True
    supports_shards = True  # [DP-AXIS]: a vmap over the shards with a named axis

    def argument_name(self, loss, name):
        return FIRST_ARGUMENT.get(loss, name) if name == "input" else name

    def modes(self, case):
        if case.is_error or "warns" in case.expected:
            return ("checked", "traced")
        return ("traced",)

    def release(self):
        _jitted_step.cache_clear()
        jax.clear_caches()

    def call(self, case, dtype, traced):
        fn = getattr(wce_jax, case.loss)
        return run_jax(on_shards(fn) if case.shards else fn, case, dtype, traced)


ADAPTER = WceJaxAdapter()
