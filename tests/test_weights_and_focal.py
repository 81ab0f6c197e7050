"""Weight schemes, pos_weight, focal losses and resampling in wce_jax and wce_torch, beyond
the golden cases: scikit-learn agreement, zero counts, gamma = 0, balanced draws."""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
torch = pytest.importorskip("torch")
import jax.numpy as jnp  # noqa: E402
from sklearn.utils.class_weight import compute_class_weight  # noqa: E402

import wce_jax  # noqa: E402
import wce_torch  # noqa: E402

RNG = np.random.RandomState(7)
COUNTS = np.array([900, 240, 60, 12, 3])
LABELS = np.repeat(np.arange(5), COUNTS)
RNG.shuffle(LABELS)


@pytest.mark.parametrize("package", [wce_jax, wce_torch], ids=["jax", "torch"])
def test_balanced_equals_scikit_learn(package):
    expected = compute_class_weight("balanced", classes=np.arange(5), y=LABELS)
    with jax.enable_x64(True):  # float64 counts stay float64 in JAX too
        weights = package.class_weights(COUNTS.astype(np.float64))
        assert weights.dtype in (np.float64, torch.float64)
        np.testing.assert_allclose(np.asarray(weights), expected, rtol=1e-12)
    from_labels = package.class_weights_from_labels(LABELS, 5, "balanced")
    np.testing.assert_allclose(np.asarray(from_labels), expected, rtol=1e-6)


@pytest.mark.parametrize("package", [wce_jax, wce_torch], ids=["jax", "torch"])
def test_zero_count_is_a_clear_error_or_capped(package):
    with pytest.raises(ValueError, match=r"counts: class 1 has count 0.*max_weight"):
        package.class_weights(np.array([10.0, 0.0, 5.0]))
    with pytest.raises(ValueError, match=r"labels: class 2 has count 0"):
        package.class_weights_from_labels(np.array([0, 1, 1]), 3)
    with pytest.raises(ValueError, match=r"targets: label 1 has 0.0 positives"):
        package.pos_weight_from_labels(np.array([[1.0, 0.0], [0.0, 0.0]]))
    capped = package.class_weights(np.array([10.0, 0.0, 5.0]), "inverse", max_weight=0.15)
    np.testing.assert_allclose(np.asarray(capped), [0.1, 0.15, 0.15])


def test_zero_count_under_jit_is_nan_and_checked_mode_raises():
    weights = np.asarray(jax.jit(wce_jax.class_weights)(jnp.array([10.0, 0.0, 5.0])))
    assert np.isnan(weights[1]) and np.isfinite(weights[[0, 2]]).all()
    err, _ = jax.jit(wce_jax.checked(wce_jax.class_weights))(jnp.array([10.0, 0.0, 5.0]))
    with pytest.raises(Exception, match="class 1 has count 0"):
        err.throw()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_focal_gamma_zero_is_cross_entropy(reduction):
    """[FOCAL-GAMMA0], in both packages, with weights and ignored targets."""
    x = RNG.standard_normal((12, 5)).astype(np.float32)
    y = RNG.randint(0, 5, 12)
    y[3] = -100
    w = RNG.uniform(0.5, 3.0, 5).astype(np.float32)
    np.testing.assert_allclose(
        wce_jax.softmax_focal_loss(x, y, alpha=w, gamma=0.0, reduction=reduction),
        wce_jax.cross_entropy(x, y, weight=w, reduction=reduction), rtol=1e-6)
    xt, yt, wt = torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(w)
    torch.testing.assert_close(
        wce_torch.softmax_focal_loss(xt, yt, alpha=wt, gamma=0.0, reduction=reduction),
        wce_torch.cross_entropy(xt, yt, weight=wt, reduction=reduction))
    t = (RNG.uniform(size=(12, 5)) < 0.3).astype(np.float32)
    np.testing.assert_allclose(
        wce_jax.sigmoid_focal_loss(x, t, alpha=None, gamma=0.0, reduction=reduction),
        wce_jax.binary_cross_entropy_with_logits(x, t, reduction=reduction), rtol=1e-6)
    torch.testing.assert_close(
        wce_torch.sigmoid_focal_loss(xt, torch.from_numpy(t), alpha=None, gamma=0.0,
                                     reduction=reduction),
        wce_torch.binary_cross_entropy_with_logits(xt, torch.from_numpy(t),
                                                   reduction=reduction))


def test_focal_gradient_is_finite_where_logits_saturate():
    x = np.array([[60.0, 0.0], [1.0, 0.0]], np.float32)
    y = np.array([0, 1])
    grad = jax.grad(lambda x: wce_jax.softmax_focal_loss(x, y, gamma=0.5))(x)
    assert np.isfinite(grad).all()
    xt = torch.tensor(x, requires_grad=True)
    wce_torch.softmax_focal_loss(xt, torch.tensor(y), gamma=0.5).backward()
    assert torch.isfinite(xt.grad).all()


def _class_shares(labels, indices, num_classes):
    return np.bincount(labels[np.asarray(indices)], minlength=num_classes) / len(indices)


def test_jax_balanced_indices_draw_classes_evenly():
    draw = jax.jit(lambda key: wce_jax.balanced_indices(key, LABELS, 5, 20000))
    shares = _class_shares(LABELS, draw(jax.random.PRNGKey(0)), 5)
    np.testing.assert_allclose(shares, 0.2, atol=0.02)  # 5 sigma is about 0.014
    unweighted = np.bincount(LABELS, minlength=5) / len(LABELS)
    assert unweighted[-1] < 0.005  # the draw really changed the class mix


def test_torch_balanced_sampler_draws_classes_evenly():
    sampler = wce_torch.balanced_sampler(torch.from_numpy(LABELS), 5, num_samples=20000,
                                         generator=torch.Generator().manual_seed(0))
    shares = _class_shares(LABELS, list(sampler), 5)
    np.testing.assert_allclose(shares, 0.2, atol=0.02)


def test_sample_weights_zero_for_ignored_labels():
    labels = np.array([0, 0, 1, -100, 2])
    for package in (wce_jax, wce_torch):
        w = np.asarray(package.sample_weights_from_labels(labels, 3))
        np.testing.assert_allclose(w, [0.5, 0.5, 1.0, 0.0, 1.0])
