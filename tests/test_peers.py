"""The peer adapters (optax, Keras, ONNX Runtime) on the golden cases.

Peers are not expected to conform: these tests pin down what they do, so that a new
peer version that changes shows up here. For each installed peer:

(a) the adapter itself never crashes: every exception a case run raises comes from the
    peer (its innermost frame lies outside conformance/adapters/, with JAX's traceback
    filtering off), and a value case raises only where MAY_RAISE expects it;
(b) the cases in MUST_PASS pass;
(c) the known genuine differences in MUST_FAIL fail, on the clause named, for the
    reason given (the detail of the failure contains the text given).

Runtime: ONNX Runtime runs every case in every dtype it supports (a few seconds). optax
and Keras compile every new case for JAX (0.4 to 0.7 s each on CPU), so the default run
takes the listed cases, in their dtypes, and for every clause they leave out its first
case, in float32: about 40 cases each. `pytest -m slow tests/test_peers.py` runs (a)
over every case in every dtype (26 minutes on a busy 2-core machine).
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import traceback

import pytest

from conformance import adapters, golden, runner

CASES = {c.id: c for c in golden.load_cases()}
ADAPTER_DIR = os.path.join("conformance", "adapters") + os.sep

# (case, dtype): value cases the peer rejects with an exception (a genuine difference).
MAY_RAISE = {
    "onnxruntime": {
        # rank-1 input: ONNX needs (N, C, ...)
        *[(c, d) for c in ("ce-unbatched-weighted-none", "ce-unbatched-weighted-mean",
                           "ce-unbatched-weighted-sum", "ce-unbatched-ignored-mean",
                           "ce-unbatched-ignored-sum", "nll-unbatched-mean",
                           "nll-unbatched-none", "hvp-ce-unbatched-mean")
          for d in ("float64", "float32", "float16")],
        # N = 0: SoftmaxCrossEntropyLoss's Reshape rejects a zero-size shape
        *[(c, d) for c in ("ce-empty-batch-none", "ce-empty-batch-mean",
                           "ce-empty-batch-sum")
          for d in ("float64", "float32", "float16")],
        # labels must be int32 or int64
        *[(c, d) for c in ("ce-target-int8-mean", "ce-target-int16-mean",
                           "ce-target-uint8-mean", "ce-target-uint16-mean",
                           "ce-target-uint32-mean", "ce-target-uint64-mean",
                           "nll-target-uint8-sum")
          for d in ("float64", "float32", "float16")],
        # weights must have the scores' dtype
        ("ce-weight-float64-with-any-input-mean", "float32"),
        ("ce-weight-float64-with-any-input-mean", "float16"),
    },
}

MUST_PASS = {
    "optax": [(c, "float32") for c in (
        "ce-weighted-mean-n8-c5", "ce-ignore-some-weighted-mean",
        "ce-kdim2-weighted-ignore-mean", "ce-ignored-nonfinite-rows-smooth0.0-mean",
        "ce-smooth0.1-weighted-ignore-mean", "cep-smooth0.1-weighted-mean",
        "bcel-pos-rows-weight-none-mean", "focal-sigmoid-alpha0.25-gamma2.0-mean",
        "focal-sigmoid-alpha-1.0-gamma0.5-none")]
    + [("ce-weighted-mean-n8-c5", "float64"), ("focal-sigmoid-alpha0.25-gamma2.0-mean",
                                               "float64")],
    "keras": [(c, "float32") for c in (
        "ce-weighted-mean-n8-c5", "ce-ignore-some-weighted-mean",
        "ce-kdim2-weighted-ignore-mean", "ce-ignored-nonfinite-rows-smooth0.0-mean",
        "ce-smooth0.1-unweighted-ignore-mean", "bce-weight-last-mean",
        "bcel-pos-last-weight-last-mean", "focal-sigmoid-alpha0.25-gamma2.0-mean",
        "focal-softmax-alpha-gamma2.0-ignore-mean", "focal-softmax-kdim2-none")]
    + [("ce-weighted-mean-n8-c5", "float64"),
       ("focal-softmax-alpha-gamma0.5-ignore-mean", "float64")],
    "onnxruntime": [(c, d) for c in (
        "ce-unweighted-sum-n8-c5", "ce-weighted-mean-n8-c5", "ce-kdim2-weighted-ignore-mean",
        "ce-ignore-index-inside-mean", "ce-ignore-all-weighted-mean",
        "ce-zero-weight-sum-smooth0.0-mean", "ce-error-target-too-large",
        "nll-weighted-mean-n8-c5", "nll-kdim2-weighted-ignore-mean")
        for d in ("float64", "float32", "float16")],
}

# (case, dtype, clause, text in the failure's detail, why)
MUST_FAIL = {
    "optax": [
        ("ce-error-target-minus1-mean", "float32", "ERR-TARGET-RANGE", "did not raise",
         "no range check: -1 takes the last class"),
        ("ce-error-target-too-large", "float32", "ERR-TARGET-RANGE", "did not raise",
         "no range check: a target >= C gives NaN"),
        ("ce-error-weight-length", "float32", "ERR-WEIGHT-SHAPE", "did not raise",
         "no weight check: w[y] clamps the index"),
        ("ce-error-smoothing-1.5", "float32", "ERR-SMOOTHING", "did not raise",
         "optax.smooth_labels uses any alpha"),
        ("bcel-error-target-shape", "float32", "ERR-TARGET-SHAPE", "did not raise",
         "sigmoid_binary_cross_entropy broadcasts the target"),
        ("ce-inf-logits-smooth0.0-none", "float32", "EDGE-INF-LOGITS", "non-finite mismatch",
         "logsumexp - label logit: a +inf non-target logit gives loss +inf, not NaN"),
        ("bcel-infinite-logits-none", "float32", "BCEL-NONFINITE", "non-finite mismatch",
         "x = -inf, y = 1 gives +inf, not NaN"),
        ("ce-zero-weight-sum-smooth0.25-mean", "float32", "EDGE-ZERO-WEIGHT-SUM",
         "non-finite mismatch", "sum / sum(w_y) with smoothing is +inf, not NaN"),
        ("ce-smooth-c1000-weighted-sum", "bfloat16", "GEN-HALF", "error",
         "optax computes in bfloat16, not float32"),
    ],
    "keras": [
        ("ce-ignore-all-weighted-mean", "float32", "EDGE-ALL-IGNORED", "non-finite mismatch",
         "divide_no_nan: the mean of nothing is 0, not NaN"),
        ("ce-unbatched-weighted-mean", "float32", "CE-UNBATCHED", "error",
         "a 0-d loss is not divided by its sample weight"),
        ("ce-empty-batch-mean", "float32", "EDGE-EMPTY", "shape (0,)",
         "the mean of an empty batch is an empty array"),
        ("ce-smooth0.5-weighted-ignore-mean", "float32", "CE-SMOOTH", "error",
         "class weights are sample weights: the smoothing term is weighted by w[y]"),
        ("cep-weighted-mean-n8-c5", "float32", "CEP-ELEM", "error",
         "probability targets weighted by the argmax class, as fit(class_weight=...)"),
        ("bcel-pos-rows-weight-none-mean", "float32", "BCEL-POS-WEIGHT", "error",
         "no pos_weight: the sample-weight emulation is exact for 0/1 targets only"),
        ("bce-clamp-exact-01-none", "float32", "BCE-CLAMP", "error",
         "probabilities clipped to [1e-7, 1 - 1e-7]: log-terms stop at -16.1, not -100"),
        ("ce-error-target-minus1-mean", "float32", "ERR-TARGET-RANGE", "did not raise",
         "no range check: an out-of-range target has loss 0"),
        ("ce-error-integer-input", "float32", "ERR-INPUT-DTYPE", "did not raise",
         "integer logits are cast to float32"),
        ("bce-weight-none-mean", "float64", "BCE-ELEM", "error",
         "keras.ops.mean computes float64 in float32"),
        ("focal-sigmoid-alpha0.25-gamma2.0-mean", "float64", "FOCAL-SIGMOID", "error",
         "BinaryFocalCrossentropy averages the last axis in float32"),
        ("focal-softmax-all-ignored-mean", "float32", "EDGE-ALL-IGNORED",
         "non-finite mismatch", "divide_no_nan: the mean of nothing is 0, not NaN"),
        ("focal-softmax-error-negative-gamma", "float32", "FOCAL-SOFTMAX", "did not raise",
         "a negative gamma is used as given"),
        ("ce-unweighted-mean-n8-c5", "bfloat16", "GEN-RESULT-DTYPE", "dtype float32",
         "half-precision inputs give a float32 loss"),
    ],
    "onnxruntime": [
        ("ce-error-unknown-reduction", "float32", "ERR-REDUCTION", "did not raise",
         "an unknown reduction is taken as 'sum'"),
        ("ce-error-target-minus1-mean", "float32", "ERR-TARGET-RANGE", "did not raise",
         "-1 takes the last class"),
        ("ce-unbatched-weighted-mean", "float32", "CE-UNBATCHED", "raised",
         "inputs must have rank >= 2"),
        ("ce-empty-batch-mean", "float32", "EDGE-EMPTY", "raised",
         "SoftmaxCrossEntropyLoss fails on N = 0"),
        ("ce-target-uint8-mean", "float32", "GEN-INT-TARGET", "raised",
         "labels must be int32 or int64"),
        ("ce-weight-float64-with-any-input-mean", "float32", "GEN-PARAM-DTYPE", "raised",
         "weights must have the scores' dtype"),
        ("ce-inf-logits-smooth0.0-none", "float64", "EDGE-INF-LOGITS", "non-finite mismatch",
         "the float64 kernel gives +inf for a +inf non-target logit, not NaN"),
        ("ce-warn-softmax-input-mean", "float32", "WARN-PROBABILITY-INPUT",
         "no ProbabilityInputWarning", "ONNX Runtime does not warn"),
    ],
}

FULL = ("onnxruntime",)  # peers fast enough to run every case in every dtype by default


class Recording:
    """An adapter that records every exception its calls raise, with the traceback."""

    def __init__(self, adapter):
        self._adapter = adapter
        self.raised: list[tuple[str, str, BaseException, traceback.StackSummary]] = []

    def __getattr__(self, name):
        return getattr(self._adapter, name)

    def call(self, case, dtype, traced):
        try:
            return self._adapter.call(case, dtype, traced)
        except Exception as exc:
            self.raised.append((case.id, dtype, exc,
                                traceback.extract_tb(exc.__traceback__)))
            raise


def load(name):
    # The adapter module, not the peer: the Keras adapter must choose Keras's backend
    # before Keras is first imported.
    return pytest.importorskip(adapters.KNOWN[name]).ADAPTER


def clause_cover(adapter, start) -> list[str]:
    """Cases that, with the cases in ``start``, run every clause that the peer's losses
    have cases for at least once (the first case of each clause missing, in file order)."""
    seen = {k for c in start for k in CASES[c].clauses}
    chosen = []
    for case in CASES.values():
        new = set(case.clauses) - seen
        if case.loss in adapter.losses and new:
            chosen.append(case.id)
            seen |= new
    return chosen


def selection(name, adapter, full=False):
    if full or name in FULL:
        return [(c, d) for c in CASES for d in CASES[c].dtypes if d in adapter.dtypes]
    listed = MUST_PASS[name] + [(c, d) for c, d, *_ in MUST_FAIL[name]]
    cover = clause_cover(adapter, [c for c, _ in listed])
    return list(dict.fromkeys(listed + [(c, "float32") for c in cover]))


@contextlib.contextmanager
def jax_tracebacks_unfiltered():
    """Keep JAX's own frames in tracebacks, so an error JAX raises is seen in JAX."""
    if importlib.util.find_spec("jax") is None:
        yield
        return
    import jax

    filtering = jax.config.jax_traceback_filtering
    jax.config.update("jax_traceback_filtering", "off")
    try:
        yield
    finally:
        jax.config.update("jax_traceback_filtering", filtering)


