"""Small dense linear algebra used by the objective.

Blocks of size 1 (random intercepts, the commonest case) are handled with
elementwise arithmetic instead of LAPACK calls: it is faster and keeps the
batched LAPACK kernels out of the hot path.
"""

from __future__ import annotations

import jax.numpy as jnp
import jax.scipy.linalg as jsl

__all__ = ["batched_cholesky", "batched_solve_lower", "batched_solve_upper_t", "log_det_from_chol"]


def batched_cholesky(a: jnp.ndarray) -> jnp.ndarray:
    """Lower Cholesky factors of a stack of SPD matrices, shape (..., q, q)."""
    if a.shape[-1] == 1:
        return jnp.sqrt(a)
    return jnp.linalg.cholesky(a)


def batched_solve_lower(chol: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solves ``L x = b`` for stacks: ``chol`` (..., q, q), ``b`` (..., q, k)."""
    if chol.shape[-1] == 1:
        return b / chol
    return jsl.solve_triangular(chol, b, lower=True)


def batched_solve_upper_t(chol: jnp.ndarray, b: jnp.ndarray) -> jnp.ndarray:
    """Solves ``Lᵀ x = b`` for stacks: ``chol`` (..., q, q) lower, ``b`` (..., q, k)."""
    if chol.shape[-1] == 1:
        return b / chol
    return jsl.solve_triangular(chol, b, lower=True, trans="T")


def log_det_from_chol(chol: jnp.ndarray) -> jnp.ndarray:
    """``log |L Lᵀ|`` summed over all stacked factors ``chol`` (..., q, q)."""
    return 2.0 * jnp.sum(jnp.log(jnp.diagonal(chol, axis1=-2, axis2=-1)))
