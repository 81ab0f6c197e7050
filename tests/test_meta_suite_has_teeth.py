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
