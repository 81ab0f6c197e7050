"""linear_cross_entropy in both packages beyond the golden cases: chunking changes only
rounding, gradients against finite differences, memory against the unfused loss."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402
from jax.test_util import check_grads  # noqa: E402

import wce_jax  # noqa: E402
import wce_torch  # noqa: E402
from benchmarks.memory import torch_peak_bytes  # noqa: E402

RNG = np.random.RandomState(3)
N, D, V = 37, 8, 11  # 37 rows: chunks of 4 and 16 leave a partial last chunk
HIDDEN = RNG.standard_normal((N, D))
WEIGHT = RNG.standard_normal((V, D)) * 0.5
TARGET = RNG.randint(0, V, N)
TARGET[::5] = -100
CLASS_WEIGHT = RNG.uniform(0.5, 2.0, V)
OPTIONS = [{}, {"label_smoothing": 0.1, "z_loss": 1e-2, "softcap": 2.0}]


def _unfused_torch(h, w, y, reduction, label_smoothing=0.0, z_loss=0.0, softcap=None):
    z = h @ w.T
    if softcap is not None:
        z = softcap * torch.tanh(z / softcap)
    cw = torch.tensor(CLASS_WEIGHT)
    loss = wce_torch.cross_entropy(z, y, weight=cw, reduction="none",
                                   label_smoothing=label_smoothing)
    valid = y != -100
    loss = loss + torch.where(valid, z_loss * cw[torch.where(valid, y, 0)]
                              * torch.logsumexp(z, -1) ** 2, 0.0)
    if reduction == "none":
        return loss
    total = loss.sum()
    return total if reduction == "sum" else total / cw[y[valid]].sum()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("options", OPTIONS, ids=["plain", "smooth-zloss-softcap"])
def test_chunking_changes_only_rounding(reduction, options):
    """Every chunk size, in both packages, equals the unfused loss and its gradients."""
    h = torch.tensor(HIDDEN, requires_grad=True)
    w = torch.tensor(WEIGHT, requires_grad=True)
    y = torch.tensor(TARGET)
    g = torch.ones(N, dtype=torch.float64) if reduction == "none" else None
    expected = _unfused_torch(h, w, y, reduction, **options)
    want = torch.autograd.grad(expected, (h, w), g)
    for chunk in (1, 4, 16, None):
        got = wce_torch.linear_cross_entropy(h, w, y, class_weight=torch.tensor(CLASS_WEIGHT),
                                             reduction=reduction, chunk_size=chunk, **options)
        torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-14)
        for a, b in zip(torch.autograd.grad(got, (h, w), g), want):
            torch.testing.assert_close(a, b, rtol=1e-12, atol=1e-14)
    for chunk in (4, None):  # each is a compile in JAX
        with jax.enable_x64(True):
            def loss(h, w):
                return wce_jax.linear_cross_entropy(h, w, TARGET, class_weight=CLASS_WEIGHT,
                                                    reduction=reduction, chunk_size=chunk,
                                                    **options)
            value, vjp = jax.vjp(loss, jnp.asarray(HIDDEN), jnp.asarray(WEIGHT))
            grads = vjp(jnp.ones_like(value))
        np.testing.assert_allclose(value, expected.detach().numpy(), rtol=1e-12, atol=1e-14)
        for a, b in zip(grads, want):
            np.testing.assert_allclose(a, b.numpy(), rtol=1e-11, atol=1e-14)


def test_gradients_against_finite_differences():
    h = torch.tensor(HIDDEN[:9], requires_grad=True)
    w = torch.tensor(WEIGHT, requires_grad=True)
    y = torch.tensor(TARGET[:9])
    for reduction in ("mean", "none"):
        for options in OPTIONS:
            assert torch.autograd.gradcheck(
                lambda h, w: wce_torch.linear_cross_entropy(h, w, y, reduction=reduction,
                                                            chunk_size=4, **options), (h, w))
    with jax.enable_x64(True):
        for options in OPTIONS:
            check_grads(lambda h, w: wce_jax.linear_cross_entropy(
                h, w, TARGET[:9], chunk_size=4, **options), (HIDDEN[:9], WEIGHT), order=1,
                modes=["rev"])


def test_jax_memory_is_a_fraction_of_the_unfused():
    """The compiled forward+backward's temporaries, fused against unfused (matmul, then
    wce_jax.cross_entropy): the fused one holds chunks, the unfused one the logits."""
    n, d, v = 2048, 64, 8192
    h = jnp.zeros((n, d), jnp.float32)
    w = jnp.zeros((v, d), jnp.float32)
    y = jnp.zeros((n,), jnp.int32)

    def temp(loss):
        step = jax.jit(jax.value_and_grad(loss, argnums=(0, 1)))
        return step.lower(h, w, y).compile().memory_analysis().temp_size_in_bytes

    fused = temp(lambda h, w, y: wce_jax.linear_cross_entropy(h, w, y, chunk_size=128))
    unfused = temp(lambda h, w, y: wce_jax.cross_entropy(h @ w.T, y))
    assert fused <= unfused / 8, (fused, unfused)


def test_torch_memory_is_a_fraction_of_the_unfused():
    n, d, v = 1024, 64, 4096
    h = torch.randn(n, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    y = torch.randint(0, v, (n,))

    def step(loss):
        return lambda: torch.autograd.grad(loss(), (h, w))

    fused = torch_peak_bytes(step(lambda: wce_torch.linear_cross_entropy(h, w, y,
                                                                         chunk_size=128)))
    unfused = torch_peak_bytes(step(lambda: wce_torch.cross_entropy(h @ w.T, y)))
    logits = 4 * n * v
    assert unfused >= 2 * logits
    assert fused - (h.nbytes + w.nbytes) <= unfused / 8, (fused, unfused)


def test_torch_backward_scales_the_saved_gradients_in_place():
    """On the pinned torch (2.13.0) the autograd engine says whether the graph is kept,
    and a plain backward scales the gradients saved by the forward pass in place: the
    peak holds one (V, D) and one (N, D) gradient. If a torch release stops saying, the
    code falls back to copies (correct, but a second pair of buffers, as with
    retain_graph=True below) and this test fails."""
    n, d, v = 256, 1024, 2048  # the gradients dwarf the 16-row chunks
    h = torch.randn(n, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    y = torch.randint(0, v, (n,))

    def step(retain_graph):
        loss = lambda: wce_torch.linear_cross_entropy(h, w, y, chunk_size=16)  # noqa: E731
        return lambda: torch.autograd.grad(loss(), (h, w), retain_graph=retain_graph)

    gradients = h.nbytes + w.nbytes
    in_place = torch_peak_bytes(step(False))
    copied = torch_peak_bytes(step(True))
    assert copied >= 1.8 * gradients, copied / gradients  # the measure sees a copy
    assert in_place <= 1.25 * gradients, in_place / gradients


@pytest.mark.parametrize("reduction", ["mean", "none"])
def test_torch_forward_only_without_gradients(reduction):
    """Under torch.no_grad, or with frozen inputs, only the losses are computed: the same
    numbers, and no (V, D) gradient buffer."""
    n, d, v = 256, 1024, 2048
    h = torch.randn(n, d, requires_grad=True)
    w = torch.randn(v, d, requires_grad=True)
    y = torch.randint(0, v, (n,))
    with_grad = wce_torch.linear_cross_entropy(h, w, y, chunk_size=16, reduction=reduction)

    def no_grad():
        with torch.no_grad():
            return wce_torch.linear_cross_entropy(h, w, y, chunk_size=16, reduction=reduction)

    assert torch.equal(no_grad(), with_grad.detach())
    frozen = wce_torch.linear_cross_entropy(h.detach(), w.detach(), y, chunk_size=16,
                                            reduction=reduction)
    assert torch.equal(frozen, with_grad.detach()) and not frozen.requires_grad
    assert torch_peak_bytes(no_grad) <= 0.25 * w.nbytes
