"""Data-parallel training with the global weighted mean, on 8 host devices.

    python examples/data_parallel_jax.py [--steps 100] [--devices 8]

Trains one small classifier three ways from the same start, on the same batches:

* ``single``: one device, the whole batch, ``wce_jax.cross_entropy(weight=w)``;
* ``global``: ``shard_map`` over the devices, each with its shard of the batch and
  ``axis_name="data"``: the loss sums numerator and denominator over the devices, so the
  loss and the gradient are the single-device ones [DP-AXIS];
* ``mean_of_means``: each device's own weighted mean, gradients averaged over devices
  (what averaging per-device losses amounts to): a different, wrong objective whenever
  the devices' sums of valid target weights differ.

Each curve is the global weighted loss of the parameters that method has reached, on the
step's whole batch. It prints the largest relative difference of each curve from the
single-device one and writes the curves as JSON with ``--json PATH``. The devices are CPU
host devices made by ``--xla_force_host_platform_device_count``, set before JAX starts.
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--json", help="write the curves and differences here")
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               f" --xla_force_host_platform_device_count={args.devices}")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    import wce_jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    dtype = jnp.dtype(args.dtype)

    classes, features, per_device = 5, 8, 16
    rng = np.random.RandomState(0)
    counts = np.array([0.6, 0.25, 0.1, 0.04, 0.01])  # an imbalanced label distribution
    centers = rng.standard_normal((classes, features)) * 2.0

    def batch(step):
        r = np.random.RandomState(step)
        y = r.choice(classes, args.devices * per_device, p=counts)
        x = centers[y] + r.standard_normal((y.size, features))
        y[r.random_sample(y.size) < 0.15] = -100  # padding-like ignored targets
        y[per_device:2 * per_device] = -100       # one device sees no valid target at all
        return jnp.asarray(x, dtype), jnp.asarray(y)

    weight = wce_jax.class_weights(jnp.asarray(counts * 1000), "balanced")
    params = {"w": jnp.asarray(rng.standard_normal((features, classes)) * 0.1, dtype),
              "b": jnp.zeros(classes, dtype)}

    def loss_fn(params, x, y, axis_name=None):
        return wce_jax.cross_entropy(x @ params["w"] + params["b"], y, weight=weight,
                                     label_smoothing=0.05, axis_name=axis_name)

    mesh = Mesh(np.array(jax.devices()[:args.devices]), ("data",))
    specs = dict(mesh=mesh, in_specs=(P(), P("data"), P("data")), out_specs=(P(), P()))

    def sgd(grad_fn):
        @jax.jit
        def step(params, x, y):
            _, grads = grad_fn(params, x, y)
            return loss_fn(params, x, y), jax.tree.map(lambda p, g: p - 0.5 * g, params, grads)
        return step

    def local_mean(params, x, y):  # each device's own mean; gradients averaged
        loss, grads = jax.value_and_grad(loss_fn)(params, x, y)
        return jax.lax.pmean(loss, "data"), jax.lax.pmean(grads, "data")

    steps = {
        "single": sgd(jax.value_and_grad(loss_fn)),
        "global": sgd(jax.shard_map(
            lambda p, x, y: jax.value_and_grad(loss_fn)(p, x, y, axis_name="data"), **specs)),
        "mean_of_means": sgd(jax.shard_map(local_mean, **specs)),
    }
    curves = {}
    for name, step in steps.items():
        p, curve = params, []
        for i in range(args.steps):
            loss, p = step(p, *batch(i))
            curve.append(float(loss))
        curves[name] = curve

    single = np.asarray(curves["single"])
    report = {name: float(np.max(np.abs(np.asarray(c) - single) / np.abs(single)))
              for name, c in curves.items() if name != "single"}
    print(f"{len(jax.devices())} devices, {args.steps} SGD steps, {per_device} rows per device, "
          f"{args.dtype}; one device never has a valid target")
    print(f"loss after the last step: single {single[-1]:.6f}, global "
          f"{curves['global'][-1]:.6f}, mean of means {curves['mean_of_means'][-1]:.6f}")
    for name, text in (("global", "global weighted mean (axis_name)"),
                       ("mean_of_means", "mean of per-device means")):
        print(f"{text:34s} max relative difference from single device: {report[name]:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"curves": curves, "max_relative_difference": report}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
