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

from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float

from ._covariance import lambda_from_phi, split_params
from ._index import DenseLayout
from ._linalg import (
    batched_cholesky,
    batched_solve_lower,
    batched_solve_upper_t,
    inverse_from_chol,
    log_det_from_chol,
    logdet_and_quadratic,
    lower_as_symmetric,
    pair_sum,
)
from ._precision import highest_precision
from ._statistics import DesignStatistics, ModelStatistics

__all__ = ["Modes", "Solution", "conditional_modes", "objective", "solve", "standard_criterion"]


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


def _schur_lower(ztz: jax.Array, k_upper: jax.Array, lams: Sequence[jax.Array], layout: DenseLayout):
    """``S = Λ₂ᵀ(Z₂ᵀZ₂ − K)Λ₂ + I``, exact in its lower triangle (all that is read).

    ``k_upper`` holds K on and above the diagonal, so ``k_upperᵀ`` holds its
    lower triangle. A diagonal Λ₂ maps the lower triangle to itself, so
    the full symmetric K (two transposes of Q₂×Q₂ matrices, forward and
    reverse) is built only when Λ₂ has blocks.
    """
    eye = jnp.eye(layout.size, dtype=ztz.dtype)
    if _scalar_diagonal(lams, layout) is not None:
        # (Z₂ᵀZ₂ − K_upper)ᵀ: Z₂ᵀZ₂ is symmetric. Transposed as a whole, so that
        # the column-major copy LAPACK needs reads its operands in memory order.
        return _congruence(ztz - k_upper, lams, layout).T + eye
    k = k_upper + k_upper.T - jnp.diag(jnp.diagonal(k_upper))
    return _congruence(ztz - k, lams, layout) + eye


class _Factorization(eqx.Module):
    chol1: jax.Array  # (J₁, q₁, q₁) factors of A₁₁
    r1: jax.Array  # (J₁, q₁, p+1)
    schur: jax.Array  # (Q₂, Q₂) S, the dense Schur complement (lower triangle)
    t: jax.Array  # (Q₂, p+1) its right-hand side
    log_det_a: jax.Array  # log|A|
    chol_m: jax.Array  # (p+1, p+1)
    lams: tuple


def _augmented(stats: ModelStatistics) -> tuple[jax.Array, jax.Array, jax.Array]:
    """``[X y]ᵀ[X y]`` (p+1, p+1), ``Z₁ᵀ[X y]`` (J₁, q₁, p+1), ``Z₂ᵀ[X y]`` (Q₂, p+1)."""
    d, r = stats.design, stats.response
    p = d.n_fixed
    top = jnp.concatenate([jnp.eye(p, dtype=r.yty.dtype), r.Xty[:, None]], axis=1)
    xyxy = jnp.concatenate([top, jnp.concatenate([r.Xty, r.yty[None]])[None, :]], axis=0)
    ztxy = jnp.concatenate([d.ZtX, r.Zty[..., None]], axis=-1)
    dense_ztxy = jnp.concatenate([d.dense_ZtX, r.dense_Zty[:, None]], axis=-1)
    return xyxy, ztxy, dense_ztxy


def lambdas(
    phi: Float[Array, " n_params"], stats: ModelStatistics, zero: Bool[Array, " n_params"] | None = None
) -> tuple[Float[Array, "q q"], ...]:
    """Each factor's Λ̃ (q_f, q_f) in the standardised units, from φ."""
    structures = stats.structures
    zeros = [None] * len(structures) if zero is None else split_params(zero, structures)
    return tuple(
        lambda_from_phi(p, s, z)
        for p, s, z in zip(split_params(phi, structures), structures, zeros, strict=True)
    )


def _factorize(phi: jax.Array, stats: ModelStatistics, zero: jax.Array | None) -> _Factorization:
    return factorize_lambdas(lambdas(phi, stats, zero), stats)


