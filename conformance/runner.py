"""Run golden cases against implementations and report, case by case and clause by clause."""

from __future__ import annotations

import dataclasses
import enum
import json
import math
import sys
import traceback
import warnings
from collections import Counter, defaultdict
from typing import Callable, Iterable, TextIO

from conformance import clauses
from conformance.adapters import Adapter, derivative_arguments
from conformance.compare import Comparison, compare
from conformance.golden import Case

PASS, FAIL, DEVIATES, NA = "pass", "FAIL", "deviates", "n/a"


class Failure(str, enum.Enum):
    """What kind of problem a failing (or deviating) run showed."""

    VALUE = "value"            # a number outside the spec's tolerance
    NON_FINITE = "non-finite"  # NaN or inf where the spec has another value (or vice versa)
    SHAPE = "shape"            # a result of the wrong shape
    ZERO = "zero"              # nonzero where the spec requires an exact 0 [CE-IGNORE]
    DTYPE = "dtype"            # a result of the wrong dtype
    NO_GRADIENT = "no gradient"
    RAISED = "raised"          # an exception where the spec has a value
    NO_ERROR = "no error"      # a value where the spec requires an error
    WRONG_ERROR = "wrong error"  # another exception type, or one not naming the argument
    NO_WARNING = "no warning"
    EXTRA_WARNING = "unexpected warning"


_COMPARISON_KIND = {"shape": Failure.SHAPE, "non-finite": Failure.NON_FINITE,
                    "zero": Failure.ZERO, "value": Failure.VALUE}


@dataclasses.dataclass
class Record:
    case: str
    impl: str
    dtype: str
    status: str
    clauses: list[str]
    loss_abs: float | None = None
    loss_rel: float | None = None
    grad_abs: float | None = None
    grad_rel: float | None = None
    detail: str = ""
    #: the largest errors of the JVP and of the HVPs (spec section 18)
    jvp_abs: float | None = None
    jvp_rel: float | None = None
    hvp_abs: float | None = None
    hvp_rel: float | None = None
    unchecked: list[str] = dataclasses.field(default_factory=list)  # clauses left n/a
    deviating: list[str] = dataclasses.field(default_factory=list)  # documented departures
    kinds: list[Failure] = dataclasses.field(default_factory=list)  # what went wrong
    #: the clauses a failure is charged to: those that explain it (see ``_charged``)
    charged: list[str] = dataclasses.field(default_factory=list)

    def to_json(self) -> dict:
        obj = dataclasses.asdict(self)
        obj["kinds"] = [k.value for k in self.kinds]
        for key in ("loss_abs", "loss_rel", "grad_abs", "grad_rel", "jvp_abs", "jvp_rel",
                    "hvp_abs", "hvp_rel"):
            if obj[key] is not None and not math.isfinite(obj[key]):
                obj[key] = str(obj[key])
        return obj


class _Check:
    """Collects the problems and the largest errors of one case across modes."""

    def __init__(self):
        self.problems: list[str] = []
        self.kinds: list[Failure] = []
        # "loss", "grad", "jvp", "hvp", "error", "warning", "traced", "dtype", "raised"
        self.where: set[str] = set()
        self.errors = {"loss": (None, None), "grad": (None, None), "jvp": (None, None),
                       "hvp": (None, None)}

    def fail(self, kind: Failure, where: str, mode: str, text: str):
        self.problems.append(text)
        if kind not in self.kinds:
            self.kinds.append(kind)
        self.where.add(where)
        if mode == "traced":
            self.where.add("traced")

    def note(self, what: str, mode: str, comparison: Comparison, label: str | None = None):
        abs_err, rel_err = self.errors[what]
        self.errors[what] = (_max(abs_err, comparison.abs_err), _max(rel_err, comparison.rel_err))
        if not comparison.ok:
            self.fail(_COMPARISON_KIND.get(comparison.kind, Failure.VALUE), what, mode,
                      f"{mode} {label or what}: {comparison.reason}")


def _max(a, b):
    return b if a is None else max(a, b)


