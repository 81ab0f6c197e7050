"""python -m conformance run: exit codes, n/a, unknown names, malformed files, JSON."""

from __future__ import annotations

import json
import shutil

import pytest

from conformance import adapters, clauses, golden, runner
from conformance.__main__ import main
from tests.mutants import MutantAdapter


def test_unknown_implementation_lists_known(capsys):
    assert main(["run", "--impl", "nosuch"]) == 2
    err = capsys.readouterr().err
    assert "unknown implementation 'nosuch'" in err
    for name in adapters.KNOWN:
        assert name in err


def test_reference_run_passes_and_reports(capsys, tmp_path):
    out_json = tmp_path / "records.json"
    code = main(["run", "--impl", "reference", "--case", "ce-weighted-mean",
                 "--json", str(out_json), "--verbose"])
    out = capsys.readouterr().out
    assert code == 0
    assert "== reference · float64 ==" in out
    assert "loss abs" in out and "grad rel" in out
    assert "summary by clause" in out and "CE-MEAN" in out
    records = json.loads(out_json.read_text())["records"]
    assert records and all(r["status"] == "pass" for r in records if r["dtype"] == "float64")
    assert "== reference · float32: n/a (float32 not supported) ==" in out


def test_default_report_is_compact_and_json_has_a_default_path(capsys, tmp_path,
                                                               monkeypatch):
    monkeypatch.chdir(tmp_path)
    code = main(["run", "--impl", "reference", "--case", "ce-weighted-mean", "--json"])
    out = capsys.readouterr().out
    assert code == 0
    assert "loss abs" not in out  # no table of passing rows without --verbose
    assert "summary by clause" in out and "CE-MEAN" in out
    assert "CE-SMOOTH " not in out  # only the clauses some run checked
    assert "conformance: 6 passed, 0 failed" in out
    records = json.loads((tmp_path / "conformance-report.json").read_text())["records"]
    assert len(records) == 24 and records[0]["kinds"] == []


