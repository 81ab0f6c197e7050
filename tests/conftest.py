"""Shared fixtures: the golden cases, loaded once."""

from __future__ import annotations

import pytest

from conformance import golden


@pytest.fixture(scope="session")
def cases():
    return golden.load_cases()


def case_id(case, *extra) -> str:
    """A test id that starts with the clauses the case covers, so a failure points at the spec."""
    return "+".join(case.clauses) + "::" + "::".join((case.id,) + extra)


def pytest_collection_modifyitems(config, items):
    """Tests marked ``slow`` run only when asked for (``-m slow``)."""
    if "slow" in (config.getoption("markexpr") or ""):
        return
    skip = pytest.mark.skip(reason="slow: run with -m slow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)
