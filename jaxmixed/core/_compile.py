"""Compiled programs: one per model structure, a bounded number kept, a cache on disk.

Three things decide how long a user waits for XLA, and how long a process
can go on fitting:

- **Structure, not size.** ``fit_reml`` pads rows, levels and cross pairs to
  a few sizes (``_padding.bucket``) so that data sets of similar size share one
  program; :class:`CompiledFunction` compiles a function once per *structure*
  (the static parts of its arguments and the shapes and dtypes of their
  arrays) and calls the compiled program directly afterwards.
- **A bounded number kept.** Every compiled CPU executable holds several
  hundred memory maps (measured: about 700 for a sleepstudy fit); a process
  that keeps every program it ever compiled exhausts Linux's
  ``vm.max_map_count`` (65,530) after a few hundred distinct structures and
  XLA crashes ("Cannot allocate memory", then a segmentation fault). All
  :class:`CompiledFunction` objects share one least-recently-used registry
  of at most :func:`set_max_compiled_programs` programs (default 32); an
  evicted program is compiled again (or loaded from the disk cache) when
  its structure comes back.
- **A disk cache.** JAX's persistent compilation cache is switched on
  before the first compilation, in a per-user directory
  (``$XDG_CACHE_HOME/jaxmixed/xla/<fingerprint>``, default
  ``~/.cache/jaxmixed/...``), unless the user has chosen a directory already
  (``jax_compilation_cache_dir`` or ``JAX_COMPILATION_CACHE_DIR``) or opted
  out (``JAXMIXED_COMPILATION_CACHE=0``, or :func:`set_compilation_cache`
  with ``None``). The fingerprint hashes the jax and jaxlib versions, the
  machine type and the CPU's instruction-set flags: compiled CPU code is
  specific to the instructions it was built for, and a cache shared between
  machines (a network home directory) would otherwise hand one machine code
  built for another's instructions (XLA warns that this "could lead to
  SIGILL"). With the directory keyed this way that cannot happen, and the
  warning XLA still prints when it loads a program (it compares LLVM's
  *tuning* flags such as ``+prefer-no-gather``, which are not instructions,
  with the host's instruction set) is a false alarm: it is filtered out of
  the process's standard error while jaxmixed compiles, and every other
  line is passed through.

The first compilation in a process says so on standard error (:data:`NOTICE`, once:
a first fit otherwise waits seconds with nothing on screen); a program loaded from the
disk's exported programs does not. :func:`set_compile_notice` (or
``JAXMIXED_COMPILE_NOTICE=0``) switches it off.

A compiled program runs with LAPACK's threads sized to the free cores
(``_threads``), so that a busy neighbour costs about its share, and is
lowered with every matrix product at full precision (``_precision``: a GPU
would otherwise run float32 products on TF32).
"""

from __future__ import annotations

import collections
import contextlib
import hashlib
import os
import platform
import re
import sys
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._export_cache import disk_key, load, prune, store
from ._precision import matmul_precision
from ._threads import lapack_threads

__all__ = [
    "CompiledFunction",
    "clear_compiled_programs",
    "compilation_cache_dir",
    "compiled",
    "n_compiled_programs",
    "set_compilation_cache",
    "set_compile_notice",
    "set_max_compiled_programs",
]

_ENV_SWITCH = "JAXMIXED_COMPILATION_CACHE"  # "0"/"off"/"false": no disk cache; a path: that directory
_DEFAULT_MAX_PROGRAMS = 32
_NOTICE_SWITCH = "JAXMIXED_COMPILE_NOTICE"  # "0"/"off"/"false"/"no": no notice while compiling
NOTICE = (
    "jaxmixed: compiling the model (the first fit of a structure takes seconds; later fits of it "
    "reuse the program, and the disk cache keeps it for new processes)"
)
# The disk cache's bound for XLA's compiled programs (its exported programs have their
# own, ``_export_cache.MAX_BYTES``).
XLA_CACHE_MAX_BYTES = 2**30


