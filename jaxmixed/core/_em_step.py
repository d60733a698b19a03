"""One EM step for the variance components of one grouping factor (mixedML's Table 1).

Model of the residual ``r = y − f(x)`` (n,): ``r_i = 1β + Z_i b_i + ε_i`` per
level i, ``b_i ~ N(0, D)``, ``ε_i ~ N(0, σ²I)``, ``D = σ²ΛΛᵀ``. Given the
current Λ and σ², with ``A_i = I + ΛᵀZ_iᵀZ_iΛ`` and ``u_i = ΛᵀZ_iᵀ1``:

- E-step: β̂ by generalised least squares; ``b̂_i = ΛA_i⁻¹ΛᵀZ_iᵀ(r_i − 1β̂)``;
  ``C_i = Cov(b_i | r) = σ²ΛA_i⁻¹Λᵀ``.
- ML M-step (Laird and Ware): ``D = (1/m) Σ_i (b̂_ib̂_iᵀ + C_i)`` and
  ``σ² = (1/N) Σ_i (‖ê_i‖² + tr(Z_iᵀZ_i C_i))``, ``ê_i = r_i − 1β̂ − Z_ib̂_i``.
- REML M-step: the same with β integrated out (flat prior): with
  ``v = Var(β̂) = σ²/Σ_i(n_i − u_iᵀA_i⁻¹u_i)`` and ``g_i = −ΛA_i⁻¹u_i``
  (how b̂_i moves with β), ``Cov(b_i | r) = C_i + v g_ig_iᵀ`` and
  ``E‖ε_i‖² = ‖ê_i‖² + n_i v + 2v·1ᵀZ_ig_i + tr(Z_iᵀZ_i(C_i + v g_ig_iᵀ))``.

Each step raises the (restricted) likelihood; its fixed points are the ML or
REML estimates (checked against the core's fits in the tests). Λ is then the
Cholesky factor of D/σ² within the blocks of the factor's terms (``||``
terms stay uncorrelated). The per-level sums are segment sums over the rows.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

from ._covariance import CovarianceStructure

__all__ = ["EMStep", "em_step"]


class EMStep(eqx.Module):
    """The result of one EM step: new ``lam`` (q, q) and ``sigma2``, and the
    E-step's ``beta`` (intercept) and conditional modes ``b`` (J, q)."""

    lam: jax.Array
    sigma2: jax.Array
    beta: jax.Array
    b: jax.Array


def _level_sums(r, z, codes, mask, n_levels):
    """Per level: n_i, Z_iᵀZ_i, Z_iᵀ1, Z_iᵀr, 1ᵀr, rᵀr (padding rows masked)."""
    w = mask.astype(r.dtype)
    zw, rw = z * w[:, None], r * w

    def seg(v):
        return jax.ops.segment_sum(v, codes, n_levels)

    return seg(w), seg(zw[:, :, None] * z[:, None, :]), seg(zw), seg(zw * r[:, None]), seg(rw), seg(rw * r)


def _block_cholesky(d: jax.Array, structure: CovarianceStructure) -> jax.Array:
    """Cholesky factor of ``d`` (q, q) within each term's block (zero across terms)."""
    lam = jnp.zeros_like(d)
    for start, stop in structure.term_slices:
        lam = lam.at[start:stop, start:stop].set(jnp.linalg.cholesky(d[start:stop, start:stop]))
    return lam


def em_step(
    lam: jax.Array,
    sigma2: jax.Array,
    r: jax.Array,
    z: jax.Array,
    codes: jax.Array,
    mask: jax.Array,
    *,
    n_levels: int,
    structure: CovarianceStructure,
    reml: bool = True,
) -> EMStep:
    """One ML or REML EM step (see the module docstring).

    Args:
        lam: (q, q) current Λ (σ-relative, lower triangular, user units).
        sigma2: current σ².
        r (n,), z (n, q), codes (n,), mask (n,): the residual, the factor's
            random-effects rows, level codes and real rows.
        n_levels: J (levels without rows are left out of D's average).
        structure: the factor's covariance structure (its terms' blocks).
    """
    n_i, ztz, zt1, ztr, one_r, rtr = _level_sums(r, z, codes, mask, n_levels)
    q = lam.shape[0]
    a = jnp.eye(q, dtype=r.dtype) + jnp.einsum("ji,ljk,km->lim", lam, ztz, lam)  # ΛᵀZᵀZΛ
    a_inv = jnp.linalg.inv(a)
    u = zt1 @ lam  # (J, q): ΛᵀZ_iᵀ1
    w = ztr @ lam  # (J, q): ΛᵀZ_iᵀr
    prec = jnp.sum(n_i - jnp.einsum("li,lij,lj->l", u, a_inv, u))  # σ²·Σ 1ᵀV⁻¹1
    beta = jnp.sum(one_r - jnp.einsum("li,lij,lj->l", u, a_inv, w)) / prec
    b = jnp.einsum("ij,ljk,lk->li", lam, a_inv, w - beta * u)  # (J, q)
    cov = sigma2 * jnp.einsum("ij,ljk,mk->lim", lam, a_inv, lam)  # C_i
    zb = jnp.einsum("lij,lj->li", ztz, b)
    resid2 = (
        rtr - 2 * beta * one_r + beta**2 * n_i - 2 * jnp.sum(b * (ztr - beta * zt1), 1) + jnp.sum(b * zb, 1)
    )
    extra = jnp.zeros_like(n_i)
    if reml:
        v = sigma2 / prec
        g = -jnp.einsum("ij,ljk,lk->li", lam, a_inv, u)  # (J, q)
        cov = cov + v * g[:, :, None] * g[:, None, :]
        extra = n_i * v + 2 * v * jnp.sum(zt1 * g, 1)
    real = n_i > 0
    m = jnp.sum(real.astype(r.dtype))
    d_new = jnp.sum(jnp.where(real[:, None, None], b[:, :, None] * b[:, None, :] + cov, 0.0), 0) / m
    trace = jnp.einsum("lij,lji->l", ztz, cov)
    sigma2_new = jnp.sum(resid2 + extra + trace) / jnp.sum(n_i)
    lam_new = _block_cholesky(d_new / sigma2_new, structure)
    return EMStep(lam=lam_new, sigma2=sigma2_new, beta=beta, b=b)


def theta_of(lam: np.ndarray, structure: CovarianceStructure) -> np.ndarray:
    """θ (n_params,) of Λ: its free entries in lme4's order."""
    return np.asarray(lam)[np.asarray(structure.rows), np.asarray(structure.cols)]