def run(name, full=False):
    recording = Recording(load(name))
    with jax_tracebacks_unfiltered():
        records = {(c, d): runner.run_case(recording, CASES[c], d)
                   for c, d in selection(name, recording, full)}
    return records, recording.raised


def adapter_crashes(name, raised) -> list[str]:
    """(a): exceptions raised by the adapter's own code, and value cases that raised
    where no genuine difference says they may."""
    problems = []
    for case_id, dtype, exc, frames in raised:
        where = f"{frames[-1].filename}:{frames[-1].lineno}" if frames else "?"
        if ADAPTER_DIR in where:
            problems.append(f"(a) {case_id} {dtype}: {type(exc).__name__} raised in the "
                            f"adapter itself ({where}): {exc}")
        elif not CASES[case_id].is_error and (case_id, dtype) not in MAY_RAISE.get(name, ()):
            problems.append(f"(a) {case_id} {dtype}: value case raised "
                            f"{type(exc).__name__} ({where}): {exc}")
    return problems


def not_passing(name, records) -> list[str]:
    """(b): listed cases that do not pass."""
    return [f"(b) {c} {d}: {records[c, d].status}: {records[c, d].detail}"
            for c, d in MUST_PASS[name] if records[c, d].status != runner.PASS]


def not_failing_as_known(name, records) -> list[str]:
    """(c): known differences that no longer fail, or fail for another reason."""
    problems = []
    for case_id, dtype, clause, text, why in MUST_FAIL[name]:
        record = records[case_id, dtype]
        if record.status != runner.FAIL or text not in record.detail \
                or clause not in record.clauses + record.unchecked:
            problems.append(f"(c) {case_id} {dtype} [{clause}] was a known difference "
                            f"({why}); now {record.status}: {record.detail}")
    return problems