class _Settings:
    """Process-wide state: the registry of compiled programs and the cache choice."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.programs: collections.OrderedDict = collections.OrderedDict()
        self.max_programs = _DEFAULT_MAX_PROGRAMS
        self.cache_decided = False  # the disk cache was set up (or declined) once
        self.cache_dir: str | None = None  # jaxmixed's own directory, when it chose one
        # the notice that a program is being compiled: shown once a process, unless switched off
        self.notice = os.environ.get(_NOTICE_SWITCH, "").strip().lower() not in ("0", "off", "false", "no")
        self.noticed = False


_SETTINGS = _Settings()


# --------------------------------------------------------------------------------------
# The disk cache
# --------------------------------------------------------------------------------------


def _cpu_flags() -> str:
    """The CPU's model and instruction-set flags (Linux: /proc/cpuinfo), else the platform's words."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return f"{platform.processor()} {platform.machine()}"
    wanted = ("flags", "features", "model name", "cpu model", "isa")
    lines = [ln for ln in text.splitlines() if ln.split(":")[0].strip().lower() in wanted]
    # every core repeats the same lines: one copy of each distinct line
    return "\n".join(sorted(set(lines)))


def _fingerprint() -> str:
    import jaxlib

    parts = [jax.__version__, jaxlib.version.__version__, platform.machine(), sys.platform, _cpu_flags()]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def compilation_cache_dir(base: str | os.PathLike | None = None) -> Path:
    """jaxmixed's default directory for compiled programs (see the module docstring):
    ``<base>/jaxmixed/xla/<fingerprint>``, ``base`` by default ``$XDG_CACHE_HOME``
    or ``~/.cache``."""
    if base is None:
        base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jaxmixed" / "xla" / _fingerprint()


def set_compilation_cache(path: str | os.PathLike | None | bool = True) -> str | None:
    """Chooses JAX's persistent compilation cache for this process.

    Args:
        path: ``True`` (default): jaxmixed's per-user, per-CPU directory
            (:func:`compilation_cache_dir`); a path: that directory; ``None``
            or ``False``: no disk cache (programs are compiled in every new
            process). Call it before the first fit; a directory already in
            use by JAX cannot be changed within a process.

    Returns:
        The directory in use, or None.

    This sets JAX's ``jax_compilation_cache_dir``, which applies to every
    program the process compiles afterwards, not only jaxmixed's.
    """
    with _SETTINGS.lock:
        _SETTINGS.cache_decided = True
        if path is None or path is False:
            _SETTINGS.cache_dir = None
            jax.config.update("jax_enable_compilation_cache", False)
            return None
        target = compilation_cache_dir() if path is True else Path(path)
        target.mkdir(parents=True, exist_ok=True)
        jax.config.update("jax_enable_compilation_cache", True)
        jax.config.update("jax_compilation_cache_dir", str(target))
        if path is True:  # jaxmixed's own directory: bounded (JAX's bound needs filelock)
            prune(target, XLA_CACHE_MAX_BYTES, suffixes=("-cache", "-atime"))
        _SETTINGS.cache_dir = str(target)
        return str(target)


def _decide_cache() -> None:
    """Before the first compilation: the user's choice, else jaxmixed's default."""
    if _SETTINGS.cache_decided:
        return
    with _SETTINGS.lock:
        if _SETTINGS.cache_decided:
            return
        switch = os.environ.get(_ENV_SWITCH, "").strip()
        # A directory the user chose (config or environment) wins. jax's Config stub lists
        # no flags, hence the ignore.
        if jax.config.jax_compilation_cache_dir:  # pyright: ignore[reportAttributeAccessIssue]
            _SETTINGS.cache_decided = True
        elif switch.lower() in ("0", "off", "false", "no", "none"):
            set_compilation_cache(None)
        else:
            try:
                set_compilation_cache(switch or True)
            except OSError:  # an unwritable home: compile in memory only
                set_compilation_cache(None)


_EXPORT_SWITCH = "JAXMIXED_EXPORT_CACHE"  # "0"/"off"/"false"/"no": programs not exported


def export_directory() -> Path | None:
    """Where exported programs go: ``export/`` in the compilation cache's directory
    (jaxmixed's, or the one the user chose for JAX); None without a disk cache or with
    ``JAXMIXED_EXPORT_CACHE=0`` in the environment."""
    if os.environ.get(_EXPORT_SWITCH, "").strip().lower() in ("0", "off", "false", "no"):
        return None
    if _SETTINGS.cache_dir is not None:
        return Path(_SETTINGS.cache_dir) / "export"
    chosen = jax.config.jax_compilation_cache_dir  # pyright: ignore[reportAttributeAccessIssue]
    enabled = jax.config.jax_enable_compilation_cache  # pyright: ignore[reportAttributeAccessIssue]
    return Path(chosen) / "jaxmixed-export" if chosen and enabled else None


