"""The profiled REML/ML criterion from per-level sufficient statistics.

Notation (lme4's; Bates et al. 2015, "Fitting linear mixed-effects models
using lme4", section 3): ``y = Xβ + Zb + ε``, ``b = Λu``,
``u ~ N(0, σ²I)``, ``ε ~ N(0, σ²I)``. With ``A = ΛᵀZᵀZΛ + I = L Lᵀ`` and the
Cholesky factor of the augmented matrix

    M = [X y]ᵀ[X y] − R_Zᵀ R_Z,   R_Z = L⁻¹ Λᵀ Zᵀ[X y],   M = L_M L_Mᵀ,

the top-left p×p block of ``L_M`` is ``L_X``, its last row holds ``c_β`` and
its last diagonal entry is ``r``, the square root of the penalised residual
sum of squares. Then (constants included, on lme4's scale)

    ML:    d(θ)  = log|A| + n (1 + log(2π r²/n))
    REML:  dR(θ) = log|A| + log|L_X|² + (n−p)(1 + log(2π r²/(n−p)))

The grouping factor with the most levels (factor 1) gives a block-diagonal
``A₁₁`` (J₁ blocks of q₁×q₁): factored block by block. Other factors (if any)
form a dense block of size Q₂ = Σ_f J_f q_f, reduced by its Schur complement

    S = Λ₂ᵀ (Z₂ᵀZ₂ − Σ_j C_jᵀ W_j C_j) Λ₂ + I,   W_j = Λ₁ A₁₁,j⁻¹ Λ₁ᵀ,

where ``C_j`` (q₁×Q₂) are the rows of the cross-tabulation ``Z₁ᵀZ₂`` for
level j. ``C`` is sparse (each level of factor 1 meets few levels of the
others), so the sum runs over the stored pairs of its non-zeros. ``V`` is
never formed; each evaluation costs O(J₁q₁³ + pairs + Q₂³), independent of n.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import CovarianceStructure, lambda_from_phi, split_params
from ._linalg import (
    PairSum,
    batched_cholesky,
    batched_solve_lower,
    batched_solve_upper_t,
    log_det_from_chol,
    logdet_and_quadratic,
    pair_sum,
)

__all__ = [
    "DenseLayout",
    "ModelStatistics",
    "compute_statistics",
    "objective",
    "solve_mixed_model",
]


@dataclasses.dataclass(frozen=True)
class DenseLayout:
    """Where the factors after the first sit in the dense block.

    ``blocks[k] = (offset, n_levels, q)`` for factor k+2: its random effects
    occupy columns ``offset + level * q + i`` of the Q₂ dense columns.
    """

    blocks: tuple[tuple[int, int, int], ...] = ()

    @property
    def size(self) -> int:
        return sum(j * q for _, j, q in self.blocks)


class ModelStatistics(eqx.Module):
    """Everything the objective needs; no array depends on n.

    Shapes (p fixed effects; factor 1 with J₁ levels and q₁ effects; Q₂ dense
    columns for the other factors, E stored non-zeros of ``Z₁ᵀZ₂`` and P pairs
    of them that share a level of factor 1):

    - ``XyXy`` (p+1, p+1): ``[X y]ᵀ[X y]``.
    - ``ZtZ`` (J₁, q₁, q₁), ``ZtXy`` (J₁, q₁, p+1): per-level sums for factor 1.
    - ``dense_ZtZ`` (Q₂, Q₂), ``dense_ZtXy`` (Q₂, p+1): the same for the others.
    - ``cross_values`` (E, q₁), ``cross_level`` (E,), ``cross_column`` (E,).
    - ``pairs``: the map from ``W`` (J₁, q₁²) to the upper triangle of
      ``Σ_j C_jᵀ W_j C_j`` (flattened Q₂×Q₂): one entry per pair of non-zeros
      that share a level of factor 1, with the product of their values.
    """

    XyXy: jax.Array
    ZtZ: jax.Array
    ZtXy: jax.Array
    dense_ZtZ: jax.Array
    dense_ZtXy: jax.Array
    cross_values: jax.Array
    cross_level: jax.Array
    cross_column: jax.Array
    pairs: PairSum
    n_obs: int = eqx.field(static=True)
    structures: tuple[CovarianceStructure, ...] = eqx.field(static=True)
    dense_layout: DenseLayout = eqx.field(static=True)

    @property
    def n_fixed(self) -> int:
        return self.XyXy.shape[0] - 1

    @property
    def n_params(self) -> int:
        return sum(s.n_params for s in self.structures)


def _available_memory() -> int:
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):  # pragma: no cover - non-POSIX
        return 8 * 2**30


def _bytes(n: int) -> str:
    for unit, size in (("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:.2f} {unit}"
    return f"{n} bytes"


def dense_block_bytes(q2: int, n_pairs: int, q1: int = 1, itemsize: int = 8) -> int:
    """Memory an objective evaluation with its gradient needs for the dense part.

    The Schur complement, its Cholesky factor, its inverse and their cotangents
    are about six Q₂×Q₂ arrays; each stored pair holds q₁² products and two
    indices, in two orders, plus a value and its cotangent per evaluation.
    """
    return 6 * q2 * q2 * itemsize + n_pairs * (2 * (q1 * q1 * itemsize + 8) + 2 * itemsize)


@jax.jit
def _factor1_sums(z1: jax.Array, xy: jax.Array, codes: jax.Array, n_levels_array: jax.Array):
    n_levels = n_levels_array.shape[0]
    ztz = jax.ops.segment_sum(z1[:, :, None] * z1[:, None, :], codes, n_levels)
    ztxy = jax.ops.segment_sum(z1[:, :, None] * xy[:, None, :], codes, n_levels)
    return ztz, ztxy


def compute_statistics(
    y: np.ndarray,
    X: np.ndarray,
    codes: Sequence[np.ndarray],
    Z: Sequence[np.ndarray],
    structures: Sequence[CovarianceStructure],
    n_levels: Sequence[int],
    dtype=jnp.float64,
    memory_limit: int | None = None,
) -> ModelStatistics:
    """One pass over the data: the sufficient statistics of the model.

    Args:
        y: (n,) response. X: (n, p) fixed-effects matrix.
        codes: per factor, (n,) level codes in ``[0, n_levels[f])``; factor 1
            (the one with the most levels) first.
        Z: per factor, (n, q_f) random-effects model matrix.
        structures: per factor, its covariance structure.
        n_levels: per factor, its number of levels.
        dtype: floating dtype of the statistics (float64 by default).
        memory_limit: bytes allowed for the dense block of the other factors;
            default half the machine's memory.
    """
    if jnp.zeros((), dtype).dtype != jnp.dtype(dtype):
        raise ValueError(
            f"{jnp.dtype(dtype)} statistics need JAX's 64-bit mode: call this inside "
            "`with jax.enable_x64(True):` (fit_reml does so itself), or pass dtype=jnp.float32"
        )
    n = len(y)
    xy = np.concatenate([np.asarray(X, float), np.asarray(y, float)[:, None]], axis=1)
    XyXy = xy.T @ xy
    ztz, ztxy = _factor1_sums(
        jnp.asarray(Z[0], dtype),
        jnp.asarray(xy, dtype),
        jnp.asarray(codes[0], jnp.int32),
        jnp.zeros((n_levels[0], 0), jnp.int8),
    )

    blocks, offset = [], 0
    for f in range(1, len(Z)):
        blocks.append((offset, int(n_levels[f]), Z[f].shape[1]))
        offset += int(n_levels[f]) * Z[f].shape[1]
    layout = DenseLayout(tuple(blocks))
    q1 = Z[0].shape[1]
    q2 = layout.size
    if q2 == 0:
        empty_i = np.zeros((0,), np.int32)
        pairs = _pair_map(np.zeros((0,), np.int64), empty_i, np.zeros((0, q1 * q1)), 0, dtype)
        dense_ztz = np.zeros((0, 0))
        dense_ztxy = np.zeros((0, xy.shape[1]))
        cross_values, cross_level, cross_column = np.zeros((0, q1)), empty_i, empty_i
    else:
        # Each row's non-zeros in the dense columns: (n, K) columns and values.
        cols = np.concatenate(
            [
                (off + np.asarray(codes[f + 1], np.int64) * q)[:, None] + np.arange(q)[None, :]
                for f, (off, _, q) in enumerate(blocks)
            ],
            axis=1,
        )
        vals = np.concatenate([np.asarray(Z[f + 1], float) for f in range(len(blocks))], axis=1)
        # Non-zeros of Z₁ᵀZ₂, keyed by (level of factor 1, dense column).
        key = np.asarray(codes[0], np.int64)[:, None] * q2 + cols
        unique_key, inverse = np.unique(key.ravel(), return_inverse=True)
        z1 = np.asarray(Z[0], float)
        cross_values = np.stack(
            [
                np.bincount(inverse, weights=(z1[:, [a]] * vals).ravel(), minlength=len(unique_key))
                for a in range(q1)
            ],
            axis=1,
        )
        cross_level = (unique_key // q2).astype(np.int32)
        cross_column = (unique_key % q2).astype(np.int32)
        per_level = np.bincount(cross_level, minlength=n_levels[0])
        n_pairs = int(np.sum(per_level.astype(np.int64) ** 2))
        limit = _available_memory() // 2 if memory_limit is None else memory_limit
        need = dense_block_bytes(q2, n_pairs, q1, jnp.dtype(dtype).itemsize)
        if need > limit:
            raise MemoryError(
                f"the random effects of the factors after the first need a dense block "
                f"of {q2} x {q2} with {n_pairs} cross pairs: about {_bytes(need)}, "
                f"over the limit of {_bytes(limit)} (raise memory_limit to allow it)"
            )
        # Checked before any Q₂×Q₂ array is allocated.
        dense_ztz = np.bincount(
            (cols[:, :, None] * q2 + cols[:, None, :]).ravel(),
            weights=(vals[:, :, None] * vals[:, None, :]).ravel(),
            minlength=q2 * q2,
        ).reshape(q2, q2)
        dense_ztxy = np.stack(
            [
                np.bincount(cols.ravel(), weights=(vals * xy[:, [c]]).ravel(), minlength=q2)
                for c in range(xy.shape[1])
            ],
            axis=1,
        )
        # All pairs of non-zeros that share a level of factor 1 (entries are sorted
        # by level because the key is level-major); K is symmetric, so keep the
        # pairs on or above its diagonal, sorted by their target entry of K.
        starts = np.concatenate([[0], np.cumsum(per_level)[:-1]])
        reps = per_level[cross_level]
        first = np.repeat(np.arange(len(unique_key)), reps)
        within = np.arange(len(first)) - np.repeat(np.cumsum(reps) - reps, reps)
        second = np.repeat(starts[cross_level], reps) + within
        upper = cross_column[first] <= cross_column[second]
        first, second = first[upper], second[upper]
        target = cross_column[first].astype(np.int64) * q2 + cross_column[second]
        products = (cross_values[first][:, :, None] * cross_values[second][:, None, :]).reshape(-1, q1 * q1)
        pairs = _pair_map(target, cross_level[first], products, q2, dtype)

    return ModelStatistics(
        XyXy=jnp.asarray(XyXy, dtype),
        ZtZ=ztz,
        ZtXy=ztxy,
        dense_ZtZ=jnp.asarray(dense_ztz, dtype),
        dense_ZtXy=jnp.asarray(dense_ztxy, dtype),
        cross_values=jnp.asarray(cross_values, dtype),
        cross_level=jnp.asarray(cross_level),
        cross_column=jnp.asarray(cross_column),
        pairs=pairs,
        n_obs=n,
        structures=tuple(structures),
        dense_layout=layout,
    )


def _pair_map(target, level, products, q2, dtype) -> PairSum:
    """The pairs, given in level order, stored in both orders (see PairSum)."""
    index_type = jnp.int32 if q2 * q2 < 2**31 else jnp.int64
    by_target = np.argsort(target, kind="stable")
    return PairSum(
        target=jnp.asarray(target[by_target], index_type),
        level=jnp.asarray(level[by_target], jnp.int32),
        products=jnp.asarray(products[by_target], dtype),
        level_sorted=jnp.asarray(level, jnp.int32),
        target_by_level=jnp.asarray(target, index_type),
        products_by_level=jnp.asarray(products, dtype),
    )


def _scalar_diagonal(lams: Sequence[jax.Array], layout: DenseLayout) -> jax.Array | None:
    """The diagonal of Λ₂ (Q₂,) when every dense factor has one effect, else None."""
    if not all(q == 1 for _, _, q in layout.blocks):
        return None
    return jnp.concatenate(
        [jnp.broadcast_to(lam[0, 0], (j,)) for (_, j, _), lam in zip(layout.blocks, lams, strict=True)]
    )


def _scale_dense_rows(mat: jax.Array, lams: Sequence[jax.Array], layout: DenseLayout) -> jax.Array:
    """``Λ₂ᵀ mat`` for the block-diagonal ``Λ₂`` of the dense factors; ``mat`` (Q₂, k)."""
    diag = _scalar_diagonal(lams, layout)
    if diag is not None:  # scalar terms: Λ₂ is diagonal, one elementwise pass
        return mat * diag[:, None]
    pieces = []
    for (off, j, q), lam in zip(layout.blocks, lams, strict=True):
        block = mat[off : off + j * q].reshape(j, q, -1)
        pieces.append(jnp.einsum("ab,jac->jbc", lam, block).reshape(j * q, -1))
    return jnp.concatenate(pieces, axis=0)


def _congruence(mat: jax.Array, lams: Sequence[jax.Array], layout: DenseLayout) -> jax.Array:
    """``Λ₂ᵀ mat Λ₂`` for a symmetric ``mat`` (Q₂, Q₂)."""
    diag = _scalar_diagonal(lams, layout)
    if diag is not None:
        return mat * (diag[:, None] * diag[None, :])
    return _scale_dense_rows(_scale_dense_rows(mat, lams, layout).T, lams, layout)


class _Factorization(eqx.Module):
    chol1: jax.Array  # (J₁, q₁, q₁) factors of A₁₁
    r1: jax.Array  # (J₁, q₁, p+1)
    schur: jax.Array  # (Q₂, Q₂) S, the dense Schur complement
    t: jax.Array  # (Q₂, p+1) its right-hand side
    log_det_a: jax.Array  # log|A|
    chol_m: jax.Array  # (p+1, p+1)
    lams: tuple


def _factorize(phi: jax.Array, stats: ModelStatistics) -> _Factorization:
    lams = tuple(
        lambda_from_phi(p, s)
        for p, s in zip(split_params(phi, stats.structures), stats.structures, strict=True)
    )
    lam1 = lams[0]
    q1 = lam1.shape[0]
    a11 = jnp.einsum("ab,jac,cd->jbd", lam1, stats.ZtZ, lam1) + jnp.eye(q1, dtype=phi.dtype)
    chol1 = batched_cholesky(a11)
    r1 = batched_solve_lower(chol1, jnp.einsum("ab,jac->jbc", lam1, stats.ZtXy))
    m = stats.XyXy - jnp.einsum("jap,jaq->pq", r1, r1)
    q2 = stats.dense_layout.size
    if q2:
        # W_j = Λ₁ A₁₁,j⁻¹ Λ₁ᵀ = G_jᵀ G_j with G_j = L_j⁻¹ Λ₁ᵀ.
        g = batched_solve_lower(chol1, jnp.broadcast_to(lam1.T, chol1.shape))
        w = jnp.einsum("jab,jac->jbc", g, g)
        vals = stats.cross_values
        cols = stats.cross_column
        k_upper = pair_sum(w.reshape(w.shape[0], -1), stats.pairs, q2 * q2).reshape(q2, q2)
        k = k_upper + k_upper.T - jnp.diag(jnp.diagonal(k_upper))
        h_rows = jnp.einsum("ea,eab,ebk->ek", vals, w[stats.cross_level], stats.ZtXy[stats.cross_level])
        h = jnp.zeros((q2, m.shape[0]), phi.dtype).at[cols].add(h_rows)
        dense_lams = lams[1:]
        s = _congruence(stats.dense_ZtZ - k, dense_lams, stats.dense_layout) + jnp.eye(q2, dtype=phi.dtype)
        t = _scale_dense_rows(stats.dense_ZtXy - h, dense_lams, stats.dense_layout)
        log_det_s, quad = logdet_and_quadratic(s, t)
        m = m - quad
    else:
        s = jnp.zeros((0, 0), phi.dtype)
        t = jnp.zeros((0, m.shape[0]), phi.dtype)
        log_det_s = 0.0
    # Symmetrise: M is symmetric in exact arithmetic; round-off would bias the factor.
    chol_m = jnp.linalg.cholesky(0.5 * (m + m.T))
    log_det_a = log_det_from_chol(chol1) + log_det_s
    return _Factorization(chol1, r1, s, t, log_det_a, chol_m, lams)


def _criterion(fac: _Factorization, n: int, reml: bool):
    p = fac.chol_m.shape[0] - 1
    log_det_a = fac.log_det_a
    r2 = fac.chol_m[p, p] ** 2
    dof = n - p if reml else n
    value = log_det_a + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))
    if reml:
        value = value + log_det_from_chol(fac.chol_m[:p, :p])
    return value, r2


def objective(phi: jax.Array, stats: ModelStatistics, reml: bool = True) -> jax.Array:
    """The profiled criterion: REML criterion (``reml=True``) or deviance.

    Args:
        phi: (n_params,) log-Cholesky parameters of all factors, lme4's θ order
            with ``log`` of the diagonal entries.
        stats: the model's sufficient statistics.
        reml: REML criterion if True, else the ML deviance (−2 log-likelihood).

    Returns:
        A scalar on lme4's scale (constants included). Pure: jit, grad and vmap
        over ``phi`` (or over batched statistics) apply directly.
    """
    value, _ = _criterion(_factorize(phi, stats), stats.n_obs, reml)
    return value


def solve_mixed_model(phi: jax.Array, stats: ModelStatistics, reml: bool = True) -> dict:
    """β̂, σ̂, the conditional modes and their variances at ``phi``.

    Returns a dict of arrays: ``objective``; ``beta`` (p,); ``sigma``;
    ``vcov_beta`` (p, p); ``b`` (per factor, (J_f, q_f)); ``b_cov`` (per
    factor, (J_f, q_f, q_f)): conditional covariances ``σ̂² Λ (A⁻¹)_jj Λᵀ``.
    """
    fac = _factorize(phi, stats)
    value, r2 = _criterion(fac, stats.n_obs, reml)
    p = stats.n_fixed
    sigma2 = r2 / (stats.n_obs - p if reml else stats.n_obs)
    l_x = fac.chol_m[:p, :p]
    c_beta = fac.chol_m[p, :p]
    beta = jax.scipy.linalg.solve_triangular(l_x, c_beta, lower=True, trans="T")
    l_x_inv = jax.scipy.linalg.solve_triangular(l_x, jnp.eye(p, dtype=phi.dtype), lower=True)
    vcov = sigma2 * (l_x_inv.T @ l_x_inv)
    lam1 = fac.lams[0]
    q2 = stats.dense_layout.size
    rhs1 = fac.r1[..., p] - fac.r1[..., :p] @ beta  # (J₁, q₁)
    g = batched_solve_lower(fac.chol1, jnp.broadcast_to(lam1.T, fac.chol1.shape))  # L_j⁻¹Λ₁ᵀ
    bs, covs = [], []
    if q2:
        chol2 = jnp.linalg.cholesky(fac.schur)
        r_dense = jax.scipy.linalg.solve_triangular(chol2, fac.t, lower=True)
        rhs2 = r_dense[:, p] - r_dense[:, :p] @ beta
        u2 = jax.scipy.linalg.solve_triangular(chol2, rhs2, lower=True, trans="T")
        b2 = _scale_dense_rows(u2[:, None], [lam.T for lam in fac.lams[1:]], stats.dense_layout)[:, 0]
        # B_j u₂ = L_j⁻¹ Λ₁ᵀ C_j b₂, with C_j b₂ summed over the stored non-zeros.
        cb = jax.ops.segment_sum(
            stats.cross_values * b2[stats.cross_column][:, None],
            stats.cross_level,
            stats.ZtZ.shape[0],
        )
        rhs1 = rhs1 - batched_solve_lower(fac.chol1, (cb @ lam1)[..., None])[..., 0]
        # The dense factors' conditional covariances: diagonal blocks of S⁻¹.
        s_inv_chol = jax.scipy.linalg.solve_triangular(chol2, jnp.eye(q2, dtype=phi.dtype), lower=True)
        # Factor 1: (A⁻¹)₁₁,j = L_j⁻ᵀ (I + B_j S⁻¹ B_jᵀ) L_j⁻¹ with B_j = L_j⁻¹Λ₁ᵀC_jΛ₂,
        # so B_j S⁻¹ B_jᵀ = G_j (C_j T C_jᵀ) G_jᵀ, T = Λ₂S⁻¹Λ₂ᵀ, G_j = L_j⁻¹Λ₁ᵀ; the
        # sparse C_j T C_jᵀ is a sum over the stored pairs (each off-diagonal pair
        # stands for itself and its mirror).
        lam2_t = [lam.T for lam in fac.lams[1:]]
        t_mat = _congruence(s_inv_chol.T @ s_inv_chol, lam2_t, stats.dense_layout)
        pairs = stats.pairs
        q1 = lam1.shape[0]
        prods = pairs.products_by_level.reshape(-1, q1, q1)
        mirrored = (pairs.target_by_level // q2 != pairs.target_by_level % q2)[:, None, None]
        per_pair = t_mat.reshape(-1)[pairs.target_by_level][:, None, None] * (
            prods + jnp.where(mirrored, prods.transpose(0, 2, 1), 0.0)
        )
        ctc = jax.ops.segment_sum(per_pair, pairs.level_sorted, stats.ZtZ.shape[0], indices_are_sorted=True)
        inner = jnp.eye(q1, dtype=phi.dtype) + jnp.einsum("jab,jbc,jdc->jad", g, ctc, g)
    else:
        inner = jnp.broadcast_to(jnp.eye(lam1.shape[0], dtype=phi.dtype), fac.chol1.shape)
    u1 = batched_solve_upper_t(fac.chol1, rhs1[..., None])[..., 0]
    bs.append(u1 @ lam1.T)
    # Λ L⁻ᵀ inner L⁻¹ Λᵀ per level.
    covs.append(sigma2 * jnp.einsum("jab,jac,jcd->jbd", g, inner, g))
    if q2:
        for (off, j, q), lam in zip(stats.dense_layout.blocks, fac.lams[1:], strict=True):
            bs.append(b2[off : off + j * q].reshape(j, q))
            rows = s_inv_chol[:, off : off + j * q].reshape(q2, j, q)
            block_inv = jnp.einsum("rja,rjb->jab", rows, rows)
            covs.append(sigma2 * jnp.einsum("ab,jbc,dc->jad", lam, block_inv, lam))
    return {
        "objective": value,
        "beta": beta,
        "sigma": jnp.sqrt(sigma2),
        "vcov_beta": vcov,
        "b": tuple(bs),
        "b_cov": tuple(covs),
    }
