"""The golden files are what the definitions and the exact evaluation produce, byte for
byte on any machine; the float64 reference stays within a few ulps of them; malformed
files are reported with the file and the case."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import warnings
from fractions import Fraction

import mpmath
import numpy as np
import pytest

from conformance import cases as definitions
from conformance import exact, golden
from conformance.__main__ import main


def test_regenerating_reproduces_committed_files(capsys):
    assert main(["generate", "--check"]) == 0, capsys.readouterr().out


def test_check_detects_a_changed_file(tmp_path, capsys):
    assert main(["generate", "--out", str(tmp_path)]) == 0
    path = tmp_path / "nll_loss.json"
    path.write_text(path.read_text().replace('"nll-', '"nll_', 1))
    assert main(["generate", "--check", "--out", str(tmp_path)]) == 1
    assert "nll_loss.json: would change" in capsys.readouterr().out


def test_round_trip_is_lossless():
    values = np.array([0.1, -0.0, 1e-308, 5e-324, np.nan, np.inf, -np.inf, 1 / 3])
    back = golden.decode_array(json.loads(json.dumps(golden.encode_array(values))))
    assert np.array_equal(back.view(np.uint64), values.view(np.uint64))


def test_inputs_are_exact_in_every_listed_dtype(cases):
    for case in cases:
        for name, value in case.args.items():
            if isinstance(value, np.ndarray) and value.dtype.kind == "f" \
                    and name not in case.keep_dtype:
                for dtype in case.dtypes:
                    assert definitions.representable(value, dtype), (case.id, name, dtype)


def _write(tmp_path, text):
    path = tmp_path / "broken.json"
    path.write_text(text)
    return path


def test_malformed_case_names_file_and_case(tmp_path):
    good = golden.load_cases()[0].to_json()
    del good["expected"]
    path = _write(tmp_path, json.dumps({"format": golden.FORMAT, "loss": "x", "cases": [good]}))
    with pytest.raises(golden.GoldenFormatError, match=rf"broken.json: case '{good['id']}'"):
        golden.load_file(path)


def test_not_json_names_file(tmp_path):
    with pytest.raises(golden.GoldenFormatError, match="broken.json: not valid JSON"):
        golden.load_file(_write(tmp_path, "{"))


def test_unknown_clause_free_case_rejected(tmp_path):
    good = golden.load_cases()[0].to_json()
    good["clauses"] = []
    path = _write(tmp_path, json.dumps({"format": golden.FORMAT, "loss": "x", "cases": [good]}))
    with pytest.raises(golden.GoldenFormatError, match="names no clause"):
        golden.load_file(path)


# ----------------------------------------------------------------------------------
# The expected values are exact and do not depend on the machine (spec section 1).

#: NumPy's run-time SIMD targets above the x86-64 baseline, under NumPy 2.4's names
#: (X86_V3 holds AVX2 and FMA3, X86_V4 AVX-512) and under older releases' names. Names a
#: release does not know are ignored by it.
WIDE_SIMD = ("X86_V4 X86_V3 AVX512_ICL AVX512_SPR AVX512F AVX512CD AVX512_KNL AVX512_KNM "
             "AVX512_SKX AVX512_CLX AVX512_CNL AVX2 FMA3 AVX512FP16 ASIMDHP ASIMDDP ASIMDFHM "
             "SVE")


def _dispatch_targets(env) -> list[str]:
    """The wide SIMD targets NumPy would dispatch to in a process with ``env``."""
    probe = ("try:\n    from numpy._core import _multiarray_umath as m\n"
             "except ImportError:\n    from numpy.core import _multiarray_umath as m\n"
             f"wide = set({WIDE_SIMD.split()!r})\n"
             "print(' '.join(t for t in m.__cpu_dispatch__ if t in wide "
             "and m.__cpu_features__.get(t)))")
    return subprocess.run([sys.executable, "-c", probe], env=env, capture_output=True,
                          text=True, check=True).stdout.split()


def test_regenerating_with_wide_simd_switched_off_gives_the_same_bytes():
    """``generate --check`` in a process whose NumPy may not dispatch to AVX2 or AVX-512
    loops (nor to the wider ARM ones), one BLAS thread and another hash seed: the
    committed bytes do not depend on them. Only targets this NumPy knows are named,
    since some releases refuse unknown ones."""
    env = dict(os.environ, OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1",
               PYTHONHASHSEED="12345")
    env["NPY_DISABLE_CPU_FEATURES"] = " ".join(_dispatch_targets(env))
    assert _dispatch_targets(env) == []
    done = subprocess.run([sys.executable, "-m", "conformance", "generate", "--check"],
                          env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


def test_to_float64_rounds_once_to_nearest_even():
    """Against CPython's int/int division, which is correctly rounded, over normal,
    subnormal, tie and overflowing values."""
    rng = np.random.RandomState(0)
    values = [Fraction(1, 3), Fraction(-2, 7), Fraction(2 ** 53 + 1), Fraction(2 ** 53 + 3),
              Fraction(5, 2 ** 1076), Fraction(3, 2 ** 1076), Fraction(1, 2 ** 1075),
              Fraction(1, 2 ** 1080), Fraction(2 ** 1024 - 2 ** 970),
              Fraction(2 ** 1024 - 2 ** 971)]
    for _ in range(2000):
        man = int(rng.randint(1, 2 ** 62, dtype=np.int64)) * int(rng.randint(1, 2 ** 40))
        values.append(Fraction(man * (-1) ** int(rng.randint(2)), 1)
                      * Fraction(2) ** int(rng.randint(-1200, 940)))
    with mpmath.workprec(4000):
        for v in values:
            x = mpmath.mpf(v.numerator) / v.denominator
            try:
                want = v.numerator / v.denominator
            except OverflowError:
                want = math.inf if v > 0 else -math.inf
            assert exact.to_float64(x) == want, v


def test_an_exact_zero_reached_through_cancellation_is_zero():
    """Equal logits, equal weights and full smoothing: every gradient entry is exactly 0,
    though each is computed as a difference of two rounded numbers."""
    x = np.zeros((2, 3))
    got = exact.evaluate("cross_entropy",
                         {"input": x, "target": np.array([0, 2]), "label_smoothing": 1.0},
                         grad_output=np.float64(1.0))
    assert got["grad_input"].tolist() == np.zeros((2, 3)).tolist()
    assert got["output"] == math.log(3)


def _reference_results(case):
    fn, grad_fn = definitions.LOSSES[case.loss]
    if case.shards:
        fn = definitions._on_merged_shards(fn)
        grad_fn = definitions._on_merged_shards(grad_fn, restack=True)
    extra = {"checked": False} if case.is_error else {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got = {"output": np.asarray(fn(**case.args, **extra), np.float64)}
        if grad_fn is not None:
            grads = grad_fn(**case.args, grad_output=case.grad_output, **extra)
            grads = grads if isinstance(grads, dict) else {"input": grads}
            got.update({f"grad_{k}": np.asarray(v, np.float64) for k, v in grads.items()})
        if case.tangents is not None:
            got.update(definitions._higher_derivatives(case, case.tangents, case.grad_output))
    return got


#: The float64 reference's largest distance from the goldens, in units in the last place
#: of the largest expected entry (norm-wise, as spec section 1 compares): measured 3; and
#: for the JVP, a sum of products that may cancel down to less than its terms: measured 10.
REFERENCE_ULPS = 8
REFERENCE_JVP_ULPS = 16


def test_the_reference_is_within_a_few_ulps_of_the_exact_values(cases):
    worst = {"jvp": (0.0, ""), "other": (0.0, "")}
    for case in cases:
        if case.is_error and case.expected["traced"] == "error":
            continue
        want = case.expected["traced"] if case.is_error else case.expected
        got = _reference_results(case)
        for name, value in got.items():
            w = np.asarray(want[name])
            assert np.array_equal(np.isnan(value), np.isnan(w)), (case.id, name)
            finite = np.isfinite(w)
            assert np.array_equal(value[~finite], w[~finite], equal_nan=True), (case.id, name)
            if not finite.any():
                continue
            scale = np.max(np.abs(w[finite]))
            error = np.max(np.abs(value[finite] - w[finite]))
            ulps = error / np.spacing(scale) if scale else (0.0 if error == 0 else np.inf)
            kind = "jvp" if name.startswith("jvp_") else "other"
            worst[kind] = max(worst[kind], (float(ulps), f"{case.id} {name}"))
    assert worst["other"][0] <= REFERENCE_ULPS, worst
    assert worst["jvp"][0] <= REFERENCE_JVP_ULPS, worst
