"""The golden suite catches every deliberately wrong implementation in tests/mutants.py,
by a wrong value or a missing error (not merely by the mutant crashing)."""

from __future__ import annotations

import pytest

from conformance import golden, runner
from tests.mutants import MUTANTS, MutantAdapter


@pytest.mark.parametrize("name", sorted(MUTANTS))
def test_mutant_is_caught(name):
    adapter = MutantAdapter(name)
    records = [runner.run_case(adapter, case, "float64") for case in golden.load_cases()]
    crash = {runner.Failure.RAISED, runner.Failure.WRONG_ERROR}
    caught = [r for r in records if r.status == runner.FAIL
              and runner.Failure.RAISED not in r.kinds and set(r.kinds) - crash]
    assert caught, f"no golden case catches the mutant {name!r}: {adapter.description}"


def test_mutants_are_otherwise_right():
    """Each mutant passes some cases of its loss, so what catches it is its one mistake."""
    for name in MUTANTS:
        adapter = MutantAdapter(name)
        records = [runner.run_case(adapter, case, "float64") for case in golden.load_cases()]
        assert sum(r.status == runner.PASS for r in records) >= 10, name


def test_a_wrong_second_derivative_is_caught_by_the_hvp_clauses_alone():
    """A loss whose value, gradient and JVP are right but whose gradient is detached from
    the input (its Hessian is 0) fails only [HVP-*] (spec section 18), by a wrong value,
    and passes every case once the derivative checks are off: the HVP is what catches it."""
    adapter = MutantAdapter("detached-second-derivative")
    cases = golden.load_cases()
    records = [runner.run_case(adapter, case, "float64") for case in cases]
    failing = [r for r in records if r.status == runner.FAIL]
    assert failing
    for r in failing:
        assert r.case.startswith("hvp-") and r.kinds == [runner.Failure.VALUE], r.detail
        assert r.charged and all(c.startswith("HVP-") for c in r.charged), (r.case, r.charged)
        assert "detached" in r.detail
    summary = runner.clause_summary(records)
    assert summary["JVP"][adapter.name][runner.PASS] > 0
    assert not summary["JVP"][adapter.name][runner.FAIL]
    assert summary["HVP-CE"][adapter.name][runner.FAIL] > 0

    adapter.derivatives = False
    blind = [runner.run_case(adapter, case, "float64") for case in cases]
    assert not [r.case for r in blind if r.status == runner.FAIL]
    assert all("JVP" in r.unchecked for r in blind if r.case.startswith("hvp-")
               and r.status != runner.NA)