def _cross_weighted(d: DesignStatistics, w: jax.Array) -> jax.Array:
    """K = Σ_j C_jᵀ W_j C_j (Q₂, Q₂), on and above the diagonal (``_schur_lower`` reads
    that), for W (J₁, q₁, q₁): a matrix product over the dense ``cross_matrix``, or the
    sparse pairs' sum."""
    q2 = d.dense_layout.size
    if d.cross_matrix is not None:
        cw = jnp.einsum("jpa,jab->jpb", d.cross_matrix, w)
        return jnp.triu(jnp.einsum("jpb,jqb->pq", cw, d.cross_matrix))
    assert d.pairs is not None  # one of the two is there with a dense part
    return jnp.reshape(pair_sum(w.reshape(w.shape[0], -1), d.pairs, q2 * q2), (q2, q2))


def factorize_lambdas(lams: Sequence[jax.Array], stats: ModelStatistics) -> _Factorization:
    """The blocked Cholesky factorisation of A = ΛᵀZᵀZΛ + I and of M, the Schur
    complement of [X y], from each factor's standardised Λ̃ (q_f, q_f)."""
    d = stats.design
    lam1 = lams[0]
    q1 = lam1.shape[0]
    xyxy, ztxy, dense_ztxy = _augmented(stats)
    a11 = jnp.einsum("ab,jac,cd->jbd", lam1, d.ZtZ, lam1) + jnp.eye(q1, dtype=lam1.dtype)
    chol1 = batched_cholesky(a11)
    r1 = batched_solve_lower(chol1, jnp.einsum("ab,jac->jbc", lam1, ztxy))
    m = xyxy - jnp.einsum("jap,jaq->pq", r1, r1)
    layout = d.dense_layout
    q2 = layout.size
    dense = d.index.dense
    if dense is not None:  # factors after the first (q2 > 0)
        # W_j = Λ₁ A₁₁,j⁻¹ Λ₁ᵀ = G_jᵀ G_j with G_j = L_j⁻¹ Λ₁ᵀ.
        g = batched_solve_lower(chol1, jnp.broadcast_to(lam1.T, chol1.shape))
        w = jnp.einsum("jab,jac->jbc", g, g)
        k_upper = _cross_weighted(d, w)
        level = dense.cross_level
        # h_e = c_eᵀ W_j Z₁ᵀ[X y]_j per stored non-zero, as broadcast products: an
        # einsum here becomes one tiny batched matrix product per non-zero on CPU.
        cw = jnp.sum(d.cross_values[:, :, None] * w[level], axis=1)
        h_rows = jnp.sum(cw[:, :, None] * ztxy[level], axis=1)
        h = jax.ops.segment_sum(h_rows, dense.cross_column, q2)
        dense_lams = lams[1:]
        s = _schur_lower(d.dense_ZtZ, k_upper, dense_lams, layout)
        t = _scale_dense_rows(dense_ztxy - h, dense_lams, layout)
        log_det_s, quad = logdet_and_quadratic(s, t)
        m = m - quad
    else:
        s = jnp.zeros((0, 0), lam1.dtype)
        t = jnp.zeros((0, m.shape[0]), lam1.dtype)
        log_det_s = 0.0
    # Symmetrise: M is symmetric in exact arithmetic; round-off would bias the factor.
    chol_m = batched_cholesky(0.5 * (m + m.T))
    log_det_a = log_det_from_chol(chol1) + log_det_s
    return _Factorization(chol1, r1, s, t, log_det_a, chol_m, tuple(lams))


def _dof(stats: ModelStatistics, reml: bool) -> jax.Array:
    n = stats.design.n_obs
    return n - stats.n_fixed if reml else n


def _criterion(fac: _Factorization, stats: ModelStatistics, reml: bool):
    p = fac.chol_m.shape[0] - 1
    r2 = fac.chol_m[p, p] ** 2
    dof = _dof(stats, reml)
    value = fac.log_det_a + dof * (1.0 + jnp.log(2.0 * jnp.pi * r2 / dof))
    if reml:
        value = value + log_det_from_chol(fac.chol_m[:p, :p])
    return value, r2