# XLA's lines that are false alarms once the cache directory is keyed by the CPU:
# a feature compared that is an LLVM tuning flag (not an instruction), and the
# PjRt note that it does not track executable versions (the directory does).
_TUNING = re.compile(r"Target machine feature \+(prefer-|fast-|slow-|tuning-)")
_VERSION_NOTE = "Assume version compatibility. PjRt-IFRT does not track XLA executable versions"


def _false_alarm(line: str) -> bool:
    return ("cpu_aot_loader" in line and _TUNING.search(line) is not None) or _VERSION_NOTE in line


@contextlib.contextmanager
def _filtered_stderr():
    """Standard error (file descriptor 2) with XLA's cache-loading false alarms removed.

    Only used around a compilation that may load from jaxmixed's own cache
    directory; lines written meanwhile are passed on when it ends.
    """
    if _SETTINGS.cache_dir is None:
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, AttributeError, ValueError):  # no usable descriptor 2: nothing to filter
        yield
        return
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), 2)
        try:
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            held.seek(0)
            lines = held.read().decode(errors="replace").splitlines(keepends=True)
            kept = "".join(ln for ln in lines if not _false_alarm(ln))
            if kept:
                os.write(2, kept.encode())


# --------------------------------------------------------------------------------------
# Compiled functions, a bounded number kept
# --------------------------------------------------------------------------------------


def set_compile_notice(enabled: bool = True) -> None:
    """Whether jaxmixed says, once a process, that it is compiling a program (on standard
    error: the first fit of a structure waits seconds for XLA with nothing else on screen).
    Default on; ``JAXMIXED_COMPILE_NOTICE=0`` in the environment switches it off too."""
    with _SETTINGS.lock:
        _SETTINGS.notice = bool(enabled)


def _notice_compiling() -> None:
    """:data:`NOTICE` on standard error, the first time a program is compiled (not loaded
    from the disk cache) in this process."""
    with _SETTINGS.lock:
        if not _SETTINGS.notice or _SETTINGS.noticed:
            return
        _SETTINGS.noticed = True
    print(NOTICE + " ...", file=sys.stderr, flush=True)


def set_max_compiled_programs(n: int) -> None:
    """Keeps at most ``n`` (default 32) of jaxmixed's compiled programs in memory.

    The least recently used are dropped first (and compiled again, or loaded
    from the disk cache, when needed). Each holds memory and memory maps; see
    the module docstring.
    """
    if int(n) < 1:
        raise ValueError(f"at least one compiled program must be kept, got {n}")
    with _SETTINGS.lock:
        _SETTINGS.max_programs = int(n)
        _evict()


def clear_compiled_programs() -> None:
    """Drops every compiled program jaxmixed holds (they are compiled again when needed)."""
    with _SETTINGS.lock:
        _SETTINGS.programs.clear()


def n_compiled_programs() -> int:
    """How many compiled programs jaxmixed holds now."""
    return len(_SETTINGS.programs)


def _evict() -> None:
    while len(_SETTINGS.programs) > _SETTINGS.max_programs:
        _SETTINGS.programs.popitem(last=False)


def _leaf_key(x: Any) -> tuple:
    sharding = getattr(x, "sharding", None)
    return (x.shape, str(x.dtype), bool(getattr(x, "weak_type", False)), sharding)


def unoptimised_on_cpu(*args: Any, **kwargs: Any) -> dict:
    """``compiler_options`` for derivative programs: XLA's backend optimisation off on a
    CPU. Their programs are large and their arithmetic a few small matrices, so LLVM's
    passes cost more than they save (Satterthwaite's df, Kenward–Roger)."""
    del args, kwargs
    return {"xla_backend_optimization_level": 0} if jax.default_backend() == "cpu" else {}