def test_json_to_standard_output(capsys):
    assert main(["run", "--impl", "reference", "--case", "ce-weighted-mean-n8",
                 "--dtype", "float64", "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["records"][0]["status"] == "pass"
    assert "summary by clause" in captured.err


def test_help_texts(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    assert "golden cases of spec/SPEC.md" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main(["check", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "channels_last (the last axis, as wce_jax and optax)" in text
    assert "default: 1" not in text


def test_failure_kinds_and_the_clause_they_are_charged_to():
    adapter = MutantAdapter("mean-over-count")
    case = next(c for c in golden.load_cases() if c.id == "ce-weighted-mean-n8-c5")
    record = runner.run_case(adapter, case, "float64")
    assert record.status == runner.FAIL and runner.Failure.VALUE in record.kinds
    assert "CE-MEAN" in record.charged and "GRAD-CE" not in record.charged
    assert "GEN-RESULT-DTYPE" not in record.charged


def test_failure_exits_nonzero(monkeypatch, capsys):
    monkeypatch.setattr(adapters, "load", lambda name: MutantAdapter("mean-over-count"))
    assert main(["run", "--impl", "mutant", "--dtype", "float64"]) == 1
    assert "FAIL" in capsys.readouterr().out


def test_unsupported_is_na_not_pass():
    adapter = MutantAdapter("bce-without-clamp")  # implements binary_cross_entropy only
    cases = [c for c in golden.load_cases() if c.loss == "nll_loss"]
    records = runner.run(adapter and [adapter], cases, ["float64"])
    assert records and {r.status for r in records} == {runner.NA}
    table = runner.clause_summary(records)
    assert runner._cell(table["NLL-ELEM"][adapter.name]) == "n/a"


def test_runner_releases_caches_after_each_dtype():
    """JAX adapters free their compiled programs between dtypes (a full matrix run
    compiles thousands and would exhaust the process's memory mappings)."""
    adapter = MutantAdapter("bce-without-clamp")
    calls = []
    adapter.call = lambda case, dtype, traced, call=adapter.call: (
        calls.append(dtype), call(case, dtype, traced))[1]
    adapter.release = lambda: calls.append("release")
    cases = [c for c in golden.load_cases() if c.id.startswith("bce-")][:2]
    adapter.dtypes = ("float64", "float32")
    runner.run([adapter], cases, ["float64", "float32"])
    assert calls == ["float64", "float64", "release", "float32", "float32", "release"]


def test_malformed_golden_file_is_named(tmp_path, capsys):
    for path in golden.case_files():
        shutil.copy(path, tmp_path)
    broken = tmp_path / "nll_loss.json"
    obj = json.loads(broken.read_text())
    obj["cases"][3]["expected"] = {"output": "oops"}
    broken.write_text(json.dumps(obj))
    assert main(["run", "--impl", "reference", "--cases", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "nll_loss.json" in err and obj["cases"][3]["id"] in err


@pytest.mark.parametrize("dtype", clauses.DTYPES)
def test_dtype_option(dtype, capsys):
    code = main(["run", "--impl", "reference", "--dtype", dtype, "--case", "ce-unbatched"])
    assert code == 0
    out = capsys.readouterr().out
    if dtype != "float64":  # the reference computes in float64 only
        assert "0 passed" in out and "n/a" in out


def test_no_gradient_means_grad_clauses_are_na():
    """An implementation without gradients leaves GRAD-* clauses n/a, never a pass."""
    adapter = MutantAdapter("bce-without-clamp")
    cases = [c for c in golden.load_cases() if c.loss == "binary_cross_entropy"]
    records = runner.run([adapter], cases, ["float64"])
    table = runner.clause_summary(records)
    assert runner._cell(table["GRAD-BCE"][adapter.name]) == "n/a"
    assert all("GRAD-BCE" not in r.clauses for r in records if r.status != runner.NA)


def test_untraced_implementation_leaves_trace_clauses_na():
    adapter = adapters.load("torch")
    cases = [c for c in golden.load_cases() if "TRACE-TARGET-RANGE" in c.clauses]
    records = runner.run([adapter], cases, ["float64"])
    table = runner.clause_summary(records)
    assert runner._cell(table["TRACE-TARGET-RANGE"]["torch"]) == "n/a"
    assert runner._cell(table["ERR-TARGET-RANGE"]["torch"]).endswith("pass")


USER_LOSSES = '''
import numpy as np
from conformance.reference import cross_entropy


def right(input, target, weight=None, ignore_index=-100, reduction="mean",
          label_smoothing=0.0):
    return cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)


def mean_over_count(input, target, weight=None, ignore_index=-100, reduction="mean",
                    label_smoothing=0.0):
    none = cross_entropy(input, target, weight, ignore_index, "none", label_smoothing)
    if reduction == "mean" and np.asarray(target).dtype.kind != "f":
        return none.sum() / max(none.size, 1)
    return cross_entropy(input, target, weight, ignore_index, reduction, label_smoothing)


def unfinished(input, target, **options):
    raise NotImplementedError("smoothing is next week")
'''


@pytest.fixture
def user_module(tmp_path, monkeypatch):
    (tmp_path / "user_losses.py").write_text(USER_LOSSES)
    monkeypatch.syspath_prepend(str(tmp_path))
    return "user_losses"


def test_check_passes_a_right_function(user_module, capsys):
    assert main(["check", f"{user_module}:right", "--loss", "cross_entropy",
                 "--dtype", "float64"]) == 0
    assert "0 failed" in capsys.readouterr().out


def test_check_fails_a_wrong_function(user_module, capsys):
    assert main(["check", f"{user_module}:mean_over_count", "--loss", "cross_entropy",
                 "--dtype", "float64", "--only-failures"]) == 1
    out = capsys.readouterr().out
    assert "ce-weighted-mean-n8-c5" in out and "FAIL" in out and "CE-MEAN" in out


def test_check_summarises_a_raising_function_per_case(user_module, capsys):
    assert main(["check", f"{user_module}:unfinished", "--loss", "nll_loss",
                 "--dtype", "float64"]) == 1
    out = capsys.readouterr().out
    assert "raised NotImplementedError: smoothing is next week (user_losses.py:" in out
    assert "summary by clause" in out  # the report is complete, not a crash


def test_check_names_what_cannot_be_found(user_module, capsys):
    assert main(["check", f"{user_module}:nothing", "--loss", "cross_entropy"]) == 2
    assert "has no attribute 'nothing'" in capsys.readouterr().err


def test_matrix_writes_the_compatibility_table(tmp_path, capsys):
    out = tmp_path / "compatibility.md"
    assert main(["matrix", "--impl", "reference", "--impl", "torch", "--dtype", "float64",
                 "--out", str(out)]) == 0
    text = out.read_text()
    for clause in clauses.clauses():
        assert f"| `{clause}` |" in text
    assert "| `DP-GLOBAL` | pass | deviates NaN/inf" in text  # DDP's mean of means
    assert "| `FOCAL-SIGMOID` | pass | n/a |" in text          # torch has no focal loss
    assert "| `CE-MEAN` | pass | pass |" in text


def test_matrix_cell_reports_the_largest_failing_error():
    from conformance import matrix

    adapter = MutantAdapter("mean-over-count")
    cases = [c for c in golden.load_cases() if c.loss == "cross_entropy"]
    records = runner.run([adapter], cases, ["float64"])
    rows = {row[0]: row[1] for row in matrix.table(records, [adapter.name])}
    assert rows["CE-MEAN"].startswith("fail ") and float(rows["CE-MEAN"].split()[-1]) > 0.1
    assert rows["NLL-ELEM"] == "n/a"
