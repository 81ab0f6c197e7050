"""Run in a subprocess with 8 host devices (tests/test_class_parallel.py): wce_jax losses
with the class axis split over a mesh axis (class_axis_name, under shard_map), on the
meshes tp=8, tp=2 and dp=2 x tp=4, against the unsplit single-device loss. Prints one JSON
object: per case the largest relative differences of value and gradients (float64), and
the all-reduces each compiled forward pass holds.
"""

from __future__ import annotations

import itertools
import json
import os
import re

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, PartitionSpec as P  # noqa: E402

import wce_jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
ROWS, CLASSES, FEATURES = 16, 24, 5
CE = os.environ.get("CP_SKIP_CE") is None
MESHES = {"tp8": (1, 8), "tp2": (1, 2), "dp2xtp4": (2, 4)}


def problem():
    """Rows 0-7 (data shard 0 of dp=2) all ignored; no target in classes 3-5 (a class
    shard of tp=8 owns no target); class 7 has zero weight and is a target; the logits'
    scale is large, so unshifted sums would overflow."""
    rng = np.random.RandomState(0)
    x = rng.standard_normal((ROWS, FEATURES))
    y = rng.choice([c for c in range(CLASSES) if c not in (3, 4, 5)], ROWS)
    y[:ROWS // 2] = -100
    y[ROWS // 2 + 1] = 7
    y[ROWS // 2 + 4] = -100
    params = 40.0 * rng.standard_normal((FEATURES, CLASSES))
    weight = rng.uniform(0.25, 4.0, CLASSES)
    weight[7] = 0.0
    ct = rng.standard_normal(ROWS)
    return jnp.asarray(x), jnp.asarray(y), jnp.asarray(params), jnp.asarray(weight), \
        jnp.asarray(ct)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    assert np.array_equal(np.isnan(a), np.isnan(b)), (a, b)
    keep = ~np.isnan(b)
    scale = np.max(np.abs(b[keep])) if keep.any() else 1.0
    return float(np.max(np.abs(a[keep] - b[keep])) / scale) if keep.any() else 0.0


def all_reduces(fn, *args):
    """The compiled program's all-reduces by the size of their device groups: on the
    dp=2 x tp=4 mesh, 4 is the class axis and 2 the data axis."""
    hlo = fn.lower(*args).compile().as_text()
    counts = {}
    for groups in re.findall(r" all-reduce(?:-start)?\(.*?replica_groups=\{\{([0-9,]+)\}", hlo):
        size = str(len(groups.split(",")))
        counts[size] = counts.get(size, 0) + 1
    return counts


def cross_entropy_case(mesh, dp, reduction, eps, weighted, data, count=False):
    x, y, params, weight, ct = data
    data_axis = "dp" if dp > 1 else None

    def loss(params, weight, x, y, ct, **names):
        out = wce_jax.cross_entropy(x @ params, y, weight=weight if weighted else None,
                                    reduction=reduction, label_smoothing=eps, **names)
        return (jnp.sum(out * ct), out) if reduction == "none" else (out, out)

    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    (_, want), (want_p, want_w) = grad(params, weight, x, y, ct)

    rows = P("dp") if dp > 1 else P()
    def sharded(*args):
        (_, value), grads = grad(*args, axis_name=data_axis, class_axis_name="tp")
        return value, grads

    step = jax.jit(jax.shard_map(
        sharded, mesh=mesh, in_specs=(P(None, "tp"), P("tp"), rows, rows, rows),
        out_specs=(rows if reduction == "none" else P(), (P(None, "tp"), P("tp")))))
    got, (got_p, got_w) = step(params, weight, x, y, ct)
    errors = [rel(got, want), rel(got_p, want_p)] + ([rel(got_w, want_w)] if weighted else [])
    if not count:
        return errors
    forward = jax.jit(jax.shard_map(
        lambda *a: loss(*a, axis_name=data_axis, class_axis_name="tp")[1], mesh=mesh,
        in_specs=(P(None, "tp"), P("tp"), rows, rows, rows),
        out_specs=rows if reduction == "none" else P()))
    return errors, all_reduces(forward, params, weight, x, y, ct)


def linear_case(mesh, dp, reduction, eps, z_loss, softcap, data, count=False):
    x, y, params, weight, ct = data
    data_axis = "dp" if dp > 1 else None

    def loss(hidden, lm_head, class_weight, y, ct, **names):
        out = wce_jax.linear_cross_entropy(
            hidden, lm_head, y, class_weight=class_weight, reduction=reduction,
            label_smoothing=eps, z_loss=z_loss, softcap=softcap, chunk_size=3, **names)
        return (jnp.sum(out * ct), out) if reduction == "none" else (out, out)

    grad = jax.value_and_grad(loss, argnums=(0, 1), has_aux=True)
    lm_head = params.T
    (_, want), (want_h, want_l) = grad(x, lm_head, weight, y, ct)

    rows = P("dp") if dp > 1 else P()

    def sharded(*args):
        (_, value), grads = grad(*args, axis_name=data_axis, class_axis_name="tp")
        return value, grads

    step = jax.jit(jax.shard_map(
        sharded, mesh=mesh, in_specs=(rows, P("tp", None), P("tp"), rows, rows),
        out_specs=(rows if reduction == "none" else P(), (rows, P("tp", None)))))
    got, (got_h, got_l) = step(x, lm_head, weight, y, ct)
    errors = [rel(got, want), rel(got_h, want_h), rel(got_l, want_l)]
    if not count:
        return errors
    forward = jax.jit(jax.shard_map(
        lambda *a: loss(*a, axis_name=data_axis, class_axis_name="tp")[1], mesh=mesh,
        in_specs=(rows, P("tp", None), P("tp"), rows, rows),
        out_specs=rows if reduction == "none" else P()))
    return errors, all_reduces(forward, x, lm_head, weight, y, ct)


def main():
    data = problem()
    out = {"devices": len(jax.devices()), "cross_entropy": {}, "all_reduces": {}}
    every = list(itertools.product(("none", "sum", "mean"), (0.0, 0.1), (False, True)))
    some = [("none", 0.1, True), ("sum", 0.0, False), ("mean", 0.1, True)]
    for name, (dp, tp) in MESHES.items():
        mesh = Mesh(np.array(jax.devices()[:dp * tp]).reshape(dp, tp), ("dp", "tp"))
        for reduction, eps, weighted in (every if dp > 1 else some) if CE else ():
            key = f"{name}/{reduction}/eps={eps}/weighted={weighted}"
            out["cross_entropy"][key] = cross_entropy_case(mesh, dp, reduction, eps,
                                                           weighted, data)
    out["linear_cross_entropy"] = {}
    settings = [("mean", 0.1, 1e-2, None), ("none", 0.1, 1e-2, 30.0), ("sum", 0.0, 0.0, 30.0)]
    for name, (dp, tp) in MESHES.items():
        mesh = Mesh(np.array(jax.devices()[:dp * tp]).reshape(dp, tp), ("dp", "tp"))
        for reduction, eps, z_loss, softcap in settings:
            key = f"{name}/{reduction}/eps={eps}/z_loss={z_loss}/softcap={softcap}"
            out["linear_cross_entropy"][key] = linear_case(mesh, dp, reduction, eps, z_loss,
                                                           softcap, data)
    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("dp", "tp"))
    for eps in (0.0, 0.1):  # the forward pass's all-reduces: class axis, then data axis
        _, count = cross_entropy_case(mesh, 2, "mean", eps, True, data, count=True)
        out["all_reduces"][f"cross_entropy/dp2xtp4/mean/eps={eps}"] = count
    for reduction in ("none", "mean"):  # the scan's body counts once, for every chunk
        _, count = linear_case(mesh, 2, reduction, 0.1, 1e-2, 30.0, data, count=True)
        out["all_reduces"][f"linear_cross_entropy/dp2xtp4/{reduction}"] = count
    print(json.dumps(out))


if __name__ == "__main__":
    main()
