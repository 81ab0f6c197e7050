"""The float64 NumPy reference itself: reproduces the goldens exactly, a check of the I/O."""

from __future__ import annotations

import numpy as np

from conformance import reference
from conformance.adapters import Adapter, Outcome, split_args


class ReferenceAdapter(Adapter):
    name = "reference"
    description = "conformance/reference.py, float64 NumPy"
    dtypes = ("float64",)
    exact_errors = True
    traced = True  # checked=False computes what spec section 11 asks of traced calls
    supports_shards = True

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
        return outcome


ADAPTER = ReferenceAdapter()
