"""Run the golden cases in worker processes: the same records as :func:`runner.run`, in
the same order, sooner on a machine with more than one core.

The work is cut into chunks of one implementation, one dtype and a few dozen cases; each
worker loads the implementation and the cases once, runs a chunk, and frees the
implementation's compiled programs after it (``Adapter.release``). Workers are started
with ``spawn``: JAX and PyTorch hold threads, and a forked copy of them is not safe.
"""

from __future__ import annotations

import concurrent.futures
import functools
import multiprocessing
import os
from pathlib import Path
from typing import Callable

from conformance import adapters, golden, runner
from conformance.golden import Case

CHUNK = 40  # cases a chunk: small enough to balance the workers and show progress


def default_jobs() -> int:
    """Worker processes by default: one per core the process may use."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def load(source: str | None) -> list[Case]:
    """The cases of ``source``: a folder or file of golden cases, or the installed ones."""
    if source is None:
        return golden.load_cases()
    path = Path(source)
    return golden.load_file(path) if path.is_file() else golden.load_cases(path)


@functools.lru_cache(maxsize=4)
def _cases(source: str | None) -> dict[str, Case]:
    return {c.id: c for c in load(source)}


def loadable(loaded: list[adapters.Adapter]) -> bool:
    """Whether a worker process can load each of these adapters by its name."""
    return all(type(a).__module__ == adapters.KNOWN.get(a.name) for a in loaded)


def _work(name: str, dtype: str, case_ids: tuple[str, ...], source: str | None):
    adapter = adapters.load(name)
    cases = _cases(source)
    try:
        return [runner.run_case(adapter, cases[i], dtype) for i in case_ids]
    finally:
        adapter.release()


def run(names: list[str], cases: list[Case], dtypes: list[str], source: str | None,
        jobs: int, progress: Callable[[int], None] | None = None) -> list[runner.Record]:
    """Like ``runner.run([adapters.load(n) for n in names], cases, dtypes)``; ``cases``
    must come from ``load(source)``."""
    chunks = []
    for name in names:
        for dtype in dtypes:
            ids = [c.id for c in cases if dtype in c.dtypes]
            chunks += [(name, dtype, tuple(ids[i:i + CHUNK]))
                       for i in range(0, len(ids), CHUNK)]
    results: dict[int, list[runner.Record]] = {}
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(min(jobs, len(chunks)) or 1,
                                                mp_context=context) as pool:
        futures = {pool.submit(_work, name, dtype, ids, source): k
                   for k, (name, dtype, ids) in enumerate(chunks)}
        for future in concurrent.futures.as_completed(futures):
            k = futures[future]
            results[k] = future.result()
            if progress:
                progress(len(results[k]))
    return [r for k in range(len(chunks)) for r in results[k]]
