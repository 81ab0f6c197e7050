"""wce_torch beyond the golden cases: errors, gradcheck, modules, torch.compile, memory."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
import torch.nn.functional as TF  # noqa: E402

import wce_torch  # noqa: E402
from benchmarks.memory import torch_peak_bytes  # noqa: E402
from conformance import reference  # noqa: E402

GEN = torch.Generator().manual_seed(0)
X = torch.randn(3, 4, generator=GEN)
Y = torch.tensor([0, 3, 1])
P = torch.tensor([[0.25, 0.5], [0.75, 0.125]])
T = torch.tensor([[1.0, 0.0], [0.0, 1.0]])

ce, nll = wce_torch.cross_entropy, wce_torch.nll_loss
bce, bcel = wce_torch.binary_cross_entropy, wce_torch.binary_cross_entropy_with_logits

# (call, error type, words the message must contain: the argument, the value, the expectation)
BAD_INPUT = {
    "target-too-large": (lambda: ce(X, torch.tensor([0, 5, 1])), ValueError,
                         ["target", "5", "[0, 4)"]),
    "target-minus-one": (lambda: ce(X, torch.tensor([0, -1, 1])), ValueError,
                         ["target", "-1", "ignore_index=-100"]),
    "nll-target-too-large": (lambda: nll(X, torch.tensor([0, 4, 1])), ValueError,
                             ["target", "4"]),
    "weight-length": (lambda: ce(X, Y, weight=torch.ones(3)), ValueError,
                      ["weight", "(3,)", "(4,)"]),
    "weight-rank": (lambda: ce(X, Y, weight=torch.ones(4, 1)), ValueError,
                    ["weight", "(4, 1)"]),
    "pos-weight-batch-axis": (lambda: bcel(X[:2, :3], torch.ones(2, 3), pos_weight=torch.ones(2)),
                              ValueError, ["pos_weight", "(2,)", "last dimension"]),
    "smoothing-above-one": (lambda: ce(X, Y, label_smoothing=1.5), ValueError,
                            ["label_smoothing", "1.5", "[0, 1]"]),
    "smoothing-negative": (lambda: ce(X, Y, label_smoothing=-0.1), ValueError,
                           ["label_smoothing", "-0.1"]),
    "probs-above-one": (lambda: bce(torch.tensor([0.5, 1.5]), torch.tensor([1.0, 0.0])),
                        ValueError, ["input", "1.5", "[0, 1]"]),
    "probs-nan": (lambda: bce(torch.tensor([0.5, float("nan")]), torch.tensor([1.0, 0.0])),
                  ValueError, ["input", "nan"]),
    "bce-target-above-one": (lambda: bce(P, T * 2), ValueError, ["target", "2.0"]),
    "class-target-shape": (lambda: ce(X, Y[None]), ValueError, ["target", "(1, 3)", "(3,)"]),
    "probability-target-shape": (lambda: ce(X, torch.ones(3, 3)), ValueError,
                                 ["target", "(3, 3)", "(3, 4)"]),
    "bce-target-shape": (lambda: bce(P, torch.ones(2)), ValueError,
                         ["target", "(2,)", "(2, 2)"]),
    "bce-weight-enlarges": (lambda: bce(P[0], T[0], weight=torch.ones(2, 2)), ValueError,
                            ["weight", "(2, 2)"]),
    "unknown-reduction": (lambda: ce(X, Y, reduction="avg"), ValueError,
                          ["reduction", "'avg'", "'mean'"]),
    "ignore-index-probabilities": (lambda: ce(X, torch.full((3, 4), 0.25), ignore_index=0),
                                   ValueError, ["ignore_index", "0", "-100"]),
    "integer-input": (lambda: ce(torch.ones(3, 4, dtype=torch.int32), Y), TypeError,
                      ["input", "int32"]),
    "bool-target": (lambda: ce(X, torch.tensor([True, False, True])), TypeError,
                    ["target", "bool"]),
    "float-target-nll": (lambda: nll(X, Y.float()), TypeError, ["target"]),
    "zero-d-input": (lambda: ce(torch.tensor(1.0), torch.tensor(0)), ValueError, ["input"]),
    "numpy-input": (lambda: ce(X.numpy(), Y), TypeError, ["input", "Tensor"]),
}


@pytest.mark.parametrize("name", sorted(BAD_INPUT))
def test_bad_input_error_names_argument_value_and_expectation(name):
    call, kind, words = BAD_INPUT[name]
    with pytest.raises(kind) as info:
        call()
    for word in words:
        assert word in str(info.value), f"{name}: {word!r} not in {info.value}"


def _double(*shape, low=None, high=None):
    if low is None:
        return torch.randn(*shape, generator=GEN, dtype=torch.float64, requires_grad=True)
    return (torch.rand(*shape, generator=GEN, dtype=torch.float64) * (high - low) + low
            ).requires_grad_()


GRADCHECK = {
    "ce-weighted": lambda x, w: ce(x, torch.tensor([0, 3, -100, 2, 2]), weight=w),
    "ce-smoothing": lambda x, w: ce(x, torch.tensor([0, 3, -100, 2, 2]), weight=w,
                                    label_smoothing=0.3),
    "ce-smoothing-sum": lambda x, w: ce(x, torch.tensor([0, 3, 1, 2, -100]), weight=w,
                                        label_smoothing=0.2, reduction="sum"),
    "ce-none": lambda x, w: ce(x, torch.tensor([0, 3, -100, 2, 2]), weight=w,
                               label_smoothing=0.1, reduction="none"),
    "ce-ignore-inside": lambda x, w: ce(x, torch.tensor([0, 3, 1, 2, 2]), weight=w,
                                        ignore_index=2),
    "ce-kdim": lambda x, w: ce(x.reshape(1, 5, 4).transpose(1, 2).contiguous()
                               .reshape(1, 4, 5)[:, :, :], torch.tensor([[0, 1, -100, 3, 2]]),
                               weight=w, label_smoothing=0.1),
    "ce-probabilities": lambda x, w: ce(x, torch.softmax(torch.arange(20.0).reshape(5, 4)
                                                         .double() / 7, 1),
                                        weight=w, label_smoothing=0.2),
    "nll": lambda x, w: nll(x, torch.tensor([0, 3, -100, 2, 2]), weight=w),
}


@pytest.mark.parametrize("name", sorted(GRADCHECK))
def test_gradcheck_class_losses(name):
    """torch.autograd.gradcheck in float64, with respect to the input and the weights."""
    fn = GRADCHECK[name]
    x = _double(5, 4)
    w = _double(4, low=0.5, high=2.0)
    assert torch.autograd.gradcheck(fn, (x, w), eps=1e-6, atol=1e-8)


def test_gradcheck_binary_losses():
    p = _double(4, 3, low=0.05, high=0.95)
    y = _double(4, 3, low=0.0, high=1.0)
    w = _double(3, low=0.5, high=2.0)
    for reduction in ("mean", "sum", "none"):
        assert torch.autograd.gradcheck(lambda p, y, w: bce(p, y, weight=w,
                                                            reduction=reduction), (p, y, w))
        assert torch.autograd.gradcheck(lambda x, y, w: bcel(x, y, weight=w, pos_weight=w * 2,
                                                             reduction=reduction),
                                        (p * 6 - 3, y, w))


def test_half_precision_accumulates_in_float32():
    x = torch.randn(4096, 3, generator=GEN)
    y = torch.randint(0, 3, (4096,), generator=GEN)
    expected = reference.cross_entropy(x.double().numpy(), y.numpy(), reduction="sum")
    for dtype, rtol in ((torch.bfloat16, 1e-2), (torch.float16, 2e-3)):
        xh = x.to(dtype)
        got = ce(xh, y, reduction="sum")
        assert got.dtype == dtype
        exact = reference.cross_entropy(xh.double().numpy(), y.numpy(), reduction="sum")
        assert abs(got.item() - exact) <= rtol * abs(exact), (dtype, got.item(), exact)
    assert np.isfinite(expected)


def test_int32_and_uint8_targets_are_accepted():
    """[GEN-INT-TARGET]: torch itself rejects int32."""
    expected = TF.cross_entropy(X, Y)
    for dtype in (torch.int32, torch.int16, torch.uint8, torch.int64):
        torch.testing.assert_close(ce(X, Y.to(dtype)), expected)
    with pytest.raises(RuntimeError):
        TF.cross_entropy(X, Y.int())


def test_modules_match_torch_state_dicts_and_devices():
    w = torch.tensor([1.0, 2.0, 0.5, 3.0])
    pairs = [
        (wce_torch.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1),
         torch.nn.CrossEntropyLoss(weight=w, ignore_index=1, label_smoothing=0.1)),
        (wce_torch.NLLLoss(weight=w, reduction="sum"), torch.nn.NLLLoss(weight=w, reduction="sum")),
    ]
    for ours, theirs in pairs:
        assert ours.state_dict().keys() == theirs.state_dict().keys() == {"weight"}
        assert ours.weight.data_ptr() == ours.state_dict()["weight"].data_ptr()
        ours.load_state_dict(theirs.state_dict())
        torch.testing.assert_close(ours(X, Y), theirs(X, Y))
        assert ours.to(torch.float64).weight.dtype == torch.float64
    ours = wce_torch.BCEWithLogitsLoss(pos_weight=torch.ones(2) * 3, reduction="none")
    theirs = torch.nn.BCEWithLogitsLoss(pos_weight=torch.ones(2) * 3, reduction="none")
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    torch.testing.assert_close(ours(P, T), theirs(P, T))
    torch.testing.assert_close(wce_torch.BCELoss(weight=torch.ones(2))(P, T),
                               torch.nn.BCELoss(weight=torch.ones(2))(P, T))
    assert wce_torch.CrossEntropyLoss(size_average=False).reduction == "sum"


def test_backward_with_retained_graph_twice():
    """retain_graph keeps the saved log-probabilities intact for the next pass."""
    x = X.clone().requires_grad_()
    loss = ce(x, Y, label_smoothing=0.1)
    (first,) = torch.autograd.grad(loss, x, retain_graph=True)
    (second,) = torch.autograd.grad(loss, x)
    torch.testing.assert_close(first, second)
    x.grad = None
    ce(x, Y, label_smoothing=0.1).backward()
    torch.testing.assert_close(x.grad, first)


def test_softmax_input_warns():
    probs = torch.softmax(X, 1)
    with pytest.warns(wce_torch.ProbabilityInputWarning, match="filterwarnings"):
        ce(probs, Y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ce(X, Y)
        mostly = probs.clone()
        mostly[2] = 0.5
        ce(mostly, Y)


@pytest.mark.parametrize("eps", [0.0, 0.1])
def test_training_needs_one_logits_sized_buffer(eps):
    """Forward plus backward allocate one logits-sized buffer (the log-probabilities,
    turned into the gradient in place) where torch's weighted path allocates three
    (benchmarks/memory.py: the CPU allocator's events, deterministic)."""
    x = torch.randn(512, 1000, requires_grad=True)
    y = torch.randint(0, 1000, (512,))
    w = torch.rand(1000)
    def step(fn):
        return lambda: torch.autograd.grad(fn(x, y, weight=w, label_smoothing=eps), x)

    ours = torch_peak_bytes(step(ce))  # the gradient itself is 1.0x
    theirs = torch_peak_bytes(step(TF.cross_entropy))
    assert ours <= 1.05 * x.nbytes, ours / x.nbytes
    assert theirs >= 2.9 * x.nbytes, theirs / x.nbytes


def test_compile_has_no_graph_break_and_matches_eager():
    """torch.compile traces the common path whole (value checks are skipped there)."""
    import torch._dynamo

    x = torch.randn(8, 5, requires_grad=True)
    y = torch.randint(0, 5, (8,))
    y[0] = -100
    w = torch.rand(5)

    def step(x, y, w):
        return ce(x, y, weight=w, label_smoothing=0.1)

    explanation = torch._dynamo.explain(step)(x, y, w)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(step, backend="aot_eager", fullgraph=True)
    value = compiled(x, y, w)
    (grad,) = torch.autograd.grad(value, x)
    (expected_grad,) = torch.autograd.grad(step(x, y, w), x)
    torch.testing.assert_close(value, step(x, y, w))
    torch.testing.assert_close(grad, expected_grad)
    torch._dynamo.reset()


def test_error_hints_at_the_class_axis_and_the_integer_dtype():
    """Channels-last input (the class axis is 1, as in torch), and class labels in a
    floating dtype, get the hint a user needs."""
    nhwc = torch.zeros(2, 4, 5, 6)
    with pytest.raises(ValueError, match=r"class axis is axis 1.*movedim\(3, 1\)"):
        wce_torch.cross_entropy(nhwc, torch.zeros(2, 5, 6, dtype=torch.long),
                                weight=torch.ones(6))
    with pytest.raises(ValueError, match=r"class axis is axis 1.*movedim\(3, 1\)"):
        wce_torch.softmax_focal_loss(nhwc, torch.zeros(2, 5, 6, dtype=torch.long),
                                     alpha=torch.ones(6))
    wce_torch.cross_entropy(nhwc.movedim(3, 1), torch.zeros(2, 4, 5, dtype=torch.long),
                            weight=torch.ones(6))  # the fix works
    with pytest.raises(ValueError, match="class indices need an integer dtype"):
        wce_torch.cross_entropy(X, Y.float())


# The fused functions of the binary and focal losses against the composed formula that
# the same call takes when another argument needs a gradient (bcel's weights, the focal
# losses' target or alpha): the same loss, gradient, gradient on a second pass over a kept
# graph (the fused backward works in place) and double-backward gradient.
_FUSED_BIN_Y = (torch.rand(6, 5, generator=torch.Generator().manual_seed(3)) < 0.3).double()
_FUSED_CLASS_Y = torch.tensor([0, 4, -100, 2, 1, 3])
FUSED_CALLS = {
    "bcel": lambda x, a: wce_torch.binary_cross_entropy_with_logits(
        x, _FUSED_BIN_Y, weight=a, pos_weight=a * 2.0, reduction="sum"),
    "sigmoid_focal-gamma1.5": lambda x, a: wce_torch.sigmoid_focal_loss(
        x, _FUSED_BIN_Y * a / a, gamma=1.5, reduction="sum"),
    "sigmoid_focal-gamma2": lambda x, a: wce_torch.sigmoid_focal_loss(
        x, _FUSED_BIN_Y * a / a, gamma=2.0, reduction="mean"),
    "softmax_focal": lambda x, a: wce_torch.softmax_focal_loss(
        x, _FUSED_CLASS_Y, alpha=a, gamma=2.0),
    "softmax_focal-gamma0.5": lambda x, a: wce_torch.softmax_focal_loss(
        x, _FUSED_CLASS_Y, alpha=a, gamma=0.5, reduction="sum"),
}


def _graph_names(fn, seen=None):
    seen = set() if seen is None else seen
    if fn is not None and fn not in seen:
        seen.add(fn)
        for next_fn, _ in fn.next_functions:
            _graph_names(next_fn, seen)
    return {type(f).__name__ for f in seen}


@pytest.mark.parametrize("name", sorted(FUSED_CALLS))
def test_fused_losses_equal_the_composed_formula(name):
    call = FUSED_CALLS[name]
    gen = torch.Generator().manual_seed(7)
    x = (3 * torch.randn(6, 5, generator=gen, dtype=torch.float64)).requires_grad_()
    a = torch.rand(5, generator=gen, dtype=torch.float64) + 0.5
    results = []
    for a_grad in (False, True):  # fused, then composed
        value = call(x, a.clone().requires_grad_(a_grad))
        fused = any(n.startswith("_") and n.endswith("Backward")
                    for n in _graph_names(value.grad_fn))
        assert fused is not a_grad, _graph_names(value.grad_fn)
        (g,) = torch.autograd.grad(value, x, retain_graph=True)
        (g_again,) = torch.autograd.grad(value, x, create_graph=True)
        (h,) = torch.autograd.grad(g_again.pow(2).sum(), x)
        results.append((value, g, g_again, h))
    (fused, composed) = results
    assert fused[1].abs().max() > 1e-3
    for got, want in zip(fused, composed):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
