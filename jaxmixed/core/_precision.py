"""The precision of matrix products: HIGHEST, whatever the device or the user's default.

On NVIDIA GPUs JAX runs float32 matrix products on TF32 tensor cores by
default (10 bits of mantissa): sleepstudy's REML criterion came out 1.2e-4
off on an H100, where float32 on a CPU is within 6e-8. The library's
products are few and small next to its factorisations, so it asks for full
precision in every one of them: each traced entry point of the pure layer
runs under :func:`highest_precision` (``jax.default_matmul_precision``,
which JAX reads when it traces a product, so this holds inside a user's own
``jit`` too), and ``_compile.CompiledFunction`` lowers its programs under it.
Triangular solves and Cholesky factorisations are not affected by the
setting: they are always computed in the array's precision.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import ParamSpec, TypeVar

import jax

__all__ = ["MATMUL_PRECISION", "highest_precision", "matmul_precision"]

# jax.default_matmul_precision's name for full-precision products (float32 products in
# float32, float64 in float64; on TPUs, six bf16 passes for float32).
MATMUL_PRECISION = "highest"

_P = ParamSpec("_P")
_R = TypeVar("_R")


def matmul_precision():
    """The context in which the library traces its products (``MATMUL_PRECISION``)."""
    return jax.default_matmul_precision(MATMUL_PRECISION)


def highest_precision(fun: Callable[_P, _R]) -> Callable[_P, _R]:
    """``fun`` traced (or run eagerly) with every matrix product at full precision."""

    @functools.wraps(fun)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        with matmul_precision():
            return fun(*args, **kwargs)

    return wrapper
