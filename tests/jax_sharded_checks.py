"""Run in a subprocess with 8 host devices (tests/test_data_parallel.py): wce_jax losses
under jit with sharded inputs, under shard_map with axis_name, and under pmap, against the
single-device loss of the concatenated batch. Prints one JSON object of the largest
relative differences of value and gradient (float64)."""

from __future__ import annotations

import json
import os

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P  # noqa: E402

import wce_jax  # noqa: E402

jax.config.update("jax_enable_x64", True)
DEVICES, PER_DEVICE, CLASSES, FEATURES = 8, 6, 5, 7


def batch():
    """Shards whose valid weight sums differ widely; one shard is entirely ignored."""
    rng = np.random.RandomState(0)
    x = rng.standard_normal((DEVICES * PER_DEVICE, FEATURES))
    y = rng.randint(0, CLASSES, DEVICES * PER_DEVICE)
    y[:PER_DEVICE] = CLASSES - 1            # shard 0: only the heaviest class
    y[PER_DEVICE:2 * PER_DEVICE] = -100     # shard 1: all ignored
    y[2 * PER_DEVICE::3] = -100
    return jnp.asarray(x), jnp.asarray(y)


WEIGHT = jnp.asarray([0.25, 0.5, 1.0, 2.0, 8.0])
PARAMS = jnp.asarray(np.random.RandomState(1).standard_normal((FEATURES, CLASSES)))


def loss_fn(params, x, y, axis_name=None):
    return wce_jax.cross_entropy(x @ params, y, weight=WEIGHT, label_smoothing=0.1,
                                 axis_name=axis_name)


def rel(a, b):
    a, b = np.asarray(a), np.asarray(b)
    return float(np.max(np.abs(a - b)) / np.max(np.abs(b)))


def main():
    x, y = batch()
    value, grad = jax.value_and_grad(loss_fn)(PARAMS, x, y)
    mesh = Mesh(np.array(jax.devices()), ("data",))
    out = {"devices": len(jax.devices())}

    # jit with sharded inputs: the compiler inserts the reductions, no argument needed.
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    ys = jax.device_put(y, NamedSharding(mesh, P("data")))
    v, g = jax.jit(jax.value_and_grad(loss_fn))(PARAMS, xs, ys)
    out["jit_sharded"] = [rel(v, value), rel(g, grad)]

    # shard_map with axis_name: replicated parameters get the global gradient.
    sharded = jax.shard_map(
        lambda p, x, y: jax.value_and_grad(loss_fn)(p, x, y, axis_name="data"),
        mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P()))
    v, g = jax.jit(sharded)(PARAMS, xs, ys)
    out["shard_map"] = [rel(v, value), rel(g, grad)]

    # pmap: every device returns the global value; the usual recipe, pmean of the
    # per-device gradients, gives the global gradient.
    xp, yp = x.reshape(DEVICES, PER_DEVICE, -1), y.reshape(DEVICES, PER_DEVICE)

    def pmap_step(p, x, y):
        v, g = jax.value_and_grad(loss_fn)(p, x, y, axis_name="d")
        return v, jax.lax.pmean(g, "d")

    v, g = jax.pmap(pmap_step, axis_name="d", in_axes=(None, 0, 0))(PARAMS, xp, yp)
    out["pmap"] = [max(rel(v[i], value) for i in range(DEVICES)),
                   max(rel(g[i], grad) for i in range(DEVICES))]

    # The fused linear cross-entropy: hidden states sharded, the output layer replicated.
    def linear(w, x, y, axis_name=None):
        return wce_jax.linear_cross_entropy(x, w.T, y, class_weight=WEIGHT, z_loss=1e-2,
                                            label_smoothing=0.1, chunk_size=4,
                                            axis_name=axis_name)

    value_l, grad_l = jax.value_and_grad(linear)(PARAMS, x, y)
    sharded_l = jax.shard_map(
        lambda w, x, y: jax.value_and_grad(linear)(w, x, y, axis_name="data"),
        mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P()))
    v, g = jax.jit(sharded_l)(PARAMS, xs, ys)
    out["linear_shard_map"] = [rel(v, value_l), rel(g, grad_l)]

    # The pitfall: the mean of per-shard means (what averaging per-device losses gives).
    per_shard = jax.vmap(lambda x, y: loss_fn(PARAMS, x, y))(xp, yp)
    out["mean_of_means"] = rel(jnp.nanmean(per_shard), value)
    out["mean_of_means_is_nan"] = bool(np.isnan(np.asarray(per_shard.mean())))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
