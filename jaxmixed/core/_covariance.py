"""The relative covariance factor Λ and its log-Cholesky parameterisation.

For each grouping factor the random effects of one level have covariance
``σ² Λ Λᵀ`` with ``Λ`` lower triangular (q×q). Several terms on the same factor
make ``Λ`` block diagonal; a ``||`` term makes its block diagonal. The free
entries of ``Λ`` are lme4's ``θ`` (column-major lower triangle per term,
diagonal ≥ 0). The optimiser sees ``φ``: ``log`` of each diagonal entry and the
off-diagonal entries unchanged, so it is unconstrained.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

__all__ = [
    "CovarianceStructure",
    "diagonal_mask",
    "lambda_from_phi",
    "phi_from_theta",
    "structure_for_terms",
    "theta_from_phi",
]


@dataclasses.dataclass(frozen=True)
class CovarianceStructure:
    """Which entries of one factor's ``Λ`` (q×q) are free parameters.

    Attributes:
        q: the number of random effects per level.
        rows, cols: the free entries' positions, in lme4's θ order.
        term_slices: for each term on the factor, ``(start, stop)`` of its
            columns of ``Λ``.
    """

    q: int
    rows: tuple[int, ...]
    cols: tuple[int, ...]
    term_slices: tuple[tuple[int, int], ...]

    @property
    def n_params(self) -> int:
        """The number of free entries of Λ (θ's length for this factor)."""
        return len(self.rows)

    @property
    def is_diagonal_entry(self) -> np.ndarray:
        """Boolean mask (n_params,): which free entries are on the diagonal."""
        return np.asarray(self.rows) == np.asarray(self.cols)


def diagonal_mask(structures: Sequence[CovarianceStructure]) -> np.ndarray:
    """Boolean mask over the concatenated θ of all factors: the diagonal entries."""
    return np.concatenate([s.is_diagonal_entry for s in structures])


def structure_for_terms(sizes: Sequence[int]) -> CovarianceStructure:
    """The block-diagonal structure of the terms of one grouping factor.

    Args:
        sizes: the number of columns of each term's model matrix; each term
            is a full lower-triangular block (its effects correlated). lme4's
            ``(x || g)`` is several terms of one column each.
    """
    rows: list[int] = []
    cols: list[int] = []
    slices = []
    offset = 0
    for size in sizes:
        for j in range(size):
            for i in range(j, size):
                rows.append(offset + i)
                cols.append(offset + j)
        slices.append((offset, offset + size))
        offset += size
    return CovarianceStructure(offset, tuple(rows), tuple(cols), tuple(slices))


def lambda_from_phi(
    phi: Float[Array, " n_params"], structure: CovarianceStructure, zero: Bool[Array, " n_params"] | None = None
) -> Float[Array, "q q"]:
    """Builds ``Λ`` (q×q) from the log-Cholesky parameters ``φ`` (n_params,).

    ``zero`` (n_params,) bool, optional: diagonal entries held at exactly 0
    (a boundary); their ``φ`` is ignored and gets a zero gradient.
    """
    diag = jnp.asarray(structure.is_diagonal_entry)
    # exp only where it is taken: off-diagonal φ may be large.
    values = jnp.where(diag, jnp.exp(jnp.where(diag, phi, 0.0)), phi)
    if zero is not None:
        values = jnp.where(diag & zero, 0.0, values)
    lam = jnp.zeros((structure.q, structure.q), dtype=phi.dtype)
    return lam.at[np.asarray(structure.rows), np.asarray(structure.cols)].set(values)


def theta_from_phi(
    phi: Float[np.ndarray, " n_params"], structures: Sequence[CovarianceStructure]
) -> Float[np.ndarray, " n_params"]:
    """lme4's θ from the concatenated ``φ`` of all factors (numpy, host side)."""
    diag = diagonal_mask(structures)
    phi = np.asarray(phi, dtype=float)
    # exp only of the diagonal entries: an off-diagonal entry may be large.
    return np.where(diag, np.exp(np.where(diag, phi, 0.0)), phi)


def phi_from_theta(
    theta: Float[np.ndarray, " n_params"], structures: Sequence[CovarianceStructure]
) -> Float[np.ndarray, " n_params"]:
    """Inverse of :func:`theta_from_phi`; a zero diagonal maps to ``-inf``."""
    diag = diagonal_mask(structures)
    theta = np.asarray(theta, dtype=float)
    if np.any(theta[diag] < 0):
        raise ValueError("diagonal entries of theta must be >= 0")
    with np.errstate(divide="ignore"):
        return np.where(diag, np.log(np.where(diag, theta, 1.0)), theta)


def split_params(params, structures: Sequence[CovarianceStructure]) -> list:
    """Splits a flat parameter vector into one piece per grouping factor."""
    out, start = [], 0
    for s in structures:
        out.append(params[start : start + s.n_params])
        start += s.n_params
    return out
