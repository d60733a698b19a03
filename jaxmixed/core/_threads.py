"""CPU threads of the LAPACK kernels: as many as the machine has free, not more.

On a CPU, jaxlib runs its LAPACK kernels (the Cholesky factorisations and
triangular solves of the crossed-factor models) in the OpenBLAS that scipy
bundles, whose threads busy-wait for work. When another process keeps a core
busy, those spinning threads compete with it and with XLA's own threads, and
a fit slows far more than by the neighbour's share. Measured on the 2-core
machine, InstEval's steady fit (medians, seconds):

=======================================  =======  ==================
neighbour                                default  OpenBLAS 1 thread
=======================================  =======  ==================
none                                     2.28     2.39
one single-threaded busy loop            3.32     2.35
another process fitting InstEval         5.46     2.38
=======================================  =======  ==================

So while a compiled jaxmixed program runs, OpenBLAS gets the number of cores
not already busy (the cores this process may use minus the one-minute load
average beyond this process's own share, at least one), and its previous
setting is restored afterwards. The load average lags by up to a minute; a
neighbour that starts during a fit is seen by the next one. Where scipy's
OpenBLAS is not the LAPACK in use (another platform or build), nothing is
changed. ``JAXMIXED_BLAS_THREADS=<n>`` fixes the number instead.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import glob
import os

__all__ = ["free_cores", "lapack_threads"]

_ENV = "JAXMIXED_BLAS_THREADS"


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


def free_cores() -> int:
    """Cores this process may use that no other process keeps busy (at least 1)."""
    fixed = os.environ.get(_ENV, "").strip()
    if fixed:
        return max(1, int(fixed))
    cores = _cores()
    try:
        load = os.getloadavg()[0]
    except OSError:  # pragma: no cover - no load average on this platform
        return cores
    # this process's own work counts in the load average: about one core of it
    return max(1, min(cores, round(cores - max(0.0, load - 1.0))))


@functools.cache
def _openblas() -> tuple | None:
    """(get, set) of the thread count of scipy's OpenBLAS, which jaxlib's LAPACK kernels use."""
    try:
        import scipy
        import scipy.linalg.cython_lapack  # noqa: F401 - loads the library, as jaxlib does
    except ImportError:
        return None
    pattern = os.path.join(os.path.dirname(os.path.dirname(scipy.__file__)), "scipy.libs", "*openblas*")
    for path in sorted(glob.glob(pattern)):
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for prefix in ("scipy_", ""):
            get = getattr(lib, f"{prefix}openblas_get_num_threads", None)
            put = getattr(lib, f"{prefix}openblas_set_num_threads", None)
            if get is not None and put is not None:
                get.restype, put.argtypes = ctypes.c_int, [ctypes.c_int]
                return get, put
    return None


@contextlib.contextmanager
def lapack_threads(n: int | None = None):
    """OpenBLAS limited to ``n`` threads (default :func:`free_cores`) inside the block."""
    handles = _openblas()
    if handles is None:
        yield
        return
    get, put = handles
    before = get()
    wanted = min(before, free_cores() if n is None else max(1, int(n)))
    if wanted != before:
        put(wanted)
    try:
        yield
    finally:
        if wanted != before:
            put(before)