@pytest.mark.parametrize("name", list(MUST_PASS))
def test_peer_on_golden_cases(name):
    """(a), (b) and (c) over one run of the peer, so that each peer runs once, on one
    worker, under pytest-xdist too."""
    records, raised = run(name)
    problems = (adapter_crashes(name, raised) + not_passing(name, records)
                + not_failing_as_known(name, records))
    assert not problems, f"{name}:\n" + "\n".join(problems)


# What each peer declares n/a: the losses and dtypes it runs.
RUNS = {
    "optax": ({"cross_entropy", "binary_cross_entropy_with_logits", "sigmoid_focal_loss"},
              ("float64", "float32", "bfloat16", "float16")),
    "keras": ({"cross_entropy", "binary_cross_entropy", "binary_cross_entropy_with_logits",
               "sigmoid_focal_loss", "softmax_focal_loss"},
              ("float64", "float32", "bfloat16", "float16")),
    "onnxruntime": ({"cross_entropy", "nll_loss"}, ("float64", "float32", "float16")),
}


@pytest.mark.parametrize("name", list(RUNS))
def test_na_is_declared_not_passed(name):
    """A loss or dtype a peer cannot run is n/a, never a pass."""
    adapter = load(name)
    losses, dtypes = RUNS[name]
    assert adapter.losses == losses and tuple(adapter.dtypes) == dtypes
    for case in CASES.values():
        for dtype in case.dtypes:
            if case.loss not in losses or dtype not in dtypes or adapter.unsupported(case):
                assert runner.run_case(adapter, case, dtype).status == runner.NA


