"""wce_jax under JAX's function transforms, against the derivative goldens (spec section 18).

Every ``hvp-*`` golden case is run in float64 and float32 through ``jax.jvp``,
``jax.linearize``, ``jax.jacfwd`` and ``jax.jacrev``, the HVP (forward over reverse, and
reverse over forward), ``jax.hessian`` both ways (``jacfwd(jacrev)``, ``jacrev(jacrev)``),
and ``vmap`` of each. The expected values are the goldens' ``jvp_output``, ``hvp_*`` and
``grad_*``, compared by conformance's comparison with SPEC.md's tolerance for the dtype.
"""

from __future__ import annotations

import numpy as np
import pytest

jax = pytest.importorskip("jax")
import jax.numpy as jnp  # noqa: E402

import wce_jax  # noqa: E402
from conformance import golden  # noqa: E402
from conformance.adapters import split_args, to_host  # noqa: E402
from conformance.adapters.runners import channels_last  # noqa: E402
from conformance.compare import compare  # noqa: E402

CASES = [c for c in golden.load_cases() if c.id.startswith("hvp-")]
#: float32 repeats every transform in a second dtype (a minute and a half of compiling);
#: the conformance run already checks wce_jax's JVP and HVP in all four dtypes.
DTYPES = ("float64", pytest.param("float32", marks=pytest.mark.slow))


def test_every_loss_has_derivative_cases():
    assert {c.loss for c in CASES} >= {
        "cross_entropy", "nll_loss", "binary_cross_entropy",
        "binary_cross_entropy_with_logits", "sigmoid_focal_loss", "softmax_focal_loss",
        "linear_cross_entropy"}


class Problem:
    """A golden derivative case as a JAX function of the differentiated arguments (a dict),
    in wce_jax's channels-last layout, with the goldens moved to that layout."""

    def __init__(self, case, dtype):
        self.case, self.dtype = case, dtype
        args, self.restore = channels_last(case, split_args(case, dtype, to_host))
        self.names = tuple(sorted(case.tangents))
        x = {name: jnp.asarray(args.pop(name)) for name in self.names}
        self.rest = {k: jnp.asarray(v) if isinstance(v, np.ndarray) else v
                     for k, v in args.items()}
        tangents = {name: to_host(t, dtype) for name, t in case.tangents.items()}
        if "input" in tangents:
            tangents["input"] = channels_last(case, {"input": tangents["input"]})[0]["input"]
        self.x = x
        self.t = {k: jnp.asarray(v) for k, v in tangents.items()}
        self.g = jnp.asarray(to_host(case.grad_output, dtype))

    def f(self, x):
        fn = getattr(wce_jax, self.case.loss)
        kwargs = dict(self.rest, **x)
        if "input" in kwargs:
            first = kwargs.pop("input")
            return fn(first, **kwargs)
        return fn(**kwargs)

    def check(self, what, got, key, transform):
        want = self.case.expected[key]
        if key.startswith(("hvp_input", "grad_input")):
            got = self.restore(np.asarray(got, np.float64))
        result = compare(np.asarray(got, np.float64), want, self.dtype)
        assert result.ok, f"{self.case.id} {self.dtype} {transform} {what}: {result.reason}"

    def check_grads(self, grads, transform):
        for name in self.names:
            self.check(name, grads[name], f"grad_{name}", transform)

    def check_hvp(self, hvp, transform):
        for name in self.names:
            self.check(name, hvp[name], f"hvp_{name}", transform)


def contract_out(g, jac):
    """``sum_o g[o] * jac[o, ...]``: a Jacobian (output axes first) applied to a cotangent."""
    return jnp.tensordot(g, jac, axes=g.ndim)


def contract_in(jac, t):
    """``sum_j jac[..., j] * t[j]``: a Jacobian (input axes last) applied to a tangent."""
    return jnp.tensordot(jac, t, axes=t.ndim)


def hvp_forward_over_reverse(p):
    def grad_along_g(x):
        return jax.vjp(p.f, x)[1](p.g)[0]
    return lambda x, t: jax.jvp(grad_along_g, (x,), (t,))[1]


def hvp_reverse_over_forward(p):
    def jvp_out(x, t):
        return jax.jvp(p.f, (x,), (t,))[1]
    return lambda x, t: jax.vjp(lambda x: jvp_out(x, t), x)[1](p.g)[0]


def hvp_from_hessian(p, hessian):
    def hvp(x, t):
        h = hessian(p.f)(x)  # h[a][b]: output axes, then a's, then b's
        return {a: contract_out(p.g, sum(contract_in(h[a][b], t[b]) for b in p.names))
                for a in p.names}
    return hvp


def grads_from_jacobian(p, jacobian):
    return lambda x: {a: contract_out(p.g, j) for a, j in jacobian(p.f)(x).items()}


def jvp(p):
    return lambda x, t: jax.jvp(p.f, (x,), (t,))[1]


def linearized(p):
    return lambda x, t: jax.linearize(p.f, x)[1](t)


