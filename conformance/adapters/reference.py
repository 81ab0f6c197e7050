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
        loss = getattr(reference, case.loss)
        grad = getattr(reference, case.loss + "_grad")
        output = np.asarray(loss(**args, checked=not traced), dtype=np.float64)
        grad_input = grad(**args, grad_output=case.grad_output, checked=not traced)
        return Outcome(output, np.asarray(grad_input, np.float64), "float64", "float64")


ADAPTER = ReferenceAdapter()