def _describe(exc: BaseException) -> str:
    frame = traceback.extract_tb(exc.__traceback__)[-1] if exc.__traceback__ else None
    where = f" ({frame.filename.rsplit('/', 1)[-1]}:{frame.lineno})" if frame else ""
    message = " ".join(str(exc).split())
    if len(message) > 160:
        message = message[:157] + "..."
    return f"raised {type(exc).__name__}: {message}{where}"


def _call(adapter: Adapter, case: Case, dtype: str, traced: bool):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        outcome = adapter.call(case, dtype, traced)
    return outcome, [type(w.message).__name__ for w in caught]


def _check_values(check: _Check, adapter, case, dtype, mode, outcome, want, zeros=True):
    if case.expected.get("result_dtype") == "default":
        ok_dtype = outcome.output_dtype in ("float32", "float64")
        dtype = outcome.output_dtype if ok_dtype else dtype  # judged in its own dtype
    else:
        ok_dtype = outcome.output_dtype == dtype
    check.note("loss", mode, compare(outcome.output, want["output"], dtype,
                                     want.get("zero_output") if zeros else None))
    if not ok_dtype:
        check.fail(Failure.DTYPE, "dtype", mode,
                   f"{mode} loss: dtype {outcome.output_dtype}, expected {dtype}")
    if not adapter.gradients:
        return
    for key in (k for k in want if k.startswith("grad_")):
        name = key[len("grad_"):]
        got, got_dtype = ((outcome.grad_input, outcome.grad_dtype) if name == "input"
                          else outcome.grads.get(name, (None, None)))
        if got is None:
            check.fail(Failure.NO_GRADIENT, "grad", mode,
                       f"{mode}: no gradient with respect to {name}")
            continue
        zero_mask = want.get("zero_grad") if zeros and name == "input" else None
        check.note("grad", mode, compare(got, want[key], dtype, zero_mask))
        if got_dtype != dtype:
            check.fail(Failure.DTYPE, "dtype", mode,
                       f"{mode} grad {name}: dtype {got_dtype}, expected {dtype}")
    if adapter.derivatives and derivative_arguments(case):
        _check_derivatives(check, case, dtype, mode, outcome, want)


def _check_derivatives(check: _Check, case, dtype, mode, outcome, want):
    """Spec section 18: the JVP of the output and the HVP of every argument with a tangent,
    each a failure of its own clause ("jvp" for [JVP], "hvp" for the case's [HVP-*]): a
    transform that raised, a missing result, a wrong value or dtype. A gradient detached
    from the input stands for an HVP of 0, and says so where that is wrong."""
    results = {"jvp": {"output": outcome.jvp},
               "hvp": {n: outcome.hvps.get(n) for n in derivative_arguments(case)}}
    for what, by_name in results.items():
        if what in outcome.derivative_errors:
            check.fail(Failure.RAISED, what, mode,
                       f"{mode} {what}: {_describe(outcome.derivative_errors[what])}")
            continue
        for name, result in by_name.items():
            label = f"{what} {name}" if what == "hvp" else what
            if result is None:
                check.fail(Failure.NO_GRADIENT, what, mode, f"{mode}: no {label}")
                continue
            got, got_dtype = result
            if what == "hvp" and name in outcome.detached:
                label += " (the gradient is detached from the input: no second derivative)"
            check.note(what, mode, compare(got, want[f"{what}_{name}"], dtype), label)
            if got_dtype != dtype:
                check.fail(Failure.DTYPE, what, mode,
                           f"{mode} {label}: dtype {got_dtype}, expected {dtype}")


def _check_raises(check: _Check, adapter, case, dtype, mode, traced):
    kind = case.expected["error"]
    mentions = adapter.argument_name(case.loss, case.expected["mentions"])
    try:
        adapter.call(case, dtype, traced)
    except Exception as exc:  # noqa: BLE001 - any exception is an answer to judge
        if adapter.exact_errors and not (
            type(exc).__name__ == kind or isinstance(exc, {"ValueError": ValueError,
                                                           "TypeError": TypeError}[kind])
        ):
            check.fail(Failure.WRONG_ERROR, "error", mode,
                       f"{mode}: {_describe(exc)}; expected {kind}")
        elif adapter.exact_errors and mentions not in str(exc):
            check.fail(Failure.WRONG_ERROR, "error", mode,
                       f"{mode}: the {kind} does not name {mentions!r}: {exc}")
    else:
        check.fail(Failure.NO_ERROR, "error", mode,
                   f"{mode}: did not raise (expected {kind} naming {mentions!r})")


