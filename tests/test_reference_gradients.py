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


DERIVATIVE_CASES = [c for c in golden.load_cases() if c.tangents is not None]


def _gradient_along(case, step):
    """The reference's gradients at ``args + step * tangents``."""
    args = dict(case.args)
    for name, t in case.tangents.items():
        args[name] = np.asarray(case.args[name], np.float64) + step * t
    grads = getattr(reference, case.loss + "_grad")(**args, grad_output=case.grad_output,
                                                    checked=False)
    return grads if isinstance(grads, dict) else {"input": grads}


@pytest.mark.parametrize("case", DERIVATIVE_CASES,
                         ids=[case_id(c) for c in DERIVATIVE_CASES])
def test_hvp_and_jvp_match_finite_differences(case):
    """[HVP-*]: the reference's analytic HVP against central differences of its analytic
    gradient along the tangent; [JVP] against those of its value (where the value is
    differentiable: not at the BCE clamp, whose JVP goes through the held gradient)."""
    tangent = case.tangents if case.loss == "linear_cross_entropy" else case.tangents["input"]
    hvp = reference.hvp(case.loss, tangent, grad_output=case.grad_output, **case.args)
    hvp = hvp if isinstance(hvp, dict) else {"input": hvp}
    h = 1e-6
    plus, minus = _gradient_along(case, h), _gradient_along(case, -h)
    for name, analytic in hvp.items():
        numeric = (plus[name] - minus[name]) / (2 * h)
        finite = np.isfinite(analytic)
        held = np.zeros(analytic.shape, bool)
        if case.loss == "binary_cross_entropy":  # the guard switches inside +-h
            p = np.asarray(case.args["input"])
            held = (p * (1 - p)) < 1e-4
        scale = max(np.max(np.abs(analytic[finite & ~held]), initial=0.0), 1e-300)
        error = np.max(np.abs(numeric - analytic)[finite & ~held], initial=0.0)
        assert error <= 1e-6 * scale, f"{case.id} hvp_{name}: {error:.3g} vs {scale:.3g}"
    if case.loss == "binary_cross_entropy" and held.any():
        return
    jvp = np.asarray(reference.jvp(case.loss, tangent, **case.args))
    args_plus, args_minus = dict(case.args), dict(case.args)
    for name, t in case.tangents.items():
        args_plus[name] = np.asarray(case.args[name], np.float64) + h * t
        args_minus[name] = np.asarray(case.args[name], np.float64) - h * t
    fn = getattr(reference, case.loss)
    numeric = (np.asarray(fn(**args_plus)) - np.asarray(fn(**args_minus))) / (2 * h)
    finite = np.isfinite(jvp) & np.isfinite(numeric)
    scale = max(np.max(np.abs(jvp[finite]), initial=0.0), 1e-300)
    assert np.max(np.abs(numeric - jvp)[finite], initial=0.0) <= 1e-6 * scale + 1e-9, case.id
