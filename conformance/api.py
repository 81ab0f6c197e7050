"""The Python API for your own test suite: :func:`assert_conforms`."""

from __future__ import annotations

from pathlib import Path

from conformance import clauses, runner
from conformance.golden import Case

SHOWN = 25  # failing runs listed in full in the message


def assert_conforms(fn, loss: str = "cross_entropy", framework: str = "torch",
                    layout: str = "channels_first", dtypes=None, cases=None
                    ) -> list[runner.Record]:
    """Run the golden cases of ``loss`` against ``fn`` and raise AssertionError listing
    every failing case (id, dtype, the clause it breaks, the error) unless all pass.

    ``fn`` is called as :mod:`conformance.check` describes (the input positionally, the
    spec's argument names for the rest); ``framework`` is "torch", "jax" or "numpy";
    ``layout`` "channels_first" (class axis 1) or "channels_last"; ``dtypes`` a subset
    of the spec's (default: all the framework has); ``cases`` a golden file or folder
    (e.g. from :func:`conformance.make_case`), a list of cases, or None for the
    project's. Documented departures of a known peer are deviations, not failures.
    Returns the records when nothing failed."""
    __tracebackhide__ = True  # pytest shows the message, not this function
    from conformance import check, workers

    adapter = check.UserAdapter(fn, loss, framework, layout)
    if cases is None or isinstance(cases, (str, Path)):
        cases = workers.load(None if cases is None else str(cases))
    selected = [c for c in cases if isinstance(c, Case) and c.loss == loss]
    if not selected:
        raise ValueError(f"no golden case of {loss!r} in the cases given")
    unknown = sorted(set(dtypes or ()) - set(clauses.DTYPES))
    if unknown:
        raise ValueError(f"dtypes must be among {clauses.DTYPES}, got {unknown}")
    run_dtypes = [d for d in (dtypes or clauses.DTYPES) if d in adapter.dtypes]
    records = runner.run([adapter], selected, run_dtypes)
    failing = [r for r in records if r.status == runner.FAIL]
    if failing:
        lines = [f"{adapter.name} does not conform to the spec's {loss}: "
                 f"{len(failing)} of {len(records)} runs failed"]
        for r in failing[:SHOWN]:
            lines.append(f"  {r.case} [{r.dtype}] {', '.join(r.charged)}: {r.detail}")
        if len(failing) > SHOWN:
            lines.append(f"  ... and {len(failing) - SHOWN} more")
        raise AssertionError("\n".join(lines))
    return records