HALF = ("bfloat16", "float16")


def covered(case: Case, dtype: str) -> list[str]:
    """The clauses a run checks: the case's, and [GEN-HALF] for every half-precision run."""
    return case.clauses + ["GEN-HALF"] if dtype in HALF and "GEN-HALF" not in case.clauses \
        else case.clauses


def run_case(adapter: Adapter, case: Case, dtype: str) -> Record:
    record = Record(case.id, adapter.name, dtype, NA, covered(case, dtype))
    if case.loss not in adapter.losses:
        record.detail = f"{case.loss} not implemented"
        return record
    if dtype not in adapter.dtypes:
        record.detail = f"{dtype} not supported"
        return record
    reason = adapter.unsupported(case)
    if reason:
        record.detail = reason
        return record
    modes = adapter.modes(case)
    record.unchecked = [c for c in record.clauses
                        if (c.startswith("GRAD-") and not adapter.gradients)
                        or (c.startswith("TRACE-") and "traced" not in modes)
                        or (_is_derivative(c) and not (adapter.gradients
                                                       and adapter.derivatives))]
    record.clauses = [c for c in record.clauses if c not in record.unchecked]
    check = _Check()
    for mode in modes:
        traced = mode == "traced"
        try:
            if case.is_error and (not traced or case.expected["traced"] == "error"):
                _check_raises(check, adapter, case, dtype, mode, traced)
            elif case.is_error:
                outcome, _ = _call(adapter, case, dtype, traced)
                _check_values(check, adapter, case, dtype, mode, outcome,
                              case.expected["traced"], zeros=False)
            else:
                outcome, warned = _call(adapter, case, dtype, traced)
                _check_values(check, adapter, case, dtype, mode, outcome, case.expected)
                if not traced:
                    _check_warnings(check, adapter, case, warned)
        except Exception as exc:  # noqa: BLE001 - a crash is a failure of this case only
            check.fail(Failure.RAISED, "raised", mode, f"{mode}: {_describe(exc)}")
    (record.loss_abs, record.loss_rel), (record.grad_abs, record.grad_rel) = (
        check.errors["loss"], check.errors["grad"])
    (record.jvp_abs, record.jvp_rel), (record.hvp_abs, record.hvp_rel) = (
        check.errors["jvp"], check.errors["hvp"])
    if not check.problems:
        record.status = PASS
        return record
    record.detail = "; ".join(check.problems)
    record.kinds = check.kinds
    deviating, unexplained = _deviating(adapter, case, dtype, record.clauses, check.where)
    if deviating and not unexplained:
        record.status = DEVIATES
        record.deviating = deviating
        record.detail = f"[{', '.join(record.deviating)}] {record.detail}"
        record.charged = list(record.deviating)
    else:
        record.status = FAIL
        record.charged = _charged(record.clauses, unexplained)
    return record


def _is_derivative(clause: str) -> bool:
    """[JVP] and [HVP-*]: the clauses of spec section 18."""
    return clause.startswith(_EXPLAINS["jvp"] + _EXPLAINS["hvp"])


def _deviating(adapter, case, dtype, clauses, where) -> tuple[list[str], set[str]]:
    """The documented departures that explain a failure, and the parts of the run
    (see ``_Check.where``) that none explains. A wrong JVP or HVP is explained only by a
    departure on [JVP] or on the case's [HVP-*] clause (or, in half precision, [GEN-HALF]);
    the rest of a run by the case's own other departures first, [GEN-HALF] only when it
    has none."""
    parts = _explained_parts(where)
    deviating, unexplained = [], set()
    for part in sorted(parts):
        if part in ("jvp", "hvp"):
            found = ([c for c in clauses if c.startswith(_EXPLAINS[part])
                      and c in adapter.deviations]
                     or [c for c in ("GEN-HALF",)  # half-precision intermediates
                         if dtype in HALF and c in adapter.deviations])
        else:
            found = ([c for c in case.clauses
                      if c in adapter.deviations and not _is_derivative(c)]
                     or [c for c in covered(case, dtype)
                         if c in adapter.deviations and not _is_derivative(c)])
        if found:
            deviating += [c for c in found if c not in deviating]
        else:
            unexplained.add(part)
    return deviating, unexplained