@highest_precision
def standard_criterion(
    phi: Float[Array, " n_params"],
    stats: ModelStatistics,
    reml: bool = True,
    zero: Bool[Array, " n_params"] | None = None,
) -> Float[Array, ""]:
    """The profiled criterion of the standardised problem (what the fit minimises).

    It differs from :func:`objective` by a constant of the data (see
    :func:`scale_correction`), so its minimiser is the same and its relative
    changes do not depend on the units of y or X.
    """
    value, _ = _criterion(_factorize(phi, stats, zero), stats, reml)
    return value


def scale_correction(stats: ModelStatistics, reml: bool = True) -> Float[Array, ""]:
    """``objective − standard_criterion``: what standardising changed.

    ``2·dof·log(y_scale)`` for the response's scale, ``2 log|det R|`` for REML
    (``log|XᵀV⁻¹X| = log|QᵀV⁻¹Q| + 2 log|det R|``), and ``−Σ log wᵢ`` for the
    prior weights (``log|V|`` with residual variances σ²/wᵢ).
    """
    scaling = stats.design.scaling
    value = 2.0 * _dof(stats, reml) * jnp.log(stats.response.y_scale) - scaling.sum_log_weights
    if reml:
        value = value + 2.0 * scaling.log_det_r
    return value


@highest_precision
def objective(
    phi: Float[Array, " n_params"],
    stats: ModelStatistics,
    reml: bool = True,
    zero: Bool[Array, " n_params"] | None = None,
) -> Float[Array, ""]:
    """The profiled criterion: REML criterion (``reml=True``) or ML deviance.

    Model (lme4's): ``y = Xβ + Zb + ε``, ``b ~ N(0, σ²ΛΛᵀ)``, ``ε ~ N(0, σ²W⁻¹)``;
    β and σ² profiled out; ``−2`` times the (restricted) log-likelihood,
    constants included, in the user's units.

    Args:
        phi: (n_params,) log-Cholesky parameters of the *standardised* Λ̃ (see
            ``jaxmixed.core._statistics``), factor by factor, lme4's θ order within
            a factor, ``log`` of the diagonal entries.
        stats: the model's statistics.
        reml: REML criterion if True, else the deviance.
        zero: (n_params,) bool, optional: diagonal entries held at exactly 0.

    Returns:
        A scalar. Pure: jit, grad and vmap over ``phi`` or over the statistics.

    Examples:
        The REML criterion of sleepstudy's model at a fit's optimum, and its gradient there:

        >>> import jax
        >>> import jaxmixed as jm
        >>> from jaxmixed import core
        >>> design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
        >>> with jax.enable_x64(True):
        ...     stats = core.model_statistics(jm.design.prepare(design, arrays), arrays.y)
        ...     fit = jax.jit(core.fit)(stats)   # compiled: op by op is slow
        ...     value, grad = jax.value_and_grad(core.objective)(fit.phi, stats)
        ...     print(round(float(value), 4), bool(jax.numpy.abs(grad).max() < 1e-5))
        1743.6283 True
    """
    return standard_criterion(phi, stats, reml, zero) + scale_correction(stats, reml)


class Solution(eqx.Module):
    """The profiled solution at one φ, in the standardised units.

    ``beta`` (p,) coefficients of Q; ``vcov_beta`` (p, p); ``sigma``; ``b`` and
    ``b_cov`` per factor: conditional modes (J_f, q_f) of b̃ and their
    conditional covariances (J_f, q_f, q_f); ``criterion``: the standardised
    criterion.
    """

    beta: Float[Array, " p"]
    vcov_beta: Float[Array, "p p"]
    sigma: Float[Array, ""]
    b: tuple[Float[Array, "J q"], ...]
    b_cov: tuple[Float[Array, "J q q"], ...]
    criterion: Float[Array, ""]


