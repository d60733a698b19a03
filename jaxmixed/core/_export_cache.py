"""Lowered programs on disk (``jax.export``): a new process skips the trace.

JAX's persistent compilation cache skips XLA's compilation in a new process,
but not the Python trace and lowering before it, which for a model's first
fit takes 0.5 s and for the Satterthwaite program (a Hessian by reverse over
reverse differentiation) 1.7 s. ``_compile.CompiledFunction`` therefore
exports each program it lowers (``jax.export``: serialised StableHLO) next to
that cache, with a pickled skeleton of its output pytree (the structure, leaves
0); a later process with the same key deserialises it and compiles it, which
the compilation cache then serves, without tracing.

The key (:func:`disk_key`) is a hash of everything the program depends on:
the function's qualified name, the static arguments (pickled), the structure,
shapes, dtypes and weak types of the array arguments, the 64-bit mode, the
compiler options, ``XLA_FLAGS``, the backend, the versions of jax, jaxlib,
equinox and optax, and a hash of jaxmixed's own source files, so that a
changed library never reuses an old program. A function defined inside
another (a closure) or a lambda is never exported (its name does not say what
it captured), nor is a program whose arguments are split over several devices.
The directory is kept under :data:`MAX_BYTES`, the least recently used files
deleted first.
"""

from __future__ import annotations

import functools
import hashlib
import os
import pickle
import pickletools
import tempfile
import time
from pathlib import Path
from typing import Any

import jax
import numpy as np

__all__ = ["MAX_BYTES", "disk_key", "load", "prune", "source_fingerprint", "store"]

# The export directory's bound: programs are 50 kB to a few MB each.
MAX_BYTES = 256 * 2**20
_SUFFIXES = (".export", ".out")


@functools.cache
def source_fingerprint() -> str:
    """A hash of every Python source file of the installed jaxmixed package."""
    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()


@functools.cache
def _versions() -> str:
    import equinox
    import jaxlib
    import optax

    return f"jax {jax.__version__} jaxlib {jaxlib.version.__version__} eqx {equinox.__version__} optax {optax.__version__}"


def _exportable(fun: Any) -> str | None:
    """The function's qualified name, or None for a closure, a lambda or a partial."""
    name = getattr(fun, "__qualname__", None)
    module = getattr(fun, "__module__", None)
    if not name or not module or "<" in name:
        return None
    return f"{module}.{name}"


def _leaf_entry(leaf: Any) -> tuple | None:
    """(shape, dtype, weak type) of an array argument; None (not exported) for a PRNG key
    (an extended dtype) or an array on another device than the default, or split over
    several (an exported program is compiled for the default device)."""
    if jax.numpy.issubdtype(leaf.dtype, jax.dtypes.extended):
        return None
    sharding = getattr(leaf, "sharding", None)
    if sharding is not None and sharding.device_set != {jax.devices()[0]}:
        return None
    return (tuple(np.shape(leaf)), str(np.dtype(leaf.dtype)), bool(getattr(leaf, "weak_type", False)))


# Modules whose objects may appear among the static arguments of an exported program:
# their code is versioned in the key (jaxmixed by its source hash, the others by their
# versions). An object of any other module (a user's solver subclass, say) pickles by
# name only, so its program could outlive an edit of its code: not exported.
_TRUSTED = ("jaxmixed", "jax", "jaxlib", "numpy", "equinox", "optax", "builtins", "copyreg", "collections", "_codecs")


def _static_bytes(obj: Any) -> bytes | None:
    """The pickle of the static arguments, or None when it refers to code outside
    ``_TRUSTED`` or cannot be pickled. Protocol 3 names every class and function in a
    GLOBAL opcode ("module name"), which is read back to check."""
    try:
        data = pickle.dumps(obj, protocol=3)
    except Exception:
        return None
    for op, arg, _ in pickletools.genops(data):
        if op.name == "GLOBAL" and str(arg).split(" ")[0].split(".")[0] not in _TRUSTED:
            return None
    return data


