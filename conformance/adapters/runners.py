"""Generic runners: a case's call of any function in one framework, with its gradients.

The implementation adapters (wce_jax, wce_torch, torch.nn.functional) and ``check`` (a
user's function) call a function through these, so that every implementation is driven
the same way. Each framework is imported only when its runner is first used.

* :func:`run_jax`: JAX arrays in, the VJP from ``jax.vjp``; under ``jax.jit`` when
  ``traced``, eagerly otherwise (an eager call runs the function's own Python checks);
  with ``derivatives``, the JVP from ``jax.jvp`` and the HVP from ``jax.jvp`` of the VJP
  (forward over reverse), in the same jitted program as the value and the gradient;
* :func:`run_torch`: tensors in, the gradients from autograd; with ``derivatives``, the
  JVP from ``torch.func.jvp`` and the HVP from double backward (the gradient taken with
  ``create_graph=True``, then the gradient of its product with the tangent);
* :func:`run_numpy`: NumPy arrays in, no gradient.

``layout="channels_last"`` moves the class axis last on the way in and the gradient back.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import platform
import sys
from pathlib import Path

import numpy as np

from conformance.adapters import Outcome, derivative_arguments, grad_arguments, split_args, to_host
from conformance.golden import Case

LAYOUTS = ("channels_first", "channels_last")
CLASS_AXIS_LOSSES = ("cross_entropy", "nll_loss", "softmax_focal_loss")


def to_float64(a) -> np.ndarray:
    return np.asarray(a).astype(np.float64)


def channels_last(case: Case, args: dict, move=np.moveaxis):
    """torch layout (class axis 1) -> JAX layout (class axis last), and ``restore``, which
    moves a gradient (a NumPy array) back. ``move`` moves an axis of the arrays in
    ``args`` (``np.moveaxis``, or ``torch.movedim`` for tensors)."""
    x = args.get("input")
    axis = 2 if case.shards else 1  # shards are stacked on a leading axis
    if case.loss not in CLASS_AXIS_LOSSES or x is None or x.ndim < axis + 2:
        return args, lambda g: g
    args = dict(args, input=move(x, axis, -1))
    t = args.get("target")
    if hasattr(t, "shape") and tuple(t.shape) == tuple(x.shape):  # probability target
        args["target"] = move(t, axis, -1)
    return args, lambda g: np.moveaxis(g, -1, axis)


# ----------------------------------------------------------------------------------
# JAX


def cache_folder() -> Path | None:
    """Where compiled JAX programs are kept between runs: ``$WCE_JAX_CACHE``, else
    ``~/.cache/wce/jax`` (or under ``$XDG_CACHE_HOME``); None if ``WCE_JAX_CACHE=off``."""
    directory = os.environ.get("WCE_JAX_CACHE")
    if directory is None:
        base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
        return Path(base) / "wce" / "jax"
    return None if directory.lower() in ("", "0", "off", "none") else Path(directory)


def jax_compilation_cache() -> str | None:
    """Turn on JAX's persistent compilation cache in :func:`cache_folder`, so that a
    second run compiles nothing (compiling is most of a JAX run's time); for functions
    that :func:`stored_program` cannot name. Returns the folder in use, or None."""
    import jax

    folder = cache_folder()
    if folder is None:
        return None
    if jax.config.jax_compilation_cache_dir is None:
        jax.config.update("jax_compilation_cache_dir", str(folder))
        jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
        jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return jax.config.jax_compilation_cache_dir


def source_digest(*modules) -> str:
    """A digest of the Python source of ``modules``: each module's file, or every file of
    a package. With :func:`run_jax`'s ``fingerprint``, it names the compiled programs of
    exactly this code (a changed line compiles afresh)."""
    digest = hashlib.sha256()
    for module in modules:
        path = Path(module.__file__)
        files = sorted(path.parent.rglob("*.py")) if path.name == "__init__.py" else [path]
        for file in files:
            digest.update(str(file.relative_to(path.parent)).encode())
            digest.update(file.read_bytes())
    return digest.hexdigest()


def jax_modes(case: Case) -> tuple[str, ...]:
    """How a JAX function is run on a case: eagerly ("checked") where eager behaviour
    differs (errors and warnings), and under jit ("traced") always. Eager value cases
    would only repeat the jit for a function that jits its computation."""
    if case.is_error or "warns" in case.expected:
        return ("checked", "traced")
    return ("traced",)


def enable_x64(on: bool):
    """``jax.enable_x64`` (JAX >= 0.7), or its older home ``jax.experimental``."""
    import jax

    switch = getattr(jax, "enable_x64", None)
    if switch is None:
        from jax.experimental import enable_x64 as switch
    return switch(on)


def run_jax(fn, case: Case, dtype: str, traced: bool, layout: str = "channels_last",
            derivatives: bool = False, fingerprint: str | None = None):
    """Call ``fn`` (JAX, spec argument names, the first one positional) on the case, with
    the VJP for every argument the case has gradients for; under ``jax.jit`` if traced.
    With ``derivatives``, a case with tangents also gets the JVP and the HVP, all four in
    one program; if that raises, the value and the VJP run alone (their exceptions go
    through), and the JVP and the HVP each on its own, keeping what they raise.

    ``fingerprint`` (a string that changes whenever ``fn``'s code or settings do, see
    :func:`source_digest`) lets a traced call reuse the compiled program stored on disk
    by an earlier run for the same arguments' shapes (:func:`stored_program`), skipping
    tracing and compiling both."""
    import jax
    import jax.numpy as jnp

    with enable_x64(True):
        args = split_args(case, dtype, to_host)
        restore = lambda g: g  # noqa: E731
        tangents = {n: case.tangents[n] for n in derivative_arguments(case)} \
            if derivatives else {}
        if layout == "channels_last":
            args, restore = channels_last(case, args)
            if "input" in tangents:
                tangents.update(channels_last(case, {"input": tangents["input"]})[0])
        static = tuple(sorted((k, v) for k, v in args.items()
                              if not isinstance(v, np.ndarray)))
        arrays = {k: jnp.asarray(v) for k, v in args.items() if isinstance(v, np.ndarray)}
        names = tuple(grad_arguments(case)) if case.grad_output is not None else ()
        diff = {name: arrays.pop(name) for name in names}
        g = None if case.grad_output is None else jnp.asarray(to_host(case.grad_output, dtype))
        t = {n: jnp.asarray(to_host(v, dtype)) for n, v in tangents.items()}

        def step(kind):
            if not traced:
                return _step(fn, static, kind)
            if fingerprint is None:
                return _jitted_step(fn, static, kind)
            return functools.partial(stored_program, fn, static, kind, fingerprint)

        jvp = hvps = None
        errors = {}
        if t:
            try:
                output, grads, jvp, hvps = step("all")(diff, arrays, g, t)
            except Exception:  # noqa: BLE001 - find out which part raised
                output, grads = step("value")(diff, arrays, g)
                for kind in ("jvp", "hvp"):
                    try:
                        result = step(kind)(diff, arrays, g, t)
                    except Exception as exc:  # noqa: BLE001 - a failure of that clause
                        errors[kind] = exc
                    else:
                        jvp, hvps = (result, hvps) if kind == "jvp" else (jvp, result)
        else:
            output, grads = step("value")(diff, arrays, g)
        outcome = Outcome(to_float64(output), None, str(output.dtype), None,
                          derivative_errors=errors)
        for name, grad in grads.items():
            if name == "input":
                outcome.grad_input = restore(to_float64(grad))
                outcome.grad_dtype = str(grad.dtype)
            else:
                outcome.grads[name] = (to_float64(grad), str(grad.dtype))
        if jvp is not None:
            outcome.jvp = (to_float64(jvp), str(jvp.dtype))
        for name, h in (hvps or {}).items():
            h64 = to_float64(h)
            outcome.hvps[name] = (restore(h64) if name == "input" else h64, str(h.dtype))
        return outcome


def _step(fn, static, kind="value"):
    """One program on ``diff`` (a dict of arrays), the other arrays ``rest``, the cotangent
    ``g`` and the tangents ``t`` (a dict like ``diff``), by ``kind``:

    * ``"value"``: ``step(diff, rest, g)``, the output and the VJP with ``g``;
    * ``"jvp"``: ``step(diff, rest, g, t)``, the JVP of the output along ``t``;
    * ``"hvp"``: ``step(diff, rest, g, t)``, the JVP along ``t`` of the VJP with ``g``;
    * ``"all"``: ``step(diff, rest, g, t)``, the output, the VJP, the JVP and the HVP.
    """
    import jax

    static = dict(static)

    def call(diff, rest):
        kwargs = dict(rest, **diff)
        x = kwargs.pop("input", None)  # positional: implementations name it per loss
        return fn(**kwargs, **static) if x is None else fn(x, **kwargs, **static)

    def value(diff, rest, g):
        if g is None:
            return call(diff, rest), {}
        output, vjp = jax.vjp(lambda d: call(d, rest), diff)
        return output, vjp(g)[0]

    def jvp(diff, rest, g, t):
        return jax.jvp(lambda d: call(d, rest), (diff,), (t,))

    def hvp(diff, rest, g, t):
        return jax.jvp(lambda d: value(d, rest, g)[1], (diff,), (t,))

    def everything(diff, rest, g, t):
        output, tangent_out = jvp(diff, rest, g, t)
        grads, hvps = hvp(diff, rest, g, t)
        return output, grads, tangent_out, hvps

    return {"value": value, "all": everything,
            "jvp": lambda *a: jvp(*a)[1], "hvp": lambda *a: hvp(*a)[1]}[kind]


@functools.lru_cache(maxsize=512)
def _jitted_step(fn, static, kind="value"):
    """One jitted step per function, static arguments and kind, so that cases (and fuzz
    examples) with the same shapes reuse the compiled program."""
    import jax

    return jax.jit(_step(fn, static, kind))


#: Compiled programs loaded in this process, by key (see :func:`stored_program`).
_LOADED: dict[str, object] = {}


def stored_program(fn, static, kind, fingerprint, *args):
    """``_jitted_step(fn, static, kind)(*args)``, through a compiled program kept on disk
    under a key made of ``fingerprint`` (``fn``'s code and settings), ``static``, ``kind``,
    the arguments' tree, shapes and dtypes, and everything else a compiled program depends
    on (JAX, jaxlib, NumPy and Python versions, JAX's settings, ``XLA_FLAGS``, the device
    and the CPU's features). JAX's persistent compilation cache cannot skip tracing and
    lowering, which it needs to compute its key: they are most of a run whose programs
    are all compiled already. A call that raises while tracing stores nothing. The folder
    is ``programs`` in :func:`cache_folder`; without one, nothing is stored."""
    import jax

    folder = cache_folder()
    if folder is None:
        return _jitted_step(fn, static, kind)(*args)
    leaves, tree = jax.tree_util.tree_flatten(args)
    signature = [(a.shape, str(a.dtype), bool(getattr(a, "weak_type", False)))
                 for a in leaves]
    key = hashlib.sha256(repr((fingerprint, static, kind, str(tree), signature,
                               _environment())).encode()).hexdigest()
    program = _LOADED.get(key)
    if program is None:
        path = folder / "programs" / key
        program = _load_program(path)
        if program is None:
            # A program JAX takes from its own persistent cache serializes without some of
            # its kernels (jaxlib 0.10: "Function ... not found" once loaded in another
            # process). JAX's key has the program's name: named by our key, only a program
            # stored before (a file since lost) can come from there; then once more under
            # a name of its own. One that still came from JAX's cache is not stored.
            step = _step(fn, static, kind)
            for name in (key[:16], f"{key[:16]}_{os.urandom(4).hex()}"):
                hits = _persistent_cache_hits()
                program = _compiled(step, f"stored_{name}", args)
                if _persistent_cache_hits() == hits:
                    _store_program(program, path)
                    break
        _LOADED[key] = program
    return program(*args)


def _compiled(step, name, args):
    """``step`` compiled for ``args`` as a program called ``name``."""
    import jax

    def program(*args):
        return step(*args)

    program.__name__ = program.__qualname__ = name
    return jax.jit(program).lower(*args).compile()


_HITS = [0]


@functools.lru_cache(maxsize=1)
def _count_persistent_cache_hits() -> None:
    import jax.monitoring

    def listener(event, **kwargs):
        if event == "/jax/compilation_cache/cache_hits":
            _HITS[0] += 1

    jax.monitoring.register_event_listener(listener)


def _persistent_cache_hits() -> int:
    """How many programs JAX has taken from its persistent cache in this process."""
    _count_persistent_cache_hits()
    return _HITS[0]


def _environment() -> tuple:
    import jax
    import jaxlib

    device = jax.devices()[0]
    return (sys.version, jax.__version__, jaxlib.__version__, np.__version__,
            platform.machine(), _cpu_features(), device.client.platform_version,
            device.device_kind, os.environ.get("XLA_FLAGS", ""),
            # JAX's settings, less those of its compilation cache (where programs are
            # kept, not what they compute): a worker or a test may point it elsewhere.
            sorted((k, v) for k, v in jax.config.values.items() if "cache" not in k),
            jax.config.jax_enable_x64)


@functools.lru_cache(maxsize=1)
def _cpu_features() -> str:
    """The CPU's instruction set extensions (Linux), which XLA compiles for."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))),
                        platform.processor())
    except OSError:
        return platform.processor()


def _load_program(path: Path):
    from jax.experimental import serialize_executable

    try:
        serialized, in_tree, out_tree = pickle.loads(path.read_bytes())
        return serialize_executable.deserialize_and_load(serialized, in_tree, out_tree)
    except Exception:  # noqa: BLE001 - absent, partly written or unreadable: compile
        return None


def _store_program(program, path: Path) -> None:
    from jax.experimental import serialize_executable

    try:
        data = pickle.dumps(serialize_executable.serialize(program))
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f"{path.name}.{os.getpid()}")
        partial.write_bytes(data)
        partial.replace(path)  # atomic: worker processes may store the same program
    except Exception:  # noqa: BLE001 - a program that cannot be stored is compiled again
        pass


def release_jax() -> None:
    """Drop every compiled program held in memory (see ``Adapter.release``)."""
    import jax

    _jitted_step.cache_clear()
    _LOADED.clear()
    jax.clear_caches()


# ----------------------------------------------------------------------------------
# PyTorch


#: Where the torch runner makes the cases' tensors: the environment's WCE_TORCH_DEVICE
#: (``cuda``), else the CPU. Values are rounded to the run dtype on the CPU first, so
#: every device sees the same inputs.
DEVICE = os.environ.get("WCE_TORCH_DEVICE") or "cpu"


def to_torch(a: np.ndarray, dtype: str):
    import torch

    if np.dtype(a.dtype).kind == "f":
        t = torch.from_numpy(np.array(a, dtype=np.float64)).to(getattr(torch, dtype))
        return t.to(DEVICE)
    return torch.from_numpy(np.array(a, dtype=dtype)).to(DEVICE)


def _numpy(t) -> np.ndarray:
    import torch

    return t.detach().to(torch.float64).cpu().numpy()


def _dtype(t) -> str:
    return str(t.dtype).removeprefix("torch.")


def run_torch(fn, case: Case, dtype: str, layout: str = "channels_first",
              derivatives: bool = False):
    """Call ``fn`` (a torch.nn.functional-style function) on the case, and backward; with
    ``derivatives``, the JVP and the HVP of a case with tangents (:func:`_torch_derivatives`)."""
    import torch

    args = split_args(case, dtype, to_torch)
    restore = lambda g: g  # noqa: E731
    if layout == "channels_last":
        args, restore = channels_last(case, args, torch.movedim)
        args = {k: v.contiguous() if isinstance(v, torch.Tensor) else v
                for k, v in args.items()}
    names = grad_arguments(case) if case.grad_output is not None else []
    for name in names:
        args[name].requires_grad_()
    output = fn(**args)
    outcome = Outcome(_numpy(output), None, _dtype(output), None)
    if names and output.requires_grad:
        grads = torch.autograd.grad(output, [args[n] for n in names],
                                    to_torch(case.grad_output, dtype), allow_unused=True)
        for name, grad in zip(names, grads):
            if grad is None:
                continue
            if name == "input":
                outcome.grad_input, outcome.grad_dtype = restore(_numpy(grad)), _dtype(grad)
            else:
                outcome.grads[name] = (_numpy(grad), _dtype(grad))
    if derivatives and derivative_arguments(case):
        _torch_derivatives(fn, args, case, dtype, layout, restore, outcome)
    return outcome


def _torch_derivatives(fn, args, case, dtype, layout, restore, outcome):
    """[JVP] through ``torch.func.jvp``; [HVP-*] through double backward: the gradient for
    the case's ``grad_output`` with ``create_graph=True``, then the gradient of its product
    with the tangents. Each transform runs on fresh leaves, so the first-order gradient
    above is the one a plain ``backward`` takes. A gradient detached from the inputs (no
    second derivative) gives an HVP of 0, and is noted in ``outcome.detached``."""
    import torch

    names = derivative_arguments(case)
    tangents = {n: case.tangents[n] for n in names}
    if layout == "channels_last" and "input" in tangents:
        tangents.update(channels_last(case, {"input": tangents["input"]})[0])
    t = tuple(to_torch(tangents[n], dtype).contiguous() for n in names)
    primals = tuple(args[n].detach() for n in names)

    def call(*diff):
        return fn(**{**args, **dict(zip(names, diff))})

    try:
        _, jvp = torch.func.jvp(call, primals, t)
        outcome.jvp = (_numpy(jvp), _dtype(jvp))
    except Exception as exc:  # noqa: BLE001 - a failure of [JVP], with this exception
        outcome.derivative_errors["jvp"] = exc
    try:
        leaves = [p.clone().requires_grad_() for p in primals]
        grads = torch.autograd.grad(call(*leaves), leaves, to_torch(case.grad_output, dtype),
                                    create_graph=True, allow_unused=True)
        live = [i for i, grad in enumerate(grads) if grad is not None and grad.requires_grad]
        second = torch.autograd.grad([grads[i] for i in live], leaves, [t[i] for i in live],
                                     allow_unused=True) if live else [None] * len(leaves)
        for i, name in enumerate(names):
            if i not in live:
                outcome.detached.add(name)
            h = torch.zeros_like(leaves[i]) if second[i] is None else second[i]
            h64 = _numpy(h)
            outcome.hvps[name] = (restore(h64) if name == "input" else h64, _dtype(h))
    except Exception as exc:  # noqa: BLE001 - a failure of [HVP-*], with this exception
        outcome.derivative_errors["hvp"] = exc


# ----------------------------------------------------------------------------------
# NumPy


def run_numpy(fn, case: Case, dtype: str, layout: str = "channels_first") -> Outcome:
    """Call ``fn`` on NumPy arrays of ``dtype``; no gradient."""
    args = split_args(case, dtype, lambda a, dt: np.asarray(a).astype(dt))
    if layout == "channels_last":
        args, _ = channels_last(case, args)
    x = args.pop("input")
    output = np.asarray(fn(x, **args))
    return Outcome(output.astype(np.float64), None, str(output.dtype), None)
