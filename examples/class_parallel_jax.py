"""A language-model head trained with its vocabulary split over devices, on 8 host devices.

    python examples/class_parallel_jax.py [--steps 50] [--dtype float64] [--json PATH]

Trains one small next-token model (embedding, a tanh layer, an lm-head of V=64 rows) with
class weights and label smoothing, from the same start on the same batches, two ways:

* ``single``: one device, the whole batch, ``wce_jax.linear_cross_entropy``;
* ``class_parallel``: ``shard_map`` over a dp=2 x tp=4 mesh: each device holds half of
  the batch and a quarter of the lm-head's rows and class weights, and calls the same
  function with ``axis_name="dp", class_axis_name="tp"`` [CP-AXIS]. Its loss and
  gradients are those of the single device [CP-GLOBAL] [CP-SMOOTH].

Beside the class-parallel run, at the parameters of every step, it evaluates
Megatron-LM's vocabulary-parallel smoothing formula (``smoothing = eps * Vl / (Vl - 1)``
and the mean of the log-probabilities of the shard's own ``Vl`` classes, as the first
shard reports it) with one, two and four shards: the same model and batch give a
different loss for each, where wce's is the same. It prints the largest relative
differences and writes the curves as JSON with ``--json PATH``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import sys


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float64")
    parser.add_argument("--json", help="write the curves and differences here")
    args = parser.parse_args(argv)
    os.environ["XLA_FLAGS"] = (os.environ.get("XLA_FLAGS", "") +
                               " --xla_force_host_platform_device_count=8")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    import wce_jax

    jax.config.update("jax_enable_x64", args.dtype == "float64")
    dtype = jnp.dtype(args.dtype)
    vocab, dim, rows, eps = 64, 16, 128, 0.1

    rng = np.random.RandomState(0)
    frequency = 1.0 / np.arange(1, vocab + 1)  # Zipf-like token frequencies
    frequency /= frequency.sum()
    successor = rng.permutation(vocab)  # the next token mostly follows the current one

    def batch(step):
        r = np.random.RandomState(step)
        tokens = r.choice(vocab, rows, p=frequency)
        follows = r.random_sample(rows) < 0.7
        targets = np.where(follows, successor[tokens], r.choice(vocab, rows, p=frequency))
        targets[r.random_sample(rows) < 0.1] = -100  # padding
        return jnp.asarray(tokens), jnp.asarray(targets)

    class_weight = wce_jax.class_weights(jnp.asarray(frequency * 1e5), "inverse_sqrt",
                                         normalize="classes").astype(dtype)
    params = {"embed": jnp.asarray(rng.standard_normal((vocab, dim)) * 0.5, dtype),
              "layer": jnp.asarray(rng.standard_normal((dim, dim)) / np.sqrt(dim), dtype),
              "head": jnp.asarray(rng.standard_normal((vocab, dim)) * 0.1, dtype)}

    def hidden(params, tokens):
        return jnp.tanh(params["embed"][tokens] @ params["layer"])

    def loss_fn(params, class_weight, tokens, targets, **names):
        return wce_jax.linear_cross_entropy(hidden(params, tokens), params["head"], targets,
                                            class_weight=class_weight, label_smoothing=eps,
                                            **names)

    mesh = Mesh(np.array(jax.devices()).reshape(2, 4), ("dp", "tp"))
    param_specs = {"embed": P(), "layer": P(), "head": P("tp", None)}
    sharded_grad = jax.shard_map(
        lambda p, w, x, y: jax.value_and_grad(loss_fn)(p, w, x, y, axis_name="dp",
                                                       class_axis_name="tp"),
        mesh=mesh, in_specs=(param_specs, P("tp"), P("dp"), P("dp")),
        out_specs=(P(), param_specs))

    def sgd(grad_fn):
        @jax.jit
        def step(params, tokens, targets):
            loss, grads = grad_fn(params, class_weight, tokens, targets)
            return loss, jax.tree.map(lambda p, g: p - 2.0 * g, params, grads)
        return step

    @functools.partial(jax.jit, static_argnames="shards")
    def megatron(params, tokens, targets, shards):
        """Megatron-LM's smoothed vocabulary-parallel loss as its first shard reports it
        (no class weights: it has none), the mean over the valid targets."""
        logits = hidden(params, tokens) @ params["head"].T
        lp = jax.nn.log_softmax(logits, axis=-1)
        local = vocab // shards
        smoothing = eps * local / (local - 1)
        valid = targets != -100
        nll = -jnp.take_along_axis(lp, jnp.where(valid, targets, 0)[:, None], axis=-1)[:, 0]
        losses = (1.0 - smoothing) * nll - smoothing * jnp.mean(lp[:, :local], axis=-1)
        return jnp.sum(jnp.where(valid, losses, 0.0)) / jnp.sum(valid)

    curves = {"single": [], "class_parallel": [], "megatron_tp1": [], "megatron_tp2": [],
              "megatron_tp4": []}
    for name, step in (("single", sgd(jax.value_and_grad(loss_fn))),
                       ("class_parallel", sgd(sharded_grad))):
        p = params
        for i in range(args.steps):
            tokens, targets = batch(i)
            if name == "class_parallel":
                for shards in (1, 2, 4):
                    curves[f"megatron_tp{shards}"].append(
                        float(megatron(p, tokens, targets, shards)))
            loss, p = step(p, tokens, targets)
            curves[name].append(float(loss))

    def max_rel(a, b):
        a, b = np.asarray(a), np.asarray(b)
        return float(np.max(np.abs(a - b) / np.abs(b)))

    report = {"class_parallel_vs_single": max_rel(curves["class_parallel"], curves["single"]),
              "megatron_tp2_vs_tp1": max_rel(curves["megatron_tp2"], curves["megatron_tp1"]),
              "megatron_tp4_vs_tp1": max_rel(curves["megatron_tp4"], curves["megatron_tp1"])}
    print(f"8 devices (dp=2 x tp=4) vs one, {args.steps} SGD steps, {rows} rows, V={vocab}, "
          f"label_smoothing={eps}, class weights, {args.dtype}")
    print(f"loss after the last step: single {curves['single'][-1]:.12f}, class-parallel "
          f"{curves['class_parallel'][-1]:.12f}")
    print(f"wce class-parallel vs one device, max relative difference: "
          f"{report['class_parallel_vs_single']:.2e}")
    for shards in (2, 4):
        print(f"Megatron's smoothing, tp={shards} vs tp=1 on the same parameters: "
              f"{report[f'megatron_tp{shards}_vs_tp1']:.2e}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"curves": curves, "max_relative_difference": report}, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
