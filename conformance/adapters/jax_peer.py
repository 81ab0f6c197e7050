"""What the JAX-based peer adapters (optax, Keras) share: a case's call under
``jax.jit``, with the gradient with respect to ``input`` from ``jax.vjp``, and for a
case with a tangent (spec section 18, when the adapter asks for it) the JVP from
``jax.jvp`` and the HVP from ``jax.jvp`` of the VJP, in the same program.

float64 runs enable JAX's x64 mode for the call; the other dtypes run in JAX's default
32-bit mode, as most JAX code does.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import jax
import numpy as np

from conformance.adapters import Outcome, derivative_arguments, split_args, to_host
from conformance.adapters.runners import enable_x64
from conformance.golden import Case


def jitted_value_and_grad(losses: Mapping[str, Callable]) -> Callable:
    """``run(loss, static, x, arrays, g, t=None)``, jitted with ``loss`` and ``static``
    (sorted ``(name, value)`` pairs) static: ``losses[loss](x, **arrays, **static)``, its
    vector-Jacobian product with ``g``, and with a tangent ``t`` the JVP along ``t`` and
    the HVP (the JVP along ``t`` of the VJP), or None for each."""

    def run(loss, static, x, arrays, g, t=None):
        def f(x):
            return losses[loss](x, **arrays, **dict(static))

        def grad(x):
            output, vjp = jax.vjp(f, x)
            # An output of the wrong shape (Keras returns an empty array for the mean of
            # an empty batch) has no gradient to take; the runner reports the shape.
            if g is None or g.shape != output.shape:
                return None
            # The cotangent takes the output's dtype, which the peer may have widened (a
            # float32 weight with bfloat16 logits); the runner reports that dtype.
            return vjp(g.astype(output.dtype))[0]

        if t is None:
            return f(x), grad(x), None, None
        output, jvp = jax.jvp(f, (x,), (t,))
        if grad(x) is None:
            return output, None, jvp, None
        gradient, hvp = jax.jvp(grad, (x,), (t,))
        return output, gradient, jvp, hvp

    return jax.jit(run, static_argnums=(0, 1))


def call(run: Callable, case: Case, dtype: str, /, derivatives: bool = False,
         **static) -> Outcome:
    """Run ``case`` in ``dtype`` through ``run`` (from :func:`jitted_value_and_grad`);
    ``static`` adds hashable keyword arguments to the case's own. With ``derivatives``, a
    case with a tangent for ``input`` also gets its JVP and HVP; if that program raises,
    the value and the gradient run alone and the exception fails [JVP] and [HVP-*]."""
    with enable_x64(dtype == "float64"):
        args = split_args(case, dtype, to_host)
        arrays = {k: v for k, v in args.items() if isinstance(v, np.ndarray)}
        static.update((k, v) for k, v in args.items() if not isinstance(v, np.ndarray))
        x = arrays.pop("input")
        g = None if case.grad_output is None else to_host(case.grad_output, dtype)
        static = tuple(sorted(static.items()))
        errors = {}
        jvp = hvp = None
        if derivatives and derivative_arguments(case) == ["input"]:
            t = to_host(case.tangents["input"], dtype)
            try:
                output, grad, jvp, hvp = run(case.loss, static, x, arrays, g, t)
            except Exception as exc:  # noqa: BLE001 - a failure of [JVP] and [HVP-*]
                errors = {"jvp": exc, "hvp": exc}
                output, grad, _, _ = run(case.loss, static, x, arrays, g)
        else:
            output, grad, _, _ = run(case.loss, static, x, arrays, g)
        outcome = Outcome(_float64(output), _float64(grad), str(output.dtype),
                          None if grad is None else str(grad.dtype), derivative_errors=errors)
        if jvp is not None:
            outcome.jvp = (_float64(jvp), str(jvp.dtype))
        if hvp is not None:
            outcome.hvps["input"] = (_float64(hvp), str(hvp.dtype))
        return outcome


def _float64(a):
    return None if a is None else np.asarray(a).astype(np.float64)


def release() -> None:
    """Drop every compiled program (see :meth:`conformance.adapters.Adapter.release`)."""
    jax.clear_caches()