def _dense_modes(fac: _Factorization, stats: ModelStatistics, beta: jax.Array):
    """û₂ and b̃₂ of the dense factors, the chol of S, and ``C_j b₂`` summed per level."""
    d = stats.design
    p = beta.shape[0]
    chol2 = jnp.linalg.cholesky(lower_as_symmetric(fac.schur), symmetrize_input=False)
    r_dense = jax.scipy.linalg.solve_triangular(chol2, fac.t, lower=True)
    rhs2 = r_dense[:, p] - r_dense[:, :p] @ beta
    u2 = jax.scipy.linalg.solve_triangular(chol2, rhs2, lower=True, trans="T")
    b2 = _scale_dense_rows(u2[:, None], [lam.T for lam in fac.lams[1:]], d.dense_layout)[:, 0]
    # B_j u₂ = L_j⁻¹ Λ₁ᵀ C_j b₂, with C_j b₂ summed over the stored non-zeros.
    dense = d.index.dense
    assert dense is not None  # called only for the factors after the first
    cb = jax.ops.segment_sum(
        d.cross_values * b2[dense.cross_column][:, None], dense.cross_level, d.ZtZ.shape[0]
    )
    return u2, b2, chol2, cb


def _factor1_inner(fac: _Factorization, stats: ModelStatistics, g: jax.Array, s_inv: jax.Array):
    """``I + G_j (C_j T C_jᵀ) G_jᵀ`` per level (see solve)."""
    d = stats.design
    q2 = d.dense_layout.size
    lam1 = fac.lams[0]
    q1 = lam1.shape[0]
    lam2_t = [lam.T for lam in fac.lams[1:]]
    t_mat = _congruence(s_inv, lam2_t, d.dense_layout)
    if d.cross_matrix is not None:  # C_j T C_jᵀ as matrix products
        ct = jnp.einsum("jpa,pq->jqa", d.cross_matrix, t_mat)
        ctc = jnp.einsum("jqa,jqb->jab", ct, d.cross_matrix)
        return jnp.eye(q1, dtype=g.dtype) + jnp.einsum("jab,jbc,jdc->jad", g, ctc, g)
    pairs = d.pairs
    assert pairs is not None  # called only with a dense part
    # In target order: T is read in memory order, the sums land in J₁ slots.
    prods = pairs.products.reshape(-1, q1, q1)
    mirrored = (pairs.target // q2 != pairs.target % q2)[:, None, None]
    per_pair = t_mat.reshape(-1)[pairs.target][:, None, None] * (
        prods + jnp.where(mirrored, prods.transpose(0, 2, 1), 0.0)
    )
    ctc = jax.ops.segment_sum(per_pair, pairs.level, d.ZtZ.shape[0])
    return jnp.eye(q1, dtype=g.dtype) + jnp.einsum("jab,jbc,jdc->jad", g, ctc, g)


@highest_precision
def solve(
    phi: Float[Array, " n_params"],
    stats: ModelStatistics,
    reml: bool = True,
    zero: Bool[Array, " n_params"] | None = None,
) -> Solution:
    """β̃, σ̂, the conditional modes and their covariances at ``phi`` (standardised).

    ``β̂ = L_X⁻ᵀ c_β``, ``σ̂² = r²/dof``, ``vcov = σ̂² (L_X L_Xᵀ)⁻¹``, ``b̃ = Λ̃ û``
    and the conditional covariances ``σ̂² Λ̃ (A⁻¹)_jj Λ̃ᵀ`` per level.
    """
    fac = _factorize(phi, stats, zero)
    value, r2 = _criterion(fac, stats, reml)
    p = stats.n_fixed
    sigma2 = r2 / _dof(stats, reml)
    l_x = fac.chol_m[:p, :p]
    beta = jax.scipy.linalg.solve_triangular(l_x, fac.chol_m[p, :p], lower=True, trans="T")
    l_x_inv = jax.scipy.linalg.solve_triangular(l_x, jnp.eye(p, dtype=phi.dtype), lower=True)
    vcov = sigma2 * (l_x_inv.T @ l_x_inv)
    modes = conditional_modes(fac, stats, beta)
    covs = tuple(sigma2 * c for c in conditional_covariances(fac, stats, modes.chol_schur))
    return Solution(beta, vcov, jnp.sqrt(sigma2), modes.b, covs, value)


def conditional_covariances(
    fac: _Factorization, stats: ModelStatistics, chol_schur: Float[Array, "Q Q"]
) -> tuple[Float[Array, "J q q"], ...]:
    """``Λ̃ (A⁻¹)_jj Λ̃ᵀ`` per level of each factor (J_f, q_f, q_f), standardised units,
    without σ² (the GLMM's conditional covariances; the LMM's times σ̂²); ``chol_schur``
    from :func:`conditional_modes`."""
    lam1 = fac.lams[0]
    layout = stats.design.dense_layout
    g = batched_solve_lower(fac.chol1, jnp.broadcast_to(lam1.T, fac.chol1.shape))  # L_j⁻¹Λ₁ᵀ
    if layout.size:
        # (A⁻¹)₁₁,j = L_j⁻ᵀ (I + B_j S⁻¹ B_jᵀ) L_j⁻¹ with B_j = L_j⁻¹Λ₁ᵀC_jΛ₂, so
        # B_j S⁻¹ B_jᵀ = G_j (C_j T C_jᵀ) G_jᵀ, T = Λ₂S⁻¹Λ₂ᵀ: a sum over the stored
        # pairs (each off-diagonal pair stands for itself and its mirror).
        s_inv = inverse_from_chol(chol_schur)
        inner = _factor1_inner(fac, stats, g, s_inv)
    else:
        inner = jnp.broadcast_to(jnp.eye(lam1.shape[0], dtype=lam1.dtype), fac.chol1.shape)
    covs = [jnp.einsum("jab,jac,jcd->jbd", g, inner, g)]  # Λ L⁻ᵀ inner L⁻¹ Λᵀ
    if layout.size:
        for (off, j, q), lam in zip(layout.blocks, fac.lams[1:], strict=True):
            cols = off + q * jnp.arange(j)[:, None] + jnp.arange(q)[None, :]  # (j, q)
            block_inv = s_inv[cols[:, :, None], cols[:, None, :]]  # diagonal blocks of S⁻¹
            block_inv = 0.5 * (block_inv + block_inv.transpose(0, 2, 1))  # exactly symmetric
            covs.append(jnp.einsum("ab,jbc,dc->jad", lam, block_inv, lam))
    return tuple(covs)


class Modes(eqx.Module):
    """The conditional modes at given β (standardised units): ``u`` per factor
    (J_f, q_f) the spherical modes û, ``b`` per factor the modes b̃ = Λ̃û, and
    ``chol_schur`` the Cholesky factor of the dense factors' Schur complement S
    ((0, 0) with one factor)."""

    u: tuple[Float[Array, "J q"], ...]
    b: tuple[Float[Array, "J q"], ...]
    chol_schur: Float[Array, "Q Q"]


def conditional_modes(fac: _Factorization, stats: ModelStatistics, beta: Float[Array, " p"]) -> Modes:
    """û = A⁻¹ Λ̃ᵀZ̃ᵀ(ỹ − Qβ) for any β (p,) in the standardised units (the profiled β̂
    gives the LMM's modes; a fixed β the GLMM's PIRLS step), through the blocked factor."""
    p = stats.n_fixed
    lam1 = fac.lams[0]
    layout = stats.design.dense_layout
    rhs1 = fac.r1[..., p] - fac.r1[..., :p] @ beta  # (J₁, q₁)
    us, bs = [], []
    chol2 = jnp.zeros((0, 0), beta.dtype)
    if layout.size:
        u2, b2, chol2, cb = _dense_modes(fac, stats, beta)
        rhs1 = rhs1 - batched_solve_lower(fac.chol1, (cb @ lam1)[..., None])[..., 0]
    u1 = batched_solve_upper_t(fac.chol1, rhs1[..., None])[..., 0]
    us.append(u1)
    bs.append(u1 @ lam1.T)
    if layout.size:
        us.extend(u2[off : off + j * q].reshape(j, q) for off, j, q in layout.blocks)
        bs.extend(b2[off : off + j * q].reshape(j, q) for off, j, q in layout.blocks)
    return Modes(tuple(us), tuple(bs), chol2)
