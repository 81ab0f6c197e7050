"""[GRAD-*] [FOCAL-GRAD] [LCE-GRAD]: the reference's analytic gradients agree with central
finite differences.

For every golden value case with a finite output and gradient, up to 12 entries of each
differentiated argument (chosen by a seeded RNG) are perturbed by +-h and the directional
derivative of ``sum(output * grad_output)`` is compared with the analytic gradient.
Entries where the loss is not differentiable are skipped: the BCE clamp and guard region
([BCE-CLAMP], [GRAD-BCE]) and non-finite inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

from conformance import golden, reference
from conformance.cases import rng_for
from tests.conftest import case_id

ENTRIES = 12


def _gradients(case):
    return {k[len("grad_"):]: v for k, v in case.expected.items() if k.startswith("grad_")}


CASES = [c for c in golden.load_cases() if not c.is_error and not c.shards and _gradients(c)
         and np.isfinite(c.expected["output"]).all()
         and all(np.isfinite(g).all() for g in _gradients(c).values())]


def _objective(case, name, value):
    args = dict(case.args, **{name: value})
    out = getattr(reference, case.loss)(**args, checked=False)
    return float(np.sum(np.asarray(out) * case.grad_output))


def _differentiable(case, x, index) -> bool:
    v = x[index]
    if not np.isfinite(v):
        return False
    if case.loss == "binary_cross_entropy":
        return 1e-4 < v < 1 - 1e-4
    return True


@pytest.mark.parametrize("case", CASES, ids=[case_id(c) for c in CASES])
def test_gradient_matches_finite_differences(case):
    for name, analytic in _gradients(case).items():
        x = np.asarray(case.args[name], dtype=np.float64)
        if x.size == 0:
            assert analytic.shape == x.shape
            continue
        rng = rng_for(case.id + "/finite-differences/" + name)
        indices = [np.unravel_index(i, x.shape) for i in rng.permutation(x.size)]
        indices = [i for i in indices if _differentiable(case, x, i)][:ENTRIES]
        scale = max(np.max(np.abs(analytic)), 1e-300)
        for index in indices:
            h = 1e-6 * max(1.0, abs(x[index]))
            plus, minus = x.copy(), x.copy()
            plus[index] += h
            minus[index] -= h
            numeric = (_objective(case, name, plus) - _objective(case, name, minus)) / (2 * h)
            assert abs(numeric - analytic[index]) <= 1e-6 * scale + 1e-8 * abs(
                analytic[index]), (f"{case.id} d/d{name} at {index}: finite differences "
                                   f"{numeric!r}, analytic {analytic[index]!r}")
