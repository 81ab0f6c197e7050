"""The float64 NumPy reference itself: reproduces the goldens exactly, a check of the I/O."""

from __future__ import annotations

import numpy as np

from conformance import reference
from conformance.adapters import Adapter, Outcome, derivative_arguments, split_args


class ReferenceAdapter(Adapter):
    name = "reference"
    description = "conformance/reference.py, float64 NumPy"
    dtypes = ("float64",)
    exact_errors = True
    traced = True  # checked=False computes what spec section 11 asks of traced calls
    supports_shards = True
    derivatives = True  # reference.jvp and reference.hvp (spec section 18)

    def call(self, case, dtype, traced):
        args = split_args(case, dtype, lambda a, dt: a.astype(dt))
        stacked = np.shape(args.get("input"))
        if case.shards:  # [DP-GLOBAL]: the single-worker loss of the concatenated batch
            args.update({k: reference.merge_shards(args[k]) for k in ("input", "target")})
        output = getattr(reference, case.loss)(**args, checked=not traced)
        outcome = Outcome(np.asarray(output, np.float64), None, "float64", None)
        if case.grad_output is not None:
            grad = getattr(reference, case.loss + "_grad")(
                **args, grad_output=case.grad_output, checked=not traced)
            if isinstance(grad, dict):  # one gradient per argument
                outcome.grads = {k: (np.asarray(v, np.float64), "float64")
                                 for k, v in grad.items()}
            else:
                outcome.grad_input = np.asarray(grad, np.float64).reshape(stacked)
                outcome.grad_dtype = "float64"
        names = derivative_arguments(case)
        if names:
            tangent = (case.tangents["input"] if names == ["input"]
                       else {n: case.tangents[n] for n in names})
            outcome.jvp = (np.asarray(reference.jvp(case.loss, tangent, **args), np.float64),
                           "float64")
            hvp = reference.hvp(case.loss, tangent, grad_output=case.grad_output, **args)
            hvp = hvp if isinstance(hvp, dict) else {"input": hvp}
            outcome.hvps = {k: (np.asarray(v, np.float64), "float64") for k, v in hvp.items()}
        return outcome


ADAPTER = ReferenceAdapter()
