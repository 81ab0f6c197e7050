"""What the JAX-based peer adapters (optax, Keras) share: a case's call under
``jax.jit``, with the gradient with respect to ``input`` from ``jax.vjp``.

float64 runs enable JAX's x64 mode for the call; the other dtypes run in JAX's default
32-bit mode, as most JAX code does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np

from conformance.adapters import Outcome, split_args, to_host
from conformance.adapters.runners import enable_x64
from conformance.golden import Case


def jitted_value_and_grad(losses: Mapping[str, Callable]) -> Callable:
    """``run(loss, static, x, arrays, g)``, jitted with ``loss`` and ``static`` (sorted
    ``(name, value)`` pairs) static: ``losses[loss](x, **arrays, **static)`` and its
    vector-Jacobian product with ``g``."""

    def run(loss, static, x, arrays, g):
        output, vjp = jax.vjp(lambda x: losses[loss](x, **arrays, **dict(static)), x)
        # An output of the wrong shape (Keras returns an empty array for the mean of an
        # empty batch) has no gradient to take; the runner reports the shape.
        if g is None or g.shape != output.shape:
            return output, None
        # The cotangent takes the output's dtype, which the peer may have widened (a
        # float32 weight with bfloat16 logits); the runner reports that dtype.
        return output, vjp(g.astype(output.dtype))[0]

    return jax.jit(run, static_argnums=(0, 1))


def call(run: Callable, case: Case, dtype: str, /, **static) -> Outcome:
    """Run ``case`` in ``dtype`` through ``run`` (from :func:`jitted_value_and_grad`);
    ``static`` adds hashable keyword arguments to the case's own."""
    with enable_x64(dtype == "float64"):
        args = split_args(case, dtype, to_host)
        arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
        static.update((k, v) for k, v in args.items() if not isinstance(v, np.ndarray))
        x = arrays.pop("input")
        g = None if case.grad_output is None else to_host(case.grad_output, dtype)
        output, grad = run(case.loss, tuple(sorted(static.items())), x, arrays, g)
        return Outcome(np.asarray(output).astype(np.float64),
                       None if grad is None else np.asarray(grad).astype(np.float64),
                       str(output.dtype), None if grad is None else str(grad.dtype))


def release() -> None:
    """Drop every compiled program (see :meth:`conformance.adapters.Adapter.release`)."""
    jax.clear_caches()
