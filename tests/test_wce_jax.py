"""wce_jax beyond the golden cases: errors, jit/grad/vmap, layouts, checked mode, memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import wce_jax  # noqa: E402
from conformance import adapters, golden, reference, runner  # noqa: E402

RNG = np.random.RandomState(0)
X = RNG.standard_normal((3, 4)).astype(np.float32)
Y = np.array([0, 3, 1])
P = np.array([[0.25, 0.5], [0.75, 0.125]], np.float32)
T = np.array([[1.0, 0.0], [0.0, 1.0]], np.float32)

ce, nll = wce_jax.cross_entropy, wce_jax.nll_loss
bce, bcel = wce_jax.binary_cross_entropy, wce_jax.binary_cross_entropy_with_logits

# (call, error type, words the message must contain: the argument, the value, the expectation)
BAD_INPUT = {
    "target-too-large": (lambda: ce(X, np.array([0, 5, 1])), ValueError,
                         ["target", "5", "[0, 4)"]),
    "target-minus-one": (lambda: ce(X, np.array([0, -1, 1])), ValueError,
                         ["target", "-1", "ignore_index=-100"]),
    "nll-target-too-large": (lambda: nll(X, np.array([0, 4, 1])), ValueError,
                             ["target", "4"]),
    "weight-length": (lambda: ce(X, Y, weight=np.ones(3)), ValueError,
                      ["weight", "(3,)", "(4,)"]),
    "weight-rank": (lambda: ce(X, Y, weight=np.ones((4, 1))), ValueError,
                    ["weight", "(4, 1)"]),
    "pos-weight-batch-axis": (lambda: bcel(X[:2, :3], np.ones((2, 3)), pos_weight=np.ones(2)),
                              ValueError, ["pos_weight", "(2,)", "last dimension"]),
    "smoothing-above-one": (lambda: ce(X, Y, label_smoothing=1.5), ValueError,
                            ["label_smoothing", "1.5", "[0, 1]"]),
    "smoothing-negative": (lambda: ce(X, Y, label_smoothing=-0.1), ValueError,
                           ["label_smoothing", "-0.1"]),
    "probs-above-one": (lambda: bce(np.array([0.5, 1.5]), np.array([1.0, 0.0])), ValueError,
                        ["probs", "1.5", "[0, 1]"]),
    "probs-nan": (lambda: bce(np.array([0.5, np.nan]), np.array([1.0, 0.0])), ValueError,
                  ["probs", "nan"]),
    "bce-target-above-one": (lambda: bce(P, T * 2), ValueError, ["target", "2.0"]),
    "class-target-shape": (lambda: ce(X, np.array([[0, 3, 1]])), ValueError,
                           ["target", "(1, 3)", "(3,)"]),
    "probability-target-shape": (lambda: ce(X, np.ones((3, 3), np.float32)), ValueError,
                                 ["target", "(3, 3)", "(3, 4)"]),
    "bce-target-shape": (lambda: bce(P, np.ones(2, np.float32)), ValueError,
                         ["target", "(2,)", "(2, 2)"]),
    "bce-weight-enlarges": (lambda: bce(P[0], T[0], weight=np.ones((2, 2))), ValueError,
                            ["weight", "(2, 2)"]),
    "unknown-reduction": (lambda: ce(X, Y, reduction="avg"), ValueError,
                          ["reduction", "'avg'", "'mean'"]),
    "ignore-index-probabilities": (lambda: ce(X, np.ones((3, 4), np.float32) / 4,
                                              ignore_index=0),
                                   ValueError, ["ignore_index", "0", "-100"]),
    "integer-logits": (lambda: ce(np.ones((3, 4), np.int32), Y), TypeError,
                       ["logits", "int32"]),
    "bool-target": (lambda: ce(X, np.array([True, False, True])), TypeError,
                    ["target", "bool"]),
    "float-target-nll": (lambda: nll(X, Y.astype(np.float32)), TypeError, ["target"]),
    "axis-out-of-range": (lambda: ce(X, Y, axis=2), ValueError, ["axis", "2"]),
    "zero-d-logits": (lambda: ce(np.float32(1.0), np.int32(0)), ValueError, ["logits"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_error_names_argument_value_and_expectation(name):
    call, kind, words = BAD_INPUT[name]
    with pytest.raises(kind) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{name}: {word!r} not in {info.value}"


STATIC_UNDER_JIT = {
    "weight-length": lambda x, y: ce(x, y, weight=jnp.ones(3)),
    "class-target-shape": lambda x, y: ce(x, y[None]),
    "unknown-reduction": lambda x, y: ce(x, y, reduction="avg"),
    "smoothing": lambda x, y: ce(x, y, label_smoothing=2.0),
    "integer-logits": lambda x, y: ce(x.astype(jnp.int32), y),
    "pos-weight": lambda x, y: bcel(x, jnp.ones_like(x), pos_weight=jnp.ones(3)),
}


@pytest.mark.parametrize("name", sorted(STATIC_UNDER_JIT))
def test_static_errors_raise_under_jit(name):
    """[TRACE-STATIC]"""
    with pytest.raises((ValueError, TypeError)):
        jax.jit(STATIC_UNDER_JIT[name])(X, Y)


def test_traced_label_smoothing_is_rejected():
    with pytest.raises(TypeError, match="label_smoothing must be a Python number"):
        jax.jit(lambda x, e: ce(x, Y, label_smoothing=e))(X, 0.1)


def test_out_of_range_target_under_jit_is_nan_never_another_class():
    """[TRACE-TARGET-RANGE]: -1 is not the last class, as it is in optax."""
    bad = jnp.array([0, -1, 1])
    per_element = np.asarray(jax.jit(lambda x, y: ce(x, y, reduction="none"))(X, bad))
    assert np.isnan(per_element[1]) and np.isfinite(per_element[[0, 2]]).all()
    assert np.isnan(jax.jit(ce)(X, bad))
    grad = np.asarray(jax.jit(jax.grad(lambda x, y: ce(x, y, reduction="sum")))(X, bad))
    assert np.isnan(grad[1]).all() and np.isfinite(grad[[0, 2]]).all()
    probs = jax.jit(lambda p: bce(p, jnp.ones(2), reduction="none"))(jnp.array([0.5, 1.5]))
    with pytest.raises(ValueError, match="target value -1"):  # a known value still raises
        jax.jit(lambda x: ce(x, bad))(X)
    assert np.isfinite(probs[0]) and np.isnan(probs[1])


def test_checked_mode_raises_under_jit():
    def loss(x, y):
        return ce(x, y, weight=jnp.arange(1.0, 5.0))

    err, value = jax.jit(wce_jax.checked(loss))(X, jnp.array([0, 7, 1]))
    with pytest.raises(Exception, match=r"target values must be class indices in \[0, 4\).*7"):
        err.throw()
    err, value = jax.jit(wce_jax.checked(loss))(X, jnp.asarray(Y))
    err.throw()  # no error for good targets
    np.testing.assert_allclose(value, ce(X, Y, weight=np.arange(1.0, 5.0)), rtol=1e-6)
    err, _ = jax.jit(wce_jax.checked(lambda p: bce(p, jnp.ones(2))))(jnp.array([0.5, -0.5]))
    with pytest.raises(Exception, match="probs values must lie in"):
        err.throw()


def test_grad_value_and_grad_vmap_jit_agree():
    x = jnp.asarray(RNG.standard_normal((5, 6, 7)), jnp.float32)  # (batch, positions, C)
    y = jnp.asarray(RNG.randint(0, 7, (5, 6)))
    y = y.at[0, 0].set(-100)
    w = jnp.asarray(RNG.uniform(0.5, 2, 7), jnp.float32)

    def total(x, y):
        return ce(x, y, weight=w, label_smoothing=0.1, reduction="sum")

    summed = jax.vmap(total)(x, y)
    np.testing.assert_allclose(summed, [total(x[i], y[i]) for i in range(5)], rtol=1e-5)
    value, grad = jax.jit(jax.value_and_grad(total))(x, y)
    np.testing.assert_allclose(value, summed.sum(), rtol=1e-5)
    np.testing.assert_allclose(grad, jax.grad(total)(x, y), rtol=1e-5, atol=1e-7)
    per_example = jax.vmap(jax.grad(total))(x, y)
    np.testing.assert_allclose(per_example, grad, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("loss", ["cross_entropy", "nll_loss"])
def test_axis_1_is_torch_layout(loss):
    x = RNG.standard_normal((2, 5, 3, 4)).astype(np.float32)  # (N, C, d1, d2)
    y = RNG.randint(0, 5, (2, 3, 4))
    y[0, 0, 0] = -100
    fn = getattr(wce_jax, loss)
    first = fn(x, y, reduction="none", axis=1)
    last = fn(np.moveaxis(x, 1, -1), y, reduction="none")
    np.testing.assert_array_equal(first, last)
    expected = getattr(reference, loss)(x.astype(np.float64), y, reduction="none")
    np.testing.assert_allclose(first, expected, rtol=1e-5)


def test_int32_targets_and_python_inputs():
    assert jnp.asarray(Y).dtype == jnp.int32  # JAX's default integer
    np.testing.assert_allclose(ce(jnp.asarray(X), jnp.asarray(Y)),
                               reference.cross_entropy(X.astype(np.float64), Y), rtol=1e-6)
    np.testing.assert_allclose(ce(X.tolist(), Y.tolist()), ce(X, Y))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_result_and_gradient_dtype(dtype):
    x = jnp.asarray(X, dtype)
    value, grad = jax.value_and_grad(lambda x: ce(x, Y, weight=np.ones(4)))(x)
    assert value.dtype == dtype and grad.dtype == dtype


@pytest.fixture
def x64():
    with jax.enable_x64(True):
        yield


def test_gradients_with_respect_to_weights_and_targets(x64):
    """check_grads compares every custom VJP with finite differences, weights included."""
    x = jnp.asarray(RNG.standard_normal((6, 5)))
    y = jnp.array([0, 4, -100, 2, 2, 1])
    w = jnp.asarray(RNG.uniform(0.5, 2.0, 5))
    for eps in (0.0, 0.3):
        for reduction in ("mean", "sum", "none"):
            check_grads(lambda x, w: ce(x, y, weight=w, label_smoothing=eps,
                                        reduction=reduction), (x, w), order=1, modes=["rev"])
    check_grads(lambda x, w: nll(x, y, weight=w), (x, w), order=1, modes=["rev"])
    p = jnp.asarray(RNG.uniform(0.1, 0.9, (4, 3)))
    t = jnp.asarray(RNG.uniform(0.1, 0.9, (4, 3)))
    bw = jnp.asarray(RNG.uniform(0.5, 2.0, 3))
    check_grads(lambda p, t, w: bce(p, t, weight=w), (p, t, bw), order=1, modes=["rev"])
    check_grads(lambda x, t, w: bcel(x, t, pos_weight=w), (p * 4 - 2, t, bw), order=1,
                modes=["rev"])
    probs = jax.nn.softmax(jnp.asarray(RNG.standard_normal((6, 5))))
    check_grads(lambda x, t, w: ce(x, t, weight=w, label_smoothing=0.2), (x, probs, w),
                order=1, modes=["rev"])


def test_softmax_input_warns_only_in_eager_calls():
    probs = np.asarray(jax.nn.softmax(jnp.asarray(X)))
    with pytest.warns(wce_jax.ProbabilityInputWarning, match="filterwarnings"):
        ce(probs, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce(X, Y)  # logits: no warning
        jax.jit(ce)(probs, Y)  # traced: cannot look
        mostly = probs.copy()
        mostly[2] = [0.5, 0.5, 0.5, 0.5]  # one row that is not a distribution
        ce(mostly, Y)


@pytest.mark.parametrize("strategy,eps", [("exp", 0.0), ("shifted", 0.1), ("logits", 0.0)])
def test_fused_gradient_needs_no_logits_sized_temporary(strategy, eps):
    """The compiled forward+backward, with logits, targets and weights all passed in,
    holds less than 0.1x the logits beyond its inputs and outputs (see
    wce_jax.gradient_strategy). The "logits" strategy is for backends that fuse reductions into
    their producers; XLA on CPU materialises its smoothing sum, so only its unsmoothed
    form is held to this here."""
    x = jnp.zeros((1024, 1000), jnp.float32)
    y = jnp.zeros((1024,), jnp.int32)
    w = jnp.ones((1000,), jnp.float32)
    step = jax.jit(jax.value_and_grad(lambda x, y, w: ce(x, y, weight=w, label_smoothing=eps)))
    with wce_jax.gradient_strategy(strategy):
        temp = step.lower(x, y, w).compile().memory_analysis().temp_size_in_bytes
    assert temp <= 0.1 * x.nbytes, f"temporary memory {temp / x.nbytes:.2f}x the logits"


RECOMPUTE_CASES = [c for c in golden.load_cases() if c.loss == "cross_entropy"
                   and not c.is_error and c.args["target"].dtype.kind in "iu"][::2]


def test_logits_strategy_passes_the_goldens():
    """The GPU/TPU residual strategy, run on CPU against half of the class-target CE
    cases in float32 (``python -m conformance run`` runs it on a GPU against all)."""
    adapter = adapters.load("wce_jax")
    adapter.release()  # traces made before under "auto" would be reused
    with wce_jax.gradient_strategy("logits"):
        records = [runner.run_case(adapter, case, "float32") for case in RECOMPUTE_CASES
                   if "float32" in case.dtypes]
    adapter.release()
    failures = [f"{r.case} {r.dtype}: {r.detail}" for r in records if r.status != runner.PASS]
    assert not failures, "\n".join(failures)


EAGER_SAMPLE = [c for c in golden.load_cases() if not c.is_error][::20]


@pytest.mark.parametrize("case", EAGER_SAMPLE, ids=[c.id for c in EAGER_SAMPLE])
def test_eager_values_equal_jitted(case):
    """Eager calls run the same jitted computation after their checks (a sample): equal
    up to the last bits that fusing with the caller's code may change."""
    adapter = adapters.load("wce_jax")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", wce_jax.ProbabilityInputWarning)
        eager = adapter.call(case, "float32", traced=False)
    jitted = adapter.call(case, "float32", traced=True)
    np.testing.assert_allclose(eager.output, jitted.output, rtol=1e-6, atol=1e-30)
    if jitted.grad_input is not None:
        np.testing.assert_allclose(eager.grad_input, jitted.grad_input, rtol=1e-6,
                                   atol=1e-30)
    for name, (grad, _) in jitted.grads.items():
        np.testing.assert_allclose(eager.grads[name][0], grad, rtol=1e-6, atol=1e-30)


