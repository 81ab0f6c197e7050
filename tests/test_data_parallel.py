"""[DP-GLOBAL] on real data-parallel engines: JAX with 8 host devices (jit with sharded
inputs, shard_map with axis_name, pmap) and torch.distributed with 2 and 4 gloo
processes under DistributedDataParallel, against one worker on the concatenated batch.

The shards' sums of valid target weights differ widely and one shard has every target
ignored, so the mean of per-shard means (DDP's default) is visibly wrong (NaN, even).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
import torch.multiprocessing as mp  # noqa: E402

from tests import torch_ddp_worker  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def test_jax_sharded_losses_equal_single_device():
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "tests" / "jax_sharded_checks.py")],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    out = json.loads(run.stdout.strip().splitlines()[-1])
    assert out["devices"] == 8
    for mode in ("jit_sharded", "shard_map", "pmap", "linear_shard_map"):
        value_err, grad_err = out[mode]
        assert value_err <= 1e-12 and grad_err <= 1e-12, (mode, out[mode])
    assert out["mean_of_means_is_nan"] and out["mean_of_means"] > 0.1


def _run_ddp(world_size, tmp_path):
    mp.spawn(torch_ddp_worker.rank_main, args=(world_size, str(tmp_path / "init"),
                                               str(tmp_path)), nprocs=world_size, join=True)
    return [torch.load(tmp_path / f"rank{r}.pt") for r in range(world_size)]


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("world_size", [2, 4])
def test_torch_ddp_gradients_equal_the_global_weighted_mean(world_size, tmp_path):
    net = torch_ddp_worker.model()
    x, y = torch_ddp_worker.batch(world_size)
    expected_loss = torch_ddp_worker.loss(net, x, y, None)
    expected_loss.backward()
    expected = [p.grad for p in net.parameters()]

    ranks = _run_ddp(world_size, tmp_path)
    for result in ranks:  # every rank: the global loss, and DDP's averaged gradients
        assert _rel(result["global"]["loss"], expected_loss.detach()) <= 1e-10
        for got, want in zip(result["global"]["grads"], expected):
            assert _rel(got, want) <= 1e-10

    naive = [r["per_rank"] for r in ranks]  # DDP's default: per-rank means, averaged
    assert any(torch.isnan(r["loss"]) for r in naive)  # the all-ignored rank
    assert max(_rel(got, want) for got, want in zip(naive[0]["grads"], expected)) > 0.05


def test_data_parallel_demo_matches_the_single_device_curve(tmp_path):
    out = tmp_path / "curves.json"
    env = dict(os.environ,
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    run = subprocess.run([sys.executable, str(ROOT / "examples" / "data_parallel_jax.py"),
                          "--steps", "20", "--dtype", "float64", "--json", str(out)],
                         capture_output=True, text=True, env=env, timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads(out.read_text())["max_relative_difference"]
    assert report["global"] <= 1e-10
    assert report["mean_of_means"] > 0.01
