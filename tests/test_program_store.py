"""The conformance runner's store of compiled JAX programs (``runners.stored_program``):
a second run of a case reuses the program the first compiled, without tracing it, and
anything that could make that program stale compiles afresh."""

from __future__ import annotations

import random

import numpy as np
import pytest

pytest.importorskip("jax")

import wce_jax  # noqa: E402
from conformance import golden  # noqa: E402
from conformance.adapters import runners  # noqa: E402

#: A case with gradients, JVP and HVP: its traced program is the largest kind ("all").
CASE = next(c for c in golden.load_cases()
            if c.loss == "cross_entropy" and c.tangents and not c.is_error)


@pytest.fixture
def loss():
    """wce_jax's cross-entropy times a number no other test uses, so that its compiled
    program is new to JAX's own persistent cache too (a program JAX takes from there is
    not stored, see ``test_a_program_from_jax_own_cache_is_not_stored``)."""
    scale = 1.0 + random.random()
    return lambda x, target, **options: scale * wce_jax.cross_entropy(x, target, **options)


@pytest.fixture
def store(tmp_path, monkeypatch):
    """An empty store in a temporary folder; nothing compiled held in memory."""
    monkeypatch.setenv("WCE_JAX_CACHE", str(tmp_path))
    runners.release_jax()
    yield tmp_path / "programs"
    runners.release_jax()


class NotToBeTraced:
    """Stands for a step that must not be traced."""

    def __call__(self, *args):
        raise AssertionError("traced a program that the store holds")


def run(loss, fingerprint="code"):
    outcome = runners.run_jax(loss, CASE, "float32", traced=True, derivatives=True,
                              fingerprint=fingerprint)
    return outcome.output, outcome.grad_input, outcome.jvp[0], outcome.hvps["input"][0]


def stored(store):
    return sorted(store.iterdir()) if store.exists() else []


def test_a_second_run_neither_traces_nor_compiles(store, loss, monkeypatch):
    first = run(loss)
    assert len(stored(store)) == 1
    runners.release_jax()
    monkeypatch.setattr(runners, "_step", lambda *args: NotToBeTraced())
    second = run(loss)
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)


def test_other_code_compiles_afresh(store, loss):
    run(loss, fingerprint="code")
    runners.release_jax()
    run(loss, fingerprint="changed code")
    assert len(stored(store)) == 2


def test_an_unreadable_program_is_compiled_again(store, loss):
    run(loss)
    (path,) = stored(store)
    path.write_bytes(b"not a program")
    runners.release_jax()
    run(loss)
    assert path.read_bytes() != b"not a program"


def test_a_program_from_jax_own_cache_is_not_stored(store, loss, monkeypatch):
    """jaxlib 0.10 serializes such a program without some of its kernels ("Function ...
    not found" when it is loaded in another process). Here JAX reports a hit for every
    compile, the second one under a name of its own included."""
    hits = iter(range(100))
    monkeypatch.setattr(runners, "_persistent_cache_hits", lambda: next(hits))
    run(loss)
    assert not stored(store)


def test_without_a_fingerprint_nothing_is_stored(store, loss):
    runners.run_jax(loss, CASE, "float32", traced=True)
    assert not stored(store)


def test_off_turns_the_store_off(monkeypatch, loss):
    monkeypatch.setenv("WCE_JAX_CACHE", "off")
    assert runners.cache_folder() is None
    runners.release_jax()
    run(loss)
    runners.release_jax()
