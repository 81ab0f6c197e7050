"""Deterministic memory measures: what a forward+backward needs beyond its inputs.

Neither measure reads the process's resident size, which depends on the allocator's
caching, on the operating system and on what ran before; both are functions of the
program and the shapes alone, so they are the same on every run and can be compared
between implementations of one framework.

JAX (``memory_kind="xla-temp"``): :func:`jax_temp_bytes` compiles the jitted function
for the given arguments and reads ``compiled.memory_analysis().temp_size_in_bytes``, the
size of the temporary buffers XLA's buffer assignment gives the program: everything it
holds at once besides its arguments and its outputs (the loss and the gradient). It is
decided at compile time, before anything runs.

PyTorch (``memory_kind="torch-peak"``): PyTorch has no compile-time plan and no CPU
counterpart of ``torch.cuda.max_memory_allocated``, so :func:`torch_peak_bytes` records
the CPU allocator's own events. With ``torch.profiler.profile(profile_memory=True)``
every allocation and free by c10's CPU allocator (each tensor's storage, and the buffers
kernels allocate internally) is reported to the profiler with its size, in program
order. Summing those sizes along the timeline gives the bytes allocated during the step
that are live at each point; the largest value is the peak beyond the inputs. Frees of
blocks allocated before profiling began are not reported (the allocator does not know
their size), so the inputs, allocated earlier, neither count nor cancel anything. The
sizes and their order are fixed by the operations the step runs, not by timing or by
the machine's load, so the result is the same on every run (measured: identical over
repeated runs and for 1, 2 and 4 threads in torch 2.13 on CPU). Two limits: the
allocator reports through the profiler's thread-local state, so an allocation by an
intra-op worker thread counts only where PyTorch hands that state to its workers (for
the cross-entropies here every event is on the calling thread, the same for any thread
count); and memory from other allocators (oneDNN scratchpads, the OpenMP runtime) is not
seen. The peak includes the
buffers the step returns, chiefly the logits-sized gradient (1.0x), so an implementation
that needs no logits-sized temporary scores about 1.0 and ``torch.nn.functional``'s
cross-entropy scores about 3.0 (log-softmax output, its gradient, the input gradient).
"""

from __future__ import annotations

import contextlib
import gc
import os
import sys
import warnings
from typing import Any, Callable


def jax_temp_bytes(fn: Callable, *args: Any) -> int:
    """Temporary bytes of ``fn`` compiled for ``args``, inputs and outputs excluded.

    ``fn`` is jitted unless it already is; compiling a jitted function here also fills
    its cache, so a later call with arguments like ``args`` runs this very program.
    """
    import jax

    jitted = fn if hasattr(fn, "lower") else jax.jit(fn)
    compiled = jitted.lower(*args).compile()
    analysis = compiled.memory_analysis()
    if analysis is None:  # a backend without the analysis
        raise RuntimeError("this JAX backend reports no memory analysis")
    return int(analysis.temp_size_in_bytes)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Silence the profiler's native start/stop log lines (written to fd 2 by C++)."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no usable fd 2
        yield
        return
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def allocation_timeline(step: Callable[[], Any], prepare: Callable[[], Any] = None
                        ) -> list[int]:
    """The signed sizes (bytes; negative for a free) of the CPU allocator's events while
    ``step()`` runs, in program order. The step's result is dropped inside the window,
    so its frees are part of the timeline; peaks are unaffected by that. With
    ``prepare``, ``step(prepare())``, ``prepare`` running before the window opens (the
    forward pass of a measured backward pass)."""
    from torch._C._autograd import DeviceType
    from torch.profiler import ProfilerActivity, profile

    state = prepare() if prepare is not None else None
    gc.collect(1)  # young garbage; a full collection costs ~0.3 s with JAX and torch loaded
    prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
    with _quiet_native_stderr():
        prof.start()
    try:
        result = step() if prepare is None else step(state)
        del result, state
    finally:
        with _quiet_native_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"
              and e.device_type() == DeviceType.CPU]
    # A stable sort by time keeps the recorded order of events with equal timestamps.
    events.sort(key=lambda e: e.start_ns())
    return [int(e.nbytes()) for e in events]


def peak_of(timeline: list[int]) -> int:
    live = peak = 0
    for nbytes in timeline:
        live += nbytes
        peak = max(peak, live)
    return peak


def cuda_peak(step: Callable[[], Any], prepare: Callable[[], Any] = None) -> int:
    """On a CUDA device: the caching allocator's peak of allocated bytes while ``step``
    runs, beyond what was allocated when it began (``torch.cuda.max_memory_allocated``)."""
    import torch

    state = prepare() if prepare is not None else None
    torch.cuda.synchronize()
    base = torch.cuda.memory_allocated()
    torch.cuda.reset_peak_memory_stats()
    result = step() if prepare is None else step(state)
    torch.cuda.synchronize()
    del result, state
    return int(torch.cuda.max_memory_allocated() - base)


def torch_peak_bytes(step: Callable[[], Any], runs: int = 2, warm_up: bool = True,
                     prepare: Callable[[], Any] = None) -> int:
    """Peak bytes allocated by ``step()`` (``step(prepare())``, ``prepare`` not counted)
    beyond what existed before it (module docstring); on a CUDA run, the CUDA
    allocator's peak (:func:`cuda_peak`).

    ``step`` is run once unprofiled (lazy initialisation; ``warm_up=False`` when it has
    run before) and then ``runs`` times under the profiler. The runs should agree, as
    the measure is deterministic; if they do not (a step whose allocations depend on
    timing) this warns and returns the largest.
    """
    from benchmarks.registry import SETTINGS

    call = (lambda: step()) if prepare is None else (lambda: step(prepare()))
    if warm_up:
        call()
    if SETTINGS.device == "gpu":
        peaks = [cuda_peak(step, prepare) for _ in range(runs)]
    else:
        peaks = [peak_of(allocation_timeline(step, prepare)) for _ in range(runs)]
    if len(set(peaks)) != 1:
        warnings.warn(f"torch peak memory differs between identical runs: {peaks}; "
                      f"reporting the largest", RuntimeWarning, stacklevel=2)
    return max(peaks)