def per_sample_grads(p):
    return lambda x: jax.vjp(p.f, x)[1](p.g)[0]


def batched(x, t, fn, with_tangent):
    """``fn`` under ``vmap`` over a batch of two: the case and the case with its tangent
    (and so its JVP and HVP) negated; returns the first and the negated second."""
    x2 = jax.tree.map(lambda a: jnp.stack([a, a]), x)
    if with_tangent:
        t2 = jax.tree.map(lambda a: jnp.stack([a, -a]), t)
        out = jax.vmap(fn)(x2, t2)
        return jax.tree.map(lambda a: a[0], out), jax.tree.map(lambda a: -a[1], out)
    out = jax.vmap(fn)(x2)
    return jax.tree.map(lambda a: a[0], out), jax.tree.map(lambda a: a[1], out)


def transforms(p, dtype):
    """Every transform's result for the case, as ``{"kind|transform": result}`` (kind:
    output, jvp, grad or hvp), from one jitted function: one compilation per case and
    dtype."""

    def run(x, t):
        value, tangent = jax.jvp(p.f, (x,), (t,))
        out = {"output|jax.jvp": value, "jvp|jax.jvp": tangent,
               "jvp|jax.linearize": linearized(p)(x, t),
               "hvp|jvp of vjp": hvp_forward_over_reverse(p)(x, t),
               "hvp|vjp of jvp": hvp_reverse_over_forward(p)(x, t),
               "grad|jax.jacfwd": grads_from_jacobian(p, jax.jacfwd)(x),
               "grad|jax.jacrev": grads_from_jacobian(p, jax.jacrev)(x)}
        hessians = (("jacfwd(jacrev)", lambda f: jax.jacfwd(jax.jacrev(f))),
                    ("jacrev(jacrev)", lambda f: jax.jacrev(jax.jacrev(f))))
        for name, hessian in hessians:
            out[f"hvp|{name}"] = hvp_from_hessian(p, hessian)(x, t)
        batch = [("jvp", "jax.jvp", jvp(p), True),
                 ("jvp", "jax.linearize", linearized(p), True),
                 ("hvp", "jvp of vjp", hvp_forward_over_reverse(p), True),
                 ("grad", "jax.jacfwd", grads_from_jacobian(p, jax.jacfwd), False),
                 ("grad", "jax.jacrev", grads_from_jacobian(p, jax.jacrev), False),
                 ("grad", "per-sample gradients", per_sample_grads(p), False)]
        if dtype == "float64":
            batch += [("hvp", name, hvp_from_hessian(p, h), True) for name, h in hessians]
        for kind, name, fn, with_tangent in batch:
            for i, got in enumerate(batched(x, t, fn, with_tangent)):
                out[f"{kind}|vmap({name})[{i}]"] = got
        return out

    return jax.jit(run)(p.x, p.t)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.id)
def test_every_transform_against_the_goldens(case, dtype):
    with jax.enable_x64(True):
        p = Problem(case, dtype)
        results = transforms(p, dtype)
    for key, got in results.items():
        kind, transform = key.split("|")
        if kind == "output":
            p.check("output", got, "output", transform)
        elif kind == "jvp":
            p.check("jvp", got, "jvp_output", transform)
        elif kind == "grad":
            p.check_grads(got, transform)
        else:
            p.check_hvp(got, transform)


@pytest.mark.parametrize("alpha", [None, 0.25])
@pytest.mark.parametrize("gamma", [0.0, 0.5, 1.0, 2.0])
def test_sigmoid_focal_target_derivatives_against_finite_differences(alpha, gamma):
    """The target's gradient and Hessian-vector product (soft labels), which no golden
    case carries, against central differences of the loss and of its gradient."""
    rng = np.random.default_rng(7)
    x = rng.normal(size=(4, 3)) * 3.0
    y, t = rng.uniform(0.05, 0.95, size=(4, 3)), rng.normal(size=(4, 3))

    def loss(y):
        return wce_jax.sigmoid_focal_loss(jnp.asarray(x), y, alpha=-1.0 if alpha is None
                                          else alpha, gamma=gamma, reduction="sum")

    with jax.enable_x64(True):
        grad = jax.grad(loss)
        h = 1e-6
        fd_grad = np.array([(loss(jnp.asarray(y + h * e)) - loss(jnp.asarray(y - h * e)))
                            / (2 * h) for e in np.eye(y.size).reshape(-1, *y.shape)])
        np.testing.assert_allclose(np.asarray(grad(jnp.asarray(y))).ravel(), fd_grad,
                                   rtol=1e-7, atol=1e-9)
        hvp = jax.jvp(grad, (jnp.asarray(y),), (jnp.asarray(t),))[1]
        fd_hvp = (grad(jnp.asarray(y + h * t)) - grad(jnp.asarray(y - h * t))) / (2 * h)
        np.testing.assert_allclose(np.asarray(hvp), np.asarray(fd_hvp), rtol=1e-6, atol=1e-8)