def _explained_parts(where: set[str]) -> set[str]:
    """The parts of a run a failure is charged to: a wrong loss (or a crash) explains a
    wrong gradient, JVP and HVP, and a wrong gradient a wrong HVP (its derivative)."""
    parts = set(where)
    if parts & {"loss", "raised"}:
        parts -= {"grad", "jvp", "hvp"}
    if "grad" in parts:
        parts -= {"hvp"}
    return parts


# Which clauses can explain a problem found in one part of a run, by clause-id prefix.
_EXPLAINS = {
    "grad": ("GRAD-", "FOCAL-GRAD", "LCE-GRAD"),
    "jvp": ("JVP",),
    "hvp": ("HVP-",),
    "error": ("ERR-", "CW-ERRORS", "LCE-ERRORS"),
    "warning": ("WARN-",),
    "traced": ("TRACE-",),
    "dtype": ("GEN-RESULT-DTYPE", "GEN-PARAM-DTYPE", "GEN-HALF", "CW-DTYPE"),
}


def _charged(clauses: list[str], where: set[str]) -> list[str]:
    """The clauses a failure is charged to: a wrong gradient to the gradient clauses, a
    wrong JVP to [JVP], a wrong HVP (or a second derivative that raised or came back
    detached) to the case's [HVP-*], a missing error to the error clauses, a wrong traced
    result to the traced clauses, a missing warning to the warning clauses, a wrong dtype
    to the dtype clauses; a wrong loss value to the value clauses (those of none of these
    kinds). A wrong gradient, JVP or HVP that comes with a wrong loss is charged to the
    loss alone, and a wrong HVP that comes with a wrong gradient to the gradient alone.
    Where no clause of the right kind is listed, all of them."""
    charged: list[str] = []
    parts = _explained_parts(where)
    for part in sorted(parts):
        if part in ("loss", "raised"):
            kinds = [c for c in clauses if not any(c.startswith(p)
                                                   for ps in _EXPLAINS.values() for p in ps)]
        else:
            kinds = [c for c in clauses if c.startswith(_EXPLAINS[part])]
        charged += [c for c in kinds if c not in charged]
    if "traced" in where and any(c.startswith("TRACE-") for c in clauses):
        # A traced-mode problem is what the traced clauses are about.
        charged = [c for c in charged if c.startswith("TRACE-")] or charged
    return charged or list(clauses)


def _check_warnings(check: _Check, adapter, case, warned):
    expected = case.expected.get("warns")
    if expected and expected not in warned:
        check.fail(Failure.NO_WARNING, "warning", "checked", f"checked: no {expected}")
    if not expected and adapter.exact_errors and "ProbabilityInputWarning" in warned:
        check.fail(Failure.EXTRA_WARNING, "warning", "checked",
                   "checked: unexpected ProbabilityInputWarning")


def run(adapters: Iterable[Adapter], cases: list[Case], dtypes: Iterable[str],
        progress: Callable[[int], None] | None = None) -> list[Record]:
    """Every case in every dtype it applies to, adapter by adapter, in this process;
    ``progress(n)`` is told of every ``n`` runs done."""
    records = []
    for adapter in adapters:
        for dtype in dtypes:
            for case in cases:
                if dtype in case.dtypes:
                    records.append(run_case(adapter, case, dtype))
                    if progress:
                        progress(1)
            adapter.release()
    return records


def count_runs(adapters, cases: list[Case], dtypes: Iterable[str]) -> int:
    dtypes = list(dtypes)
    return len(list(adapters)) * sum(d in c.dtypes for c in cases for d in dtypes)


# ----------------------------------------------------------------------------------
# Reports.


def _fmt(v):
    if v is None:
        return "-"
    return f"{v:.1e}" if math.isfinite(v) else str(v)


