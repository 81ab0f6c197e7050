"""Per-device memory of the class-parallel linear cross-entropy [CP-LINEAR].

Compiles the training step (loss, d hidden, d weight; float32) of
``wce_jax.linear_cross_entropy`` at N=8192 rows, D=1024, V=32768 classes: unsplit on one
device, and with the lm-head's rows split over tp=4 host devices under ``shard_map``
(``class_axis_name``), and prints the compiled temporaries of each (XLA's buffer
assignment, per device; see benchmarks/memory.py) and their ratio, as JSON. Nothing
runs: the figures come from the compiler, the same on every run.

    python -m benchmarks.class_parallel_memory [--rows 8192 --dim 1024 --vocab 32768 --tp 4]
"""

from __future__ import annotations

import argparse
import json
import os
import sys


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=8192)
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--vocab", type=int, default=32768)
    parser.add_argument("--tp", type=int, default=4)
    args = parser.parse_args(argv)
    os.environ.setdefault("XLA_FLAGS", f"--xla_force_host_platform_device_count={args.tp}")

    import jax
    import jax.numpy as jnp
    import numpy as np
    from jax.sharding import Mesh, PartitionSpec as P

    import wce_jax
    from benchmarks.memory import jax_temp_bytes

    if len(jax.devices()) < args.tp:
        sys.exit(f"needs {args.tp} devices, found {len(jax.devices())}: set XLA_FLAGS="
                 f"--xla_force_host_platform_device_count={args.tp} before starting")
    hidden = jax.ShapeDtypeStruct((args.rows, args.dim), jnp.float32)
    weight = jax.ShapeDtypeStruct((args.vocab, args.dim), jnp.float32)
    target = jax.ShapeDtypeStruct((args.rows,), jnp.int32)

    def step(h, w, y, **names):
        return jax.value_and_grad(
            lambda h, w: wce_jax.linear_cross_entropy(h, w, y, label_smoothing=0.1,
                                                      z_loss=1e-4, **names),
            argnums=(0, 1))(h, w)

    unsplit = jax_temp_bytes(jax.jit(step), hidden, weight, target)
    mesh = Mesh(np.array(jax.devices()[:args.tp]), ("tp",))
    sharded = jax.jit(jax.shard_map(
        lambda h, w, y: step(h, w, y, class_axis_name="tp"), mesh=mesh,
        in_specs=(P(), P("tp", None), P()), out_specs=(P(), (P(), P("tp", None)))))
    per_device = jax_temp_bytes(sharded, hidden, weight, target)
    report = {"rows": args.rows, "dim": args.dim, "vocab": args.vocab, "tp": args.tp,
              "unsplit_temp_bytes": unsplit, "class_parallel_temp_bytes_per_device":
              per_device, "ratio": per_device / unsplit}
    print(json.dumps(report))
    return report


if __name__ == "__main__":
    main()
