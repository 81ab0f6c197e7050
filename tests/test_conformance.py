"""Every golden case against every implementation of the default run, in every dtype.

A run passes, or fails only on a clause that the spec marks as a deliberate departure for
that implementation (reported as a documented deviation). Cases of functions an
implementation does not have (torch has no focal loss) are not collected; everything
collected must run. Test ids start with the clauses the case covers.
"""

from __future__ import annotations

import pytest

from conformance import adapters, golden, runner
from tests.conftest import case_id

CASES = golden.load_cases()
ADAPTERS = {name: adapters.load(name) for name in adapters.OWN}
PARAMS = [(name, case, dtype) for name, adapter in ADAPTERS.items() for case in CASES
          if case.loss in adapter.losses and adapter.unsupported(case) is None
          for dtype in case.dtypes if dtype in adapter.dtypes]


@pytest.mark.parametrize(
    "name,case,dtype", PARAMS, ids=[case_id(c, n, d) for n, c, d in PARAMS]
)
def test_golden_case(name, case, dtype):
    record = runner.run_case(ADAPTERS[name], case, dtype)
    assert record.status in (runner.PASS, runner.DEVIATES), record.detail
