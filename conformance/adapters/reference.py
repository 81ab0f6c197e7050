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

    def call(self, case, dtype, traced):
        args = split_args(case, dtype, lambda a, dt: a.astype(dt))
        output = getattr(reference, case.loss)(**args, checked=not traced)
        grad = None
        if case.grad_output is not None:
            grad = getattr(reference, case.loss + "_grad")(
                **args, grad_output=case.grad_output, checked=not traced)
            grad = np.asarray(grad, np.float64)
        return Outcome(np.asarray(output, np.float64), grad, "float64",
                       None if grad is None else "float64")


ADAPTER = ReferenceAdapter()
