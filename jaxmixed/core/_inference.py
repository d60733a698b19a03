"""Satterthwaite's degrees of freedom for contrasts of the fixed effects (lmerTest's method).

For a contrast ``c`` (p,) of β̂ with variance ``v(ψ) = cᵀ Φ(ψ) c``, where
``Φ = σ² (XᵀV₀⁻¹X)⁻¹`` is β̂'s covariance as a function of the variance
parameters ψ = (θ, σ), Satterthwaite's approximation gives

    df = 2 v(ψ̂)² / (∇v(ψ̂)ᵀ A ∇v(ψ̂)),   A = 2 H⁻¹,

with H the Hessian of the (REML or ML) deviance in ψ at the optimum, so that
A is ψ̂'s asymptotic covariance. lmerTest differentiates both numerically;
here both the Hessian and the gradient are exact (automatic differentiation).

The deviance is the *unprofiled* one: with σ free,
``d(φ, σ) = d_prof(φ) + dof·(log σ² − log σ̂²(φ)) + r²(φ)/σ² − dof``, which equals
the profiled criterion at σ = σ̂(φ). ψ is taken as (φ over the free entries,
log σ) in the standardised units: at the optimum the gradient vanishes, so
the quadratic form (and df) does not depend on that choice of coordinates, and
σ's and y's units cancel between numerator and denominator. Entries held at a
boundary (θ = 0) are not parameters: they are left out, so that a fit whose
only random effect is at 0 gets the fixed-effects model's n − p.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float

from ._objective import _criterion, _dof, _factorize
from ._precision import highest_precision
from ._statistics import ModelStatistics

__all__ = ["SatterthwaiteResult", "satterthwaite", "satterthwaite_masked"]


class SatterthwaiteResult(eqx.Module):
    """Per contrast: ``variance`` (k,) of cᵀβ̂ and its Satterthwaite ``df`` (k,)."""

    variance: Float[Array, " k"]
    df: Float[Array, " k"]


def _phi(params: Float[Array, " m"], phi_hat: Float[Array, " n_params"], free: np.ndarray) -> jax.Array:
    return phi_hat.at[free].set(params[:-1])


def _deviance(params, phi_hat, free, zero, stats: ModelStatistics, reml: bool) -> jax.Array:
    """The unprofiled criterion at ψ = (φ[free], log σ), standardised units."""
    value, r2 = _criterion(_factorize(_phi(params, phi_hat, free), stats, zero), stats, reml)
    dof = _dof(stats, reml)
    sigma2 = jnp.exp(2.0 * params[-1])
    return value + dof * (jnp.log(sigma2) - jnp.log(r2 / dof)) + r2 / sigma2 - dof


def _covariance(params, phi_hat, free, zero, stats: ModelStatistics) -> jax.Array:
    """β̂'s covariance (p, p) in the user's units at ψ: ``σ² (XᵀV₀⁻¹X)⁻¹``."""
    fac = _factorize(_phi(params, phi_hat, free), stats, zero)
    p = stats.n_fixed
    eye = jnp.eye(p, dtype=params.dtype)
    l_x_inv = jax.scipy.linalg.solve_triangular(fac.chol_m[:p, :p], eye, lower=True)
    r_inv = jax.scipy.linalg.solve_triangular(stats.design.scaling.r_factor, eye, lower=False)
    unscaled = r_inv @ (l_x_inv.T @ l_x_inv) @ r_inv.T
    return stats.response.y_scale**2 * jnp.exp(2.0 * params[-1]) * unscaled


@highest_precision
def satterthwaite(
    stats: ModelStatistics,
    phi: Float[Array, " n_params"],
    free: tuple[int, ...],
    reml: bool,
    contrasts: Float[Array, "k p"],
) -> SatterthwaiteResult:
    """Variances and Satterthwaite df of the contrasts ``contrasts`` (k, p) of β̂ at the optimum.

    ``phi`` (n_params,): the fit's φ̂ (``FitResult.phi``; entries at a boundary
    are ignored); ``free``: the positions of the entries not held at 0 (static:
    a tuple, so that ``eqx.filter_jit`` compiles once per boundary pattern).
    Jittable; the Hessian is formed exactly (ψ has few entries).
    """
    free_idx = np.asarray(free, dtype=int)
    zero = np.ones(phi.shape[0], bool)
    zero[free_idx] = False
    phi_hat = jnp.where(jnp.asarray(zero), 0.0, phi)
    _, r2 = _criterion(_factorize(phi_hat, stats, jnp.asarray(zero)), stats, reml)
    log_sigma = 0.5 * jnp.log(r2 / _dof(stats, reml))
    psi = jnp.concatenate([phi_hat[free_idx], log_sigma[None]])
    args = (phi_hat, free_idx, jnp.asarray(zero), stats)
    hessian = jax.jacrev(jax.grad(_deviance))(psi, *args, reml)

    def variances(params):
        cov = _covariance(params, *args)
        v = jnp.einsum("kp,pq,kq->k", contrasts, cov, contrasts)
        return v, v

    grad, v = jax.jacrev(variances, has_aux=True)(psi)  # (k, m) and (k,): one forward pass
    a = 2.0 * jnp.linalg.inv(0.5 * (hessian + hessian.T))
    return SatterthwaiteResult(variance=v, df=2.0 * v**2 / jnp.einsum("km,mn,kn->k", grad, a, grad))


def _masked_deviance(params, zero, stats: ModelStatistics, reml: bool) -> jax.Array:
    """:func:`_deviance` with ψ = (φ, log σ) over every entry; those in ``zero`` held at 0."""
    return _deviance(params, params[:-1], np.arange(params.shape[0] - 1), zero, stats, reml)


def _masked_covariance(params, zero, stats: ModelStatistics) -> jax.Array:
    """:func:`_covariance` with ψ = (φ, log σ) over every entry; those in ``zero`` held at 0."""
    return _covariance(params, params[:-1], np.arange(params.shape[0] - 1), zero, stats)


@highest_precision
def satterthwaite_masked(
    stats: ModelStatistics,
    phi: Float[Array, " n_params"],
    at_boundary: Bool[Array, " n_params"],
    reml: bool,
    contrasts: Float[Array, "k p"],
) -> SatterthwaiteResult:
    """:func:`satterthwaite` with the boundary pattern as an array, for ``jax.vmap``
    over fits whose patterns differ (a power simulation's replicates).

    ψ = (φ, log σ) has every entry; an entry in ``at_boundary`` (n_params,) is held
    at 0 inside the criterion, so its rows of the Hessian H and of the variances'
    gradient g vanish. With H's block of those entries replaced by the identity,
    ``H⁻¹ = blockdiag(H_ff⁻¹, I)`` and ``gᵀH⁻¹g = g_fᵀH_ff⁻¹g_f``: the same df as
    :func:`satterthwaite` over the free entries alone.
    """
    zero = jnp.asarray(at_boundary, bool)
    phi_hat = jnp.where(zero, 0.0, phi)
    _, r2 = _criterion(_factorize(phi_hat, stats, zero), stats, reml)
    log_sigma = 0.5 * jnp.log(r2 / _dof(stats, reml))
    psi = jnp.concatenate([phi_hat, log_sigma[None]])
    hessian = jnp.asarray(jax.jacrev(jax.grad(_masked_deviance))(psi, zero, stats, reml))
    held = jnp.concatenate([zero, jnp.zeros((1,), bool)])
    free = ~held
    hessian = jnp.where(free[:, None] & free[None, :], hessian, 0.0) + jnp.diag(held.astype(psi.dtype))

    def variances(params):
        cov = _masked_covariance(params, zero, stats)
        v = jnp.einsum("kp,pq,kq->k", contrasts, cov, contrasts)
        return v, v

    grad, v = jax.jacrev(variances, has_aux=True)(psi)
    grad = jnp.where(free[None, :], grad, 0.0)
    a = 2.0 * jnp.linalg.inv(0.5 * (hessian + hessian.T))
    return SatterthwaiteResult(variance=v, df=2.0 * v**2 / jnp.einsum("km,mn,kn->k", grad, a, grad))
