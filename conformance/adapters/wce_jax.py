"""wce_jax in the default channels-last layout (class axis moved last on the way in, the
gradient moved back), under ``jax.jit`` for every case, and also eagerly for the cases
whose eager behaviour differs (errors and warnings). Eager value cases would only repeat
the jit: an eager call runs the checks in Python, then the same jitted computation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np

import wce_jax
from conformance.adapters import Adapter, Outcome, split_args

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
    if case.loss not in CLASS_AXIS_LOSSES or x.ndim < 3:
        return args, lambda g: g
    args = dict(args, input=np.moveaxis(x, 1, -1))
    t = args.get("target")
    if isinstance(t, np.ndarray) and t.shape == x.shape:  # probability target
        args["target"] = np.moveaxis(t, 1, -1)
    return args, lambda g: np.moveaxis(g, -1, 1)


class WceJaxAdapter(Adapter):
    name = "wce_jax"
    description = f"wce_jax (jax {jax.__version__}, {jax.default_backend()}), under jit"
    exact_errors = True
    traced = True

    def argument_name(self, loss, name):
        return FIRST_ARGUMENT.get(loss, name) if name == "input" else name

    def modes(self, case):
        if case.is_error or "warns" in case.expected:
            return ("checked", "traced")
        return ("traced",)

    def call(self, case, dtype, traced):
        with jax.enable_x64(True):
            args, restore = channels_last(case, split_args(case, dtype, to_host))
            fn = getattr(wce_jax, case.loss)
            static = {k: v for k, v in args.items() if not isinstance(v, np.ndarray)}
            arrays = {k: jnp.asarray(v) for k, v in args.items() if isinstance(v, np.ndarray)}
            x = arrays.pop("input", None)

            def value_and_grad(x, arrays, g):
                if x is None:  # a weight function of counts or labels
                    return fn(**arrays, **static), None
                output, vjp = jax.vjp(lambda x: fn(x, **arrays, **static), x)
                return output, None if g is None else vjp(g)[0]

            if traced:
                value_and_grad = jax.jit(value_and_grad)
            g = None if case.grad_output is None else jnp.asarray(
                to_host(case.grad_output, dtype))
            output, grad = value_and_grad(x, arrays, g)
            return Outcome(to_float64(output),
                           None if grad is None else restore(to_float64(grad)),
                           str(output.dtype), None if grad is None else str(grad.dtype))


ADAPTER = WceJaxAdapter()
