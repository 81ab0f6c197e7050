"""The differential fuzzer: bounded runs find nothing in our implementations, and it
finds, shrinks and writes out a deliberately wrong one."""

from __future__ import annotations

import pytest

pytest.importorskip("hypothesis")

from conformance import adapters, golden, runner  # noqa: E402
from conformance.fuzz import fuzz, summary  # noqa: E402
from tests.mutants import MutantAdapter  # noqa: E402


@pytest.mark.parametrize("names,examples", [(("reference", "wce_torch"), 150),
                                            (("wce_jax",), 40)])
def test_bounded_fuzz_finds_nothing(names, examples, tmp_path):
    result = fuzz([adapters.load(n) for n in names], examples, seed=7, out=tmp_path)
    assert result.failure is None, summary(result)
    assert result.examples == examples


def test_fuzz_catches_shrinks_and_writes_a_wrong_implementation(tmp_path):
    result = fuzz([MutantAdapter("smoothing-without-weights")], 300, seed=3, out=tmp_path)
    assert result.failure is not None and result.candidate is not None
    (case,) = golden.load_file(result.candidate)  # a valid golden file
    assert case.loss == "cross_entropy" and case.args["label_smoothing"] > 0
    record = runner.run_case(adapters.load("reference"), case, "float64")
    assert record.status == runner.PASS  # the candidate is right by the reference