class CompiledFunction:
    """``fun`` compiled ahead of time once per structure of its arguments.

    Like ``eqx.filter_jit``: arrays (jax or numpy) are traced, everything else
    is static and must be hashable. The key of a program is the function, the
    static parts, the tree structure, each array's shape, dtype, weak type and
    sharding, and JAX's 64-bit mode; programs live in the shared registry
    (at most :func:`set_max_compiled_programs`, least recently used dropped).
    ``compiler_options(*args, **kwargs)``, if given, returns XLA options for
    the compilation of those arguments' structure (a function of shapes only).
    """

    def __init__(self, fun: Callable, compiler_options: Callable[..., dict] | None = None) -> None:
        self.fun = fun
        self.compiler_options = compiler_options
        self.__wrapped__ = fun
        self.__doc__ = fun.__doc__
        self.__name__ = getattr(fun, "__name__", "compiled")

    def _key(self, dynamic, static) -> tuple:
        leaves, treedef = jax.tree.flatten(dynamic)
        static_leaves, static_def = jax.tree.flatten(static)
        x64 = jax.dtypes.canonicalize_dtype(float) == jnp.float64
        return (id(self), treedef, static_def, tuple(static_leaves), tuple(map(_leaf_key, leaves)), x64)

    def lower(self, dynamic, static) -> jax.stages.Lowered:
        """The program for these arguments (``eqx.partition``'s parts), lowered with every
        matrix product at full precision (``_precision``)."""

        def run(dyn):
            args, kwargs = eqx.combine(dyn, static)
            return self.fun(*args, **kwargs)

        with matmul_precision():
            return jax.jit(run).lower(dynamic)

    def _compile(self, dynamic, static) -> Callable:
        """The program for these arguments: through the export cache where there is a
        disk cache (``_export_cache``), else lowered and compiled here."""
        _decide_cache()
        options = None
        if self.compiler_options is not None:
            args, kwargs = eqx.combine(dynamic, static)
            options = self.compiler_options(*args, **kwargs) or None
        directory = export_directory()
        if directory is not None:
            try:
                program = self._compile_exported(dynamic, static, options, directory)
            except Exception:  # anything the export path cannot do: the plain path
                program = None
            if program is not None:
                return program
        _notice_compiling()  # (XLA's disk cache may still serve it: the notice cannot know)
        lowered = self.lower(dynamic, static)
        with _filtered_stderr():
            return lowered.compile(compiler_options=options)

    def _compile_exported(self, dynamic, static, options: dict | None, directory: Path) -> Callable | None:
        """The program from its exported form on disk, exported first if absent; None where
        it is not exported (see ``_export_cache``) or the export fails."""
        leaves, in_def = jax.tree.flatten(dynamic)
        in_skeleton = jax.tree.unflatten(in_def, [0] * len(leaves))
        x64 = jax.dtypes.canonicalize_dtype(float) == jnp.float64
        key = disk_key(self.fun, leaves, in_skeleton, static, x64, options)
        if key is None:
            return None
        avals = [
            jax.ShapeDtypeStruct(np.shape(a), jax.dtypes.canonicalize_dtype(a.dtype), weak_type=bool(getattr(a, "weak_type", False)))
            for a in leaves
        ]
        found = load(directory, key)
        if found is None:
            _notice_compiling()
            try:
                found = self._export(in_def, static, avals)
            except Exception:  # not exportable (a host callback, an effect): the plain path
                return None
            store(directory, key, *found)
        exported, skeleton = found
        out_def = jax.tree.structure(skeleton)
        with _filtered_stderr():
            program = jax.jit(exported.call).lower(*avals).compile(compiler_options=options)
        return lambda dyn: jax.tree.unflatten(out_def, program(*jax.tree.leaves(dyn)))

    def _export(self, in_def, static, avals) -> tuple[Any, Any]:
        """(``jax.export.Exported`` of the flat program, the skeleton of its output pytree)."""
        skeletons: list = []

        def run_flat(*flat):
            args, kwargs = eqx.combine(jax.tree.unflatten(in_def, flat), static)
            out_leaves, out_def = jax.tree.flatten(self.fun(*args, **kwargs))
            skeletons.append(jax.tree.unflatten(out_def, [0] * len(out_leaves)))
            return out_leaves

        with matmul_precision():
            exported = jax.export.export(jax.jit(run_flat))(*avals)
        return exported, skeletons[-1]

    def __call__(self, *args, **kwargs):
        dynamic, static = eqx.partition((args, kwargs), eqx.is_array)
        key = self._key(dynamic, static)
        with _SETTINGS.lock:
            program = _SETTINGS.programs.get(key)
            if program is not None:
                _SETTINGS.programs.move_to_end(key)
        if program is None:
            program = self._compile(dynamic, static)
            with _SETTINGS.lock:
                _SETTINGS.programs[key] = program
                _evict()
        # LAPACK's threads sized to the free cores while the program runs (``_threads``);
        # waiting for the result keeps the limit in force until the kernels are done.
        with lapack_threads():
            return jax.block_until_ready(program(dynamic))


def compiled(fun: Callable, compiler_options: Callable[..., dict] | None = None) -> CompiledFunction:
    """``fun`` as a :class:`CompiledFunction` (see there for ``compiler_options``)."""
    return CompiledFunction(fun, compiler_options)