def _trace_settings() -> str:
    """The JAX settings a trace depends on beyond dtypes (promotion, NaN checks, PRNG)."""
    names = ("jax_numpy_dtype_promotion", "jax_debug_nans", "jax_default_prng_impl", "jax_threefry_partitionable")
    return repr([getattr(jax.config, name, None) for name in names])


def disk_key(fun: Any, leaves: list, in_skeleton: Any, static: Any, x64: bool, options: dict | None) -> str | None:
    """The program's key on disk (see the module docstring), or None when it is not exported."""
    name = _exportable(fun)
    entries = [_leaf_entry(leaf) for leaf in leaves]
    if name is None or any(e is None for e in entries):
        return None
    static_part, skeleton_part = _static_bytes(static), _static_bytes(in_skeleton)
    if static_part is None or skeleton_part is None:
        return None
    described = repr(
        (name, entries, x64, sorted((options or {}).items()), os.environ.get("XLA_FLAGS", ""), _trace_settings())
    )
    digest = hashlib.sha256()
    device = str(jax.devices()[0].device_kind)
    for part in (described.encode(), device.encode(), _versions().encode(), source_fingerprint().encode(), static_part, skeleton_part):
        digest.update(hashlib.sha256(part).digest())
    return digest.hexdigest()[:32]


@functools.cache
def _lapack_ready() -> None:
    """Sets up jaxlib's LAPACK kernels on a CPU. jaxlib does it when it first lowers a
    linear-algebra operation; a deserialised program calls the kernels without
    lowering one, and without this they are not set up (a segmentation fault when
    the program runs, measured with jax 0.9.2). jaxlib's own set-up call where it has
    it, else a 1 × 1 Cholesky lowered (0.15 s)."""
    if jax.default_backend() != "cpu":
        return
    try:
        from jaxlib import lapack

        lapack._lapack.initialize()  # pyright: ignore[reportPrivateImportUsage]  (what prepare_lapack_call runs first)
    except Exception:
        jax.jit(jax.numpy.linalg.cholesky).lower(jax.numpy.eye(1))


def load(directory: Path, key: str) -> tuple[Any, Any] | None:
    """(the deserialised ``jax.export.Exported``, the output skeleton), or None."""
    program, skeleton = directory / f"{key}.export", directory / f"{key}.out"
    try:
        exported = jax.export.deserialize(bytearray(program.read_bytes()))
        out = pickle.loads(skeleton.read_bytes())
    except Exception:  # absent, or written by something else: compile afresh
        return None
    _lapack_ready()
    for path in (program, skeleton):  # recently used: kept longest by the bound
        try:
            path.touch()
        except OSError:
            pass
    return exported, out


def store(directory: Path, key: str, exported: Any, skeleton: Any) -> None:
    """Writes the program and its output skeleton (atomically), then keeps the
    directory under :data:`MAX_BYTES`; any failure leaves the disk as it was."""
    try:
        directory.mkdir(parents=True, exist_ok=True)
        blobs = {".export": bytes(exported.serialize()), ".out": pickle.dumps(skeleton, protocol=4)}
        for suffix, blob in blobs.items():
            # A file of its own for each writer (threads and processes), then an atomic rename.
            handle, tmp = tempfile.mkstemp(dir=directory, suffix=".tmp")
            with os.fdopen(handle, "wb") as out:
                out.write(blob)
            os.replace(tmp, directory / f"{key}{suffix}")
    except Exception:
        return
    prune(directory)


def prune(directory: Path, max_bytes: int = MAX_BYTES, suffixes: tuple[str, ...] = _SUFFIXES) -> None:
    """Deletes the least recently used files whose names end with one of ``suffixes``
    until they take at most ``max_bytes``, and temporary files of writers that died
    (over an hour old)."""
    try:
        for stale in directory.glob("*.tmp"):
            if stale.stat().st_mtime < time.time() - 3600:
                stale.unlink(missing_ok=True)
        files = [p for p in directory.iterdir() if p.is_file() and p.name.endswith(suffixes)]
        sized = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in files), key=lambda t: t[0])
    except OSError:
        return
    total = sum(size for _, size, _ in sized)
    for _, size, path in sized:
        if total <= max_bytes:
            break
        try:
            path.unlink()
            total -= size
        except OSError:
            pass