@pytest.mark.parametrize("name", list(RUNS))
def test_documented(name):
    """Each peer adapter says how it emulates each loss, and has porting notes."""
    module = pytest.importorskip(adapters.KNOWN[name])
    assert module.__doc__ and "n/a" in module.__doc__
    assert module.porting_notes.startswith("**") and len(module.porting_notes) > 500


def test_onnxruntime_cannot_run_bfloat16():
    """bfloat16 is n/a for ONNX Runtime because it cannot run it, not by choice."""
    adapter = load("onnxruntime")
    with pytest.raises(Exception, match="NOT_IMPLEMENTED"):
        adapter.call(CASES["ce-weighted-mean-n8-c5"], "bfloat16", False)


def test_keras_default_reduction_is_not_the_weighted_mean():
    """Keras's default "sum_over_batch_size" divides by the number of valid elements,
    not by the sum of their weights: the weighted-mean goldens differ by over 10%."""
    keras_adapter = load("keras")
    default = type(keras_adapter)()
    default.mean = dict(keras_adapter.mean, **{"class": "sum_over_batch_size"})
    record = runner.run_case(default, CASES["ce-ignore-some-weighted-mean"], "float32")
    assert record.status == runner.FAIL and record.loss_rel > 0.1, record
    unweighted = runner.run_case(default, CASES["ce-ignore-some-unweighted-mean"], "float32")
    assert unweighted.status == runner.PASS, unweighted.detail


@pytest.mark.slow
@pytest.mark.parametrize("name", list(MUST_PASS))
def test_adapter_never_crashes_on_any_case(name, request):
    if "slow" not in (request.config.getoption("markexpr") or ""):
        pytest.skip("every golden case in every dtype takes minutes: run with -m slow")
    records, raised = run(name, full=True)
    problems = adapter_crashes(name, raised)
    assert not problems, f"{name}:\n" + "\n".join(problems)