def print_report(records: list[Record], out: TextIO | None = None, verbose=False):
    """The failures and deviations with their errors (every row with ``verbose``), the
    clause summary and the totals."""
    out = out or sys.stdout
    sections = defaultdict(list)
    for r in records:
        sections[(r.impl, r.dtype)].append(r)
    width = max((len(r.case) for r in records), default=10)
    for (impl, dtype), rows in sections.items():
        if all(r.status == NA for r in rows) and len({r.detail for r in rows}) == 1:
            if verbose:
                print(f"\n== {impl} · {dtype}: n/a ({rows[0].detail}) ==", file=out)
            continue
        shown = rows if verbose else [r for r in rows if r.status in (FAIL, DEVIATES)]
        if not shown:
            continue
        print(f"\n== {impl} · {dtype} ==", file=out)
        print(f"{'case':<{width}}  {'status':<8}  {'loss abs':>8}  {'loss rel':>8}  "
              f"{'grad abs':>8}  {'grad rel':>8}  note", file=out)
        for r in shown:
            print(f"{r.case:<{width}}  {r.status:<8}  {_fmt(r.loss_abs):>8}  "
                  f"{_fmt(r.loss_rel):>8}  {_fmt(r.grad_abs):>8}  {_fmt(r.grad_rel):>8}  "
                  f"{r.detail}", file=out)
    print_clause_summary(records, out, verbose=verbose)
    print_totals(records, out)


def evidence(r: Record) -> dict[str, str]:
    """clause -> the status a run shows for it. A failing or deviating run counts against
    the clauses it is charged to, and toward no other; except that a run whose only
    problems are in its JVP or HVP (spec section 18) checked its value and gradient, so it
    counts as a pass of its other clauses."""
    if r.status not in (FAIL, DEVIATES) or not r.charged:
        return {c: r.status for c in r.clauses}
    others = PASS if all(_is_derivative(c) for c in r.charged) else None
    return {c: r.status if c in r.charged else others for c in r.clauses
            if c in r.charged or others}


def clause_summary(records: list[Record]) -> dict[str, dict[str, Counter]]:
    """clause -> implementation -> status -> runs, from each run's :func:`evidence`."""
    table: dict[str, dict[str, Counter]] = {c: defaultdict(Counter) for c in clauses.clauses()}
    for r in records:
        for clause, status in evidence(r).items():
            table.setdefault(clause, defaultdict(Counter))[r.impl][status] += 1
        for clause in r.unchecked:
            table.setdefault(clause, defaultdict(Counter))[r.impl][NA] += 1
    return table


def _cell(counter: Counter) -> str:
    if not counter:
        return "-"
    parts = [f"{counter[s]} {s}" for s in (PASS, FAIL, DEVIATES) if counter[s]]
    if not parts:
        return NA
    return ", ".join(parts)


def print_clause_summary(records: list[Record], out: TextIO | None = None, verbose=True):
    """The clause table; without ``verbose``, only the clauses some run checked."""
    out = out or sys.stdout
    impls = list(dict.fromkeys(r.impl for r in records))
    table = clause_summary(records)
    cells = {c: [_cell(table[c][i]) for i in impls] for c in table
             if verbose or any(table[c][i] for i in impls)}
    widths = [max([len(i)] + [len(cells[c][k]) for c in cells]) for k, i in enumerate(impls)]
    print("\n== summary by clause (case runs over all dtypes) ==", file=out)
    print(f"{'clause':<22}" + "".join(f"  {i:<{w}}" for i, w in zip(impls, widths)), file=out)
    for clause, row in cells.items():
        print(f"{clause:<22}" + "".join(f"  {c:<{w}}" for c, w in zip(row, widths)), file=out)


def totals(records: list[Record]) -> Counter:
    return Counter(r.status for r in records)


def print_totals(records: list[Record], out: TextIO | None = None):
    out = out or sys.stdout
    count = totals(records)
    print(f"\nconformance: {count[PASS]} passed, {count[FAIL]} failed, "
          f"{count[DEVIATES]} documented deviations, {count[NA]} n/a", file=out)


def write_json(records: list[Record], path: str, meta: dict):
    """Every record, with ``meta``, to ``path`` ("-" for standard output)."""
    obj = {"meta": meta, "records": [r.to_json() for r in records]}
    if path == "-":
        json.dump(obj, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=1)
        f.write("\n")