def test_gradient_strategy_is_a_setting_that_takes_effect():
    """The strategies compile different programs ("shifted" may coincide with "logits",
    as its docstring says); a name outside the list is an error."""
    x = jnp.zeros((8, 5), jnp.float32)
    y = jnp.zeros((8,), jnp.int32)
    programs = {}
    for strategy in ("logits", "exp", "shifted"):
        with wce_jax.gradient_strategy(strategy):  # a new function: traced afresh
            step = jax.jit(jax.grad(lambda x: ce(x, y)))
            programs[strategy] = step.lower(x).compile().as_text()
    assert programs["exp"] != programs["logits"]
    with pytest.raises(ValueError, match="strategy must be one of"):
        with wce_jax.gradient_strategy("fast"):
            pass


def test_error_hints_at_the_class_axis_and_the_integer_dtype():
    """Channels-first logits without axis=1, and class labels in a floating dtype, get
    the hint a user needs."""
    nchw = np.zeros((2, 6, 4, 5), np.float32)
    with pytest.raises(ValueError, match=r"class axis is axis=3.*pass axis=1"):
        ce(nchw, np.zeros((2, 6, 4), np.int32), weight=np.ones(6))
    with pytest.raises(ValueError, match=r"class axis is axis=3.*pass axis=1"):
        wce_jax.softmax_focal_loss(nchw, np.zeros((2, 6, 4), np.int32), alpha=np.ones(6))
    ce(nchw, np.zeros((2, 4, 5), np.int32), weight=np.ones(6), axis=1)  # the fix works
    with pytest.raises(ValueError, match="class indices need an integer dtype"):
        ce(X, Y.astype(np.float32))
    with pytest.raises(ValueError, match="class indices need an integer dtype"):
        ce(nchw, np.zeros((2, 4, 5), np.float32), axis=1)
