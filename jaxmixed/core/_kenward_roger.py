"""Kenward and Roger's small-sample adjustment of β̂'s covariance and its F tests.

The marginal covariance is linear in the variance components τ, as
pbkrtest parametrises it: ``V(τ) = Σₖ τₖ Gₖ``, one τ per variance or
covariance entry of each random term's covariance matrix (``Gₖ = Z Eₖ Zᵀ``)
and the residual variance last (``G = W⁻¹``, the inverse prior weights).
With ``M(τ) = XᵀV⁻¹X`` and ``Φ = M⁻¹`` (β̂'s covariance):

    Pᵢ = ∂M/∂τᵢ,    Qᵢⱼ + Qⱼᵢ = ∂²M/∂τᵢ∂τⱼ,    (Qᵢⱼ = XᵀV⁻¹GᵢV⁻¹GⱼV⁻¹X)
    W = 2 I⁻¹,      Iᵢⱼ = tr(P̃GᵢP̃Gⱼ) = −∂²f/∂τᵢ∂τⱼ,  f = log|V| + log|M|,
    U = Σᵢⱼ Wᵢⱼ (Qᵢⱼ − PᵢΦPⱼ) = ½ Σᵢⱼ Wᵢⱼ ∂²M/∂τᵢ∂τⱼ − Σᵢⱼ Wᵢⱼ PᵢΦPⱼ,
    Φ_A = Φ + 2 Φ U Φ,

(P̃ = V⁻¹ − V⁻¹XΦXᵀV⁻¹, the REML projection; I is the expected REML
information). Every derivative is exact (automatic differentiation of M and
f), where pbkrtest forms the n × n matrices V⁻¹ and Gᵢ. V is never formed
either: with S = Σ(τ)/σ² (the random effects' covariance relative to σ²)
and A = I + S ZᵀWZ,

    M = (XᵀWX − XᵀWZ A⁻¹ S ZᵀWX)/σ²,   log|V| = n log σ² − Σ log w + log|A|,

(Woodbury's identity in a form that needs no inverse of S, so that a
variance at 0 is an ordinary point), so each evaluation costs one LU
factorisation of the q × q matrix A.

For a contrast L (q_L, p) of rank l, with Θ = Lᵀ(LΦLᵀ)⁻¹L and
``Aₖ = Σᵢⱼ Wᵢⱼ …`` as Kenward and Roger (1997) define them, the
denominator df m and the F statistic's scale λ follow (:func:`kr_ddf`).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._typing import HostOrDevice

__all__ = ["MAX_RANDOM_EFFECTS", "KRCovariance", "KRModel", "KRTest", "kenward_roger", "kr_test"]

# The adjustment works with dense q × q matrices (A, its LU, the derivatives' tangents):
# at 8,192 random effects each is 512 MiB in float64, and several are alive at once.
MAX_RANDOM_EFFECTS = 8192


class KRModel(eqx.Module):
    """The cross-products that determine M(τ) and f(τ).

    Attributes:
        xtwx: (p, p) ``XᵀWX``.
        ztwx: (q, p) ``ZᵀWX``.
        ztwz: (q, q) ``ZᵀWZ``.
        sigma_index: (q, q) int: entry (i, j) of the random effects' covariance
            Σ is ``τ[sigma_index[i, j]]``; the index ``k − 1`` (σ²'s own
            position) marks a structural zero.
        tau: (k,) the variance components at the estimate, σ² last.
        n: the number of observations (enters f only as ``n log σ²``).
    """

    xtwx: Float[HostOrDevice, "p p"]
    ztwx: Float[HostOrDevice, "q p"]
    ztwz: Float[HostOrDevice, "q q"]
    sigma_index: Int[HostOrDevice, "q q"]
    tau: Float[HostOrDevice, " k"]
    n: int = eqx.field(static=True)


class KRCovariance(eqx.Module):
    """``vcov`` Φ (p, p), the adjusted ``vcov_adjusted`` Φ_A (p, p), the
    derivatives ``p_mats`` Pᵢ (k, p, p) and ``w`` = 2 I⁻¹ (k, k)."""

    vcov: Float[Array, "p p"]
    vcov_adjusted: Float[Array, "p p"]
    p_mats: Float[Array, "k p p"]
    w: Float[Array, "k k"]


class KRTest(eqx.Module):
    """One contrast's test: ``ddf`` m, ``scale`` λ (F = λ·F_unscaled), the
    unscaled Wald ``f_unscaled`` with Φ_A, and the rank ``q``."""

    ddf: Float[Array, ""]
    scale: Float[Array, ""]
    f_unscaled: Float[Array, ""]
    q: Int[Array, ""]


def _relative_sigma(tau: Float[Array, " k"], model: KRModel) -> Float[Array, "q q"]:
    """S = Σ(τ)/σ²: τ's random-effect entries placed by ``sigma_index``, 0 at σ²'s slot."""
    entries = jnp.concatenate([tau[:-1], jnp.zeros((1,), tau.dtype)])
    return entries[model.sigma_index] / tau[-1]


def _info_matrix(tau: Float[Array, " k"], model: KRModel) -> tuple[jax.Array, jax.Array]:
    """(M(τ) = XᵀV⁻¹X (p, p), A = I + S ZᵀWZ (q, q))."""
    s = _relative_sigma(tau, model)
    a = jnp.eye(s.shape[0], dtype=tau.dtype) + s @ model.ztwz
    correction = model.ztwx.T @ jnp.linalg.solve(a, s @ model.ztwx)
    m = (model.xtwx - correction) / tau[-1]
    return 0.5 * (m + m.T), a


def _m(tau, model):
    return _info_matrix(tau, model)[0]


def _f(tau, model):
    """log|V| + log|M| up to a constant: ``n log σ² + log|A| + log|M|``."""
    m, a = _info_matrix(tau, model)
    return model.n * jnp.log(tau[-1]) + jnp.linalg.slogdet(a)[1] + jnp.linalg.slogdet(m)[1]


def _pinv_if_singular(info: Float[Array, "k k"]) -> jax.Array:
    """I⁻¹, or when an eigenvalue is below 1e-10 in size (pbkrtest's rule) the
    pseudo-inverse, eigenvalues below √ε of the largest dropped (MASS::ginv's)."""
    eig = jnp.linalg.eigh(info)
    values, vectors = eig.eigenvalues, eig.eigenvectors
    ok = jnp.min(jnp.abs(values)) > 1e-10
    tiny = jnp.abs(values) <= jnp.sqrt(jnp.finfo(values.dtype).eps) * jnp.max(jnp.abs(values))
    inv_values = jnp.where(ok | ~tiny, 1.0 / values, 0.0)  # not differentiated: inf unused
    return (vectors * inv_values) @ vectors.T


def kenward_roger(model: KRModel) -> KRCovariance:
    """Φ, Kenward and Roger's Φ_A and the Pᵢ and W that their df need, at ``model.tau``.

    Jittable. Cost: a few LU factorisations of the q × q matrix A per
    derivative direction (k(k + 1)/2 second derivatives, k = len(τ)).
    """
    tau = model.tau
    m = _m(tau, model)
    phi = jnp.linalg.inv(m)
    phi = 0.5 * (phi + phi.T)
    p_mats = jnp.moveaxis(jax.jacfwd(_m)(tau, model), -1, 0)  # (k, p, p)
    second = jax.jacfwd(jax.jacfwd(_m))(tau, model)  # (p, p, k, k)
    info = -jax.hessian(_f)(tau, model)
    w = 2.0 * _pinv_if_singular(0.5 * (info + info.T))
    q_part = 0.5 * jnp.einsum("ij,abij->ab", w, second)
    p_part = jnp.einsum("ij,iab,bc,jcd->ad", w, p_mats, phi, p_mats)
    u = q_part - p_part
    adjusted = phi + 2.0 * phi @ u @ phi
    return KRCovariance(vcov=phi, vcov_adjusted=0.5 * (adjusted + adjusted.T), p_mats=p_mats, w=w)


def kr_test(cov: KRCovariance, contrast: Float[Array, "l p"], estimate: Float[Array, " l"]) -> KRTest:
    """Kenward and Roger's F test of ``contrast β = 0`` given ``estimate = contrast β̂`` (l,).

    With Θ = Lᵀ(LΦLᵀ)⁻¹L and Tᵢ = ΘΦPᵢΦ:
    ``A₁ = Σᵢⱼ Wᵢⱼ tr Tᵢ tr Tⱼ``, ``A₂ = Σᵢⱼ Wᵢⱼ tr(TᵢTⱼ)``,
    ``B = (A₁ + 6A₂)/(2l)``, ``g = ((l+1)A₁ − (l+4)A₂)/((l+2)A₂)``,
    ``c₁ = g/(3l + 2(1−g))``, ``c₂ = (l−g)/(3l + 2(1−g))``,
    ``c₃ = (l+2−g)/(3l + 2(1−g))``,
    ``ρ = (1 − A₂/l)²(1 + c₁B) / (l (1 − c₂B)²(1 − c₃B))``,
    ``m = 4 + (l+2)/(lρ − 1)``, ``λ = m(1 − A₂/l)/(m − 2)`` (1 when
    |m − 2| < 0.01, as pbkrtest). L must have full row rank l.
    """
    phi = cov.vcov
    l_rows = contrast.shape[0]
    lphil = contrast @ phi @ contrast.T
    theta = contrast.T @ jnp.linalg.solve(lphil, contrast)
    t = jnp.einsum("ab,bc,icd,de->iae", theta, phi, cov.p_mats, phi)  # (k, p, p)
    traces = jnp.einsum("iaa->i", t)
    a1 = traces @ cov.w @ traces
    a2 = jnp.einsum("ij,iab,jba->", cov.w, t, t)
    q = float(l_rows)
    b = (a1 + 6.0 * a2) / (2.0 * q)
    g = ((q + 1.0) * a1 - (q + 4.0) * a2) / ((q + 2.0) * a2)
    denom = 3.0 * q + 2.0 * (1.0 - g)
    c1, c2, c3 = g / denom, (q - g) / denom, (q + 2.0 - g) / denom
    v0 = 1.0 + c1 * b
    v0 = jnp.where(jnp.abs(v0) < 1e-10, 0.0, v0)
    v1, v2 = 1.0 - c2 * b, 1.0 - c3 * b
    ratio = jnp.where(v1 == 0, 0.0, (1.0 - a2 / q) / jnp.where(v1 == 0, 1.0, v1))
    rho = ratio**2 * v0 / (q * v2)
    ddf = 4.0 + (q + 2.0) / (q * rho - 1.0)
    scale = jnp.where(jnp.abs(ddf - 2.0) < 0.01, 1.0, ddf * (1.0 - a2 / q) / (ddf - 2.0))
    wald = estimate @ jnp.linalg.solve(contrast @ cov.vcov_adjusted @ contrast.T, estimate)
    return KRTest(ddf=ddf, scale=scale, f_unscaled=wald / q, q=jnp.asarray(l_rows))
