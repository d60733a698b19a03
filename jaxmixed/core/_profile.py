"""Profile likelihood of every parameter (lme4's ``profile`` and ``confint.thpr``).

The parameters ψ are lme4's ``confint(oldNames = FALSE)`` ones, in user units:
per term (lme4's order) the standard deviations ``sd_k = σ·sqrt((ΛΛᵀ)_kk)`` and
the correlations, then σ, then β. For each parameter ψ_w and value v,

    ζ(v) = sign(v − ψ̂_w) · sqrt(D(v) − D̂),   D(v) = min_{ψ: ψ_w = v} D(ψ),

with D the ML deviance (−2 log-likelihood). As lme4's ``devfun2`` does
(it calls ``refitML``), a REML fit is profiled on the ML deviance around the
ML estimates, fixed effects included.

The re-optimisation runs over x, the variance parameters as (``sd``, ``asin
cor``, ``log σ``), with β profiled out in closed form. Both bounds are reached
at finite x, where D is smooth, so a re-optimised sd that goes to 0 or a
correlation that goes to ±1 gets there in a few steps (in log and atanh
coordinates it crawls towards ∓∞): D depends on an sd only through
Σ = diag(sd)·C·diag(sd), smooth through 0 (a negative sd is the same Σ with
the signs of its correlations flipped), and ``cor = sin(x)`` stays in [−1, 1]
with D smooth in x. At fixed (Λ, σ)

    D = log|A| + (r² + e)/σ̃² + n log(2π σ̃²),

with ``log|A|`` and ``r²`` from ``_objective.factorize_lambdas`` (standardised
units: σ̃ = σ / y_scale), and e the increase of the penalised residual sum of
squares when one coefficient is held: β_j = v is the linear constraint
``aᵀβ̃ = c`` on the coefficients β̃ of Q (a = row j of R⁻¹, c = v/y_scale −
aᵀ·shift), and minimising ``(β̃ − β̂̃)ᵀ L_X L_Xᵀ (β̃ − β̂̃)`` on it gives
``e = (c − aᵀβ̂̃)² / |L_X⁻¹a|²`` (e = 0 for a variance parameter). This is
lme4's fit of ``y − x_j v`` on X without column j, by ML.

Every grid point of every parameter is one element of a ``jax.vmap`` of one
L-BFGS minimisation (:func:`profile_points`). The deviance's quadratic
approximation at the optimum (:func:`quadratic_approximation`) serves each
point twice: it predicts where the other parameters go (the implicit function
theorem's ``dx*/dψ_w``; later rounds interpolate between the points found,
:func:`_warm_starts`), and it preconditions the minimisation (in y, with
x = x_start + P y and PPᵀ the approximation's inverse Hessian with ψ_w held),
so that most points take a handful of steps. The grid is chosen in a few
such rounds (:func:`profile_grid`): first at the quadratic approximation's ζ
targets, then re-placed at the targets by interpolating the points found,
until |ζ| passes ``cutoff`` on each side or the parameter reaches its bound.
The grid's coordinates u are ``log sd``, ``atanh cor``, ``log σ`` and β
(:func:`internal`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._fit import FitResult
from ._objective import factorize_lambdas, scale_correction
from ._solvers import LBFGS, AbstractSolver
from ._statistics import ModelStatistics
from ._status import is_converged, to_results

__all__ = [
    "ProfileLayout",
    "ProfilePoints",
    "ProfileTrace",
    "QuadraticApproximation",
    "optimum",
    "profile_grid",
    "profile_points",
    "quadratic_approximation",
]

SD, COR, SIGMA, FIXED = 0, 1, 2, 3

# Re-optimisation: tighter than a fit's default (ζ² is a difference of deviances).
PROFILE_SOLVER = LBFGS(max_steps=1000, gtol=1e-10, ftol=1e-11)
# Starts and grid values are kept inside the bounds: an sd at least this fraction of σ̂
# (the deviance there differs from its value at 0 by O(fraction²)), a correlation at
# most this far from ±1 (atanh, the grid's coordinate, is finite).
SD_FLOOR = 1e-6
COR_MARGIN = 1e-10
# A start at the boundary moves off it by this much (D is even in each sd: its gradient
# vanishes at sd = 0, which the solver would never leave): sd = START_SD·σ̂·z_k (z_k
# the term's column scale, ``sd_units``: the floor is START_SD in the fit's standardised
# units, whatever the covariate's units),
# |cor| <= 1 − START_COR.
START_SD = 0.05
START_COR = 5e-3


class ProfileLayout(eqx.Module):
    """Where each variance parameter sits: ``terms`` lists lme4's terms in its
    order as (factor, first column, last column + 1) of that factor's Λ;
    ``n_fixed``: p."""

    terms: tuple[tuple[int, int, int], ...] = eqx.field(static=True)
    n_fixed: int = eqx.field(static=True)

    @property
    def kinds(self) -> np.ndarray:
        """(n_x + p,) SD, COR, SIGMA or FIXED per parameter, in ψ's order."""
        kinds: list[int] = []
        for _, a, b in self.terms:
            q = b - a
            kinds += [SD] * q + [COR] * (q * (q - 1) // 2)
        return np.asarray(kinds + [SIGMA] + [FIXED] * self.n_fixed)

    def _term_offsets(self) -> list[tuple[int, int]]:
        """Per term, (its first index in x, q): q sds, then its correlations."""
        out, k = [], 0
        for _, a, b in self.terms:
            q = b - a
            out.append((k, q))
            k += q + q * (q - 1) // 2
        return out

    @property
    def cor_sds(self) -> np.ndarray:
        """(n_x, 2) for each correlation in x the indices of its two sds in x (a
        parameter that is not a correlation: its own index, twice)."""
        out = np.repeat(np.arange(self.n_x)[:, None], 2, axis=1)
        for k, q in self._term_offsets():
            pairs = [(k + i, k + j) for j in range(q) for i in range(j + 1, q)]
            out[k + q : k + q + len(pairs)] = np.asarray(pairs, int).reshape(-1, 2)
        return out

    @property
    def root_sds(self) -> np.ndarray:
        """(n_x + p, n_x) bool: row w, for a correlation, the sds of its term. While a
        correlation is held, its term's sds are re-optimised as squares ``sd = r²``:
        kept positive (a negative sd would flip the sign of the correlation held), and
        smooth where an sd goes to 0 (D changes linearly in the sd there, as r²)."""
        out = np.zeros((len(self.kinds), self.n_x), bool)
        for k, q in self._term_offsets():
            out[k + q : k + q + q * (q - 1) // 2, k : k + q] = True
        return out

    @property
    def n_x(self) -> int:
        """The number of variance parameters (σ included): x's length."""
        return int(np.sum(self.kinds != FIXED))


def _term_factor(sd: jax.Array, x_cor: jax.Array, q: int) -> jax.Array:
    """``diag(sd)·chol(C)`` (q, q), C the correlations ``sin(x_cor)``: a Cholesky
    factor of one term's covariance (up to the signs of its columns where an sd is
    negative)."""
    if q == 2:  # chol(C) in closed form, smooth through cor = ±1 (cos may be negative)
        chol = jnp.stack(
            [
                jnp.stack([jnp.ones_like(x_cor[0]), jnp.zeros_like(x_cor[0])]),
                jnp.stack([jnp.sin(x_cor[0]), jnp.cos(x_cor[0])]),
            ]
        )
        return sd[:, None] * chol
    corr = jnp.eye(q, dtype=sd.dtype)
    k = 0
    for j in range(q):
        for i in range(j + 1, q):
            r = jnp.sin(x_cor[k])
            corr = corr.at[i, j].set(r).at[j, i].set(r)
            k += 1
    return sd[:, None] * jnp.linalg.cholesky(corr)


def _lambdas(x: Float[Array, " n_x"], stats: ModelStatistics, layout: ProfileLayout) -> tuple[jax.Array, ...]:
    """Each factor's standardised Λ̃ = S⁻¹ chol(Σ)/σ (q_f, q_f) from x."""
    lams = [jnp.zeros((s.q, s.q), x.dtype) for s in stats.structures]
    k = 0
    for f, a, b in layout.terms:
        q = b - a
        n_cor = q * (q - 1) // 2
        block = _term_factor(x[k : k + q], x[k + q : k + q + n_cor], q) / jnp.exp(x[-1])
        lams[f] = lams[f].at[a:b, a:b].set(block)
        k += q + n_cor
    out = []
    for lam, s, z in zip(lams, stats.structures, stats.design.scaling.z_scale, strict=True):
        rows, cols = np.asarray(s.rows), np.asarray(s.cols)
        # Only the structure's entries, as lambda_from_phi builds Λ̃.
        out.append(jnp.zeros_like(lam).at[rows, cols].set((lam / z[:, None])[rows, cols]))
    return tuple(out)


class _Constraint(eqx.Module):
    """β_j = v as ``aᵀβ̃ = c`` (a (p,), c ()); ``active`` False for a variance parameter."""

    a: jax.Array
    c: jax.Array
    active: jax.Array


def _constraint(stats: ModelStatistics, j: jax.Array, value: jax.Array, active: jax.Array) -> _Constraint:
    """β_j = value (user units) in terms of β̃: ``β = R⁻¹ y_scale (β̃ + shift)``."""
    r = stats.design.scaling.r_factor
    p = r.shape[0]
    r_inv = jax.scipy.linalg.solve_triangular(r, jnp.eye(p, dtype=r.dtype), lower=False)
    a = r_inv[j]
    c = value / stats.response.y_scale - a @ stats.response.beta_shift
    return _Constraint(a, c, active)


def _deviance_and_beta(x, stats: ModelStatistics, layout: ProfileLayout, con: _Constraint):
    """The standardised ML deviance D (see the module docstring) and β̃ (p,) at x."""
    fac = factorize_lambdas(_lambdas(x, stats, layout), stats)
    p = layout.n_fixed
    chol = fac.chol_m
    r2 = chol[p, p] ** 2
    l_x = chol[:p, :p]
    beta = jax.scipy.linalg.solve_triangular(l_x, chol[p, :p], lower=True, trans="T")
    w = jax.scipy.linalg.solve_triangular(l_x, con.a, lower=True)  # L_X⁻¹a
    gap = con.c - con.a @ beta
    denom = jnp.where(con.active, w @ w, 1.0)
    extra = jnp.where(con.active, gap**2 / denom, 0.0)
    # β̃ on the constraint: β̂̃ + M⁻¹a·gap/(aᵀM⁻¹a), M = L_X L_Xᵀ.
    shift = jax.scipy.linalg.solve_triangular(l_x, w, lower=True, trans="T") * (gap / denom)
    beta = beta + jnp.where(con.active, shift, 0.0)
    sigma2 = jnp.exp(2.0 * x[-1]) / stats.response.y_scale**2
    n = stats.design.n_obs
    value = fac.log_det_a + (r2 + extra) / sigma2 + n * jnp.log(2.0 * jnp.pi * sigma2)
    return value, beta


def _user_params(
    x: jax.Array, beta_tilde: jax.Array, stats: ModelStatistics, layout: ProfileLayout
) -> jax.Array:
    """ψ (n_x + p,) in user units from x and β̃."""
    kinds = jnp.asarray(layout.kinds[: layout.n_x])
    # A negative sd is |sd| with the signs of its term's correlations flipped.
    sign = jnp.where(x < 0, -1.0, 1.0)
    pairs = layout.cor_sds
    cor = jnp.sin(x) * sign[pairs[:, 0]] * sign[pairs[:, 1]]
    var = jnp.where(kinds == COR, cor, jnp.abs(x))
    var = jnp.where(kinds == SIGMA, jnp.exp(jnp.where(kinds == SIGMA, x, 0.0)), var)
    resp = stats.response
    beta = jax.scipy.linalg.solve_triangular(
        stats.design.scaling.r_factor, resp.y_scale * (beta_tilde + resp.beta_shift), lower=False
    )
    return jnp.concatenate([var, beta])


def _coordinates(values, kinds, cor_map, *, log_sd: bool) -> Any:
    """``values`` with each correlation through ``cor_map``, each σ (and each sd when
    ``log_sd``) logged, the rest unchanged; numpy or jax by the input."""
    xp = jnp if isinstance(values, jax.Array) else np
    logged = (kinds == SIGMA) | ((kinds == SD) & log_sd)
    safe_cor = xp.where(kinds == COR, values, 0.0)
    with np.errstate(divide="ignore"):  # an sd or σ of 0 (boundary, failed point) is at −inf
        out: Any = xp.where(kinds == COR, cor_map(xp, safe_cor), values)  # numpy or jax
        return xp.where(logged, xp.log(xp.where(logged, values, 1.0)), out)


def to_solver(values, kinds):
    """The solver's x-coordinates (sd, asin cor, log σ) of user-unit variance
    parameters; a correlation is first kept COR_MARGIN inside ±1."""
    edge = 1.0 - COR_MARGIN
    return _coordinates(values, kinds, lambda xp, c: xp.arcsin(xp.clip(c, -edge, edge)), log_sd=False)


def internal(values, kinds):
    """The grid's u-coordinates (log sd, atanh cor, log σ; β unchanged) of user-unit values."""
    return _coordinates(values, kinds, lambda xp, c: xp.arctanh(c), log_sd=True)


class ProfilePoints(eqx.Module):
    """Re-optimised points: ``deviance`` (K,) ML deviance in user units (lme4's
    scale), ``params`` (K, n_x + p) every parameter there (user units),
    ``converged`` (K,) and ``n_iter`` (K,)."""

    deviance: Float[Array, " K"]
    params: Float[Array, "K m"]
    converged: Bool[Array, " K"]
    n_iter: Int[Array, " K"]


def profile_point(
    stats: ModelStatistics,
    layout: ProfileLayout,
    x_start: Float[Array, " n_x"],
    which: Int[Array, ""],
    value: Float[Array, ""],
    factor: Float[Array, "n_x n_x"],
    solver: AbstractSolver = PROFILE_SOLVER,
) -> ProfilePoints:
    """One point: ψ_which held at ``value`` (user units), the rest re-optimised
    from ``x_start``, in the coordinates y of ``x = x_start + factor @ y``
    (a preconditioner: see :meth:`QuadraticApproximation.factors`; the
    solver's gradient tolerance applies to y's gradient, ``factorᵀ∇ₓD``, whose
    squared length is about twice the deviance still to gain). While a
    correlation is held, its term's sds are squares instead
    (``ProfileLayout.root_sds``). Fields of :class:`ProfilePoints` without the K axis."""
    n_x = layout.n_x
    kinds = jnp.asarray(layout.kinds)
    is_var = which < n_x
    held = jnp.arange(n_x, dtype=which.dtype) == jnp.where(is_var, which, -1)
    fixed_x = jnp.asarray(to_solver(value, kinds[which]))
    j = jnp.clip(which - n_x, 0, max(layout.n_fixed - 1, 0))
    con = _constraint(stats, j, value, ~is_var)
    root_sd = jnp.asarray(layout.root_sds)[which]
    # The start's sds are off 0 (_off_bounds); d sqrt(sd) = d sd / (2 sqrt(sd)) for the
    # preconditioner.
    root = jnp.where(root_sd, jnp.sqrt(jnp.abs(x_start)), 1.0)
    x_start = jnp.where(root_sd, root, x_start)
    factor = factor / jnp.where(root_sd, 2.0 * root, 1.0)[:, None]

    def to_x(y: jax.Array) -> jax.Array:
        x = x_start + factor @ y
        return jnp.where(held, fixed_x, jnp.where(root_sd, x * x, x))

    def fun(y):
        return _deviance_and_beta(to_x(y), stats, layout, con)[0]

    res = solver.minimise(fun, jnp.zeros_like(x_start))
    x = to_x(res.params)
    value_d, beta = _deviance_and_beta(x, stats, layout, con)
    return ProfilePoints(
        deviance=value_d + scale_correction(stats, reml=False),
        params=_user_params(x, beta, stats, layout),
        converged=jnp.asarray(is_converged(to_results(res.status))),
        n_iter=res.n_iter,
    )


def profile_points(
    stats: ModelStatistics,
    layout: ProfileLayout,
    x_start: Float[Array, "K n_x"],
    which: Int[Array, " K"],
    values: Float[Array, " K"],
    factors: Float[Array, "K n_x n_x"],
    solver: AbstractSolver = PROFILE_SOLVER,
) -> ProfilePoints:
    """:func:`profile_point` at K (parameter, value) pairs as one vmapped computation,
    point k re-optimised from ``x_start[k]`` in the coordinates of ``factors[k]``."""

    def one(x, w, v, f):
        return profile_point(stats, layout, x, w, v, f, solver)

    return jax.vmap(one)(x_start, which, values, factors)


def optimum(fit_ml: FitResult, layout: ProfileLayout) -> Float[Array, " m"]:
    """ψ̂ (n_x + p,) in user units of an ML fit (an sd at the boundary is 0)."""
    values = []
    for f, a, b in layout.terms:
        lam = fit_ml.lambdas[f][a:b, a:b]
        rel = lam @ lam.T
        sd = jnp.sqrt(jnp.diagonal(rel))
        values.append(fit_ml.sigma * sd)
        q = b - a
        for j in range(q):
            for i in range(j + 1, q):
                denom = sd[i] * sd[j]
                cor = rel[i, j] / jnp.where(denom > 0, denom, 1.0)
                values.append(jnp.where(denom > 0, cor, 0.0)[None])
    values += [fit_ml.sigma[None], fit_ml.beta]
    return jnp.concatenate(values)


def _joint_deviance(z: Float[Array, " m"], stats: ModelStatistics, layout: ProfileLayout) -> jax.Array:
    """The standardised ML deviance at x = ``z[:n_x]`` and β = ``z[n_x:]`` (user units),
    β not profiled out: ``D = log|A| + (r² + |L_Xᵀ(β̃ − β̂̃)|²)/σ̃² + n log(2π σ̃²)``."""
    n_x, p = layout.n_x, layout.n_fixed
    fac = factorize_lambdas(_lambdas(z[:n_x], stats, layout), stats)
    chol = fac.chol_m
    l_x = chol[:p, :p]
    beta_hat = jax.scipy.linalg.solve_triangular(l_x, chol[p, :p], lower=True, trans="T")
    resp = stats.response
    beta_tilde = stats.design.scaling.r_factor @ z[n_x:] / resp.y_scale - resp.beta_shift
    gap = l_x.T @ (beta_tilde - beta_hat)
    sigma2 = jnp.exp(2.0 * z[n_x - 1]) / resp.y_scale**2
    n = stats.design.n_obs
    return fac.log_det_a + (chol[p, p] ** 2 + gap @ gap) / sigma2 + n * jnp.log(2.0 * jnp.pi * sigma2)


class QuadraticApproximation(eqx.Module):
    """The ML deviance's quadratic approximation in z = (x, β) around a point:
    ``covariance`` (m, m) Σ = 2H⁻¹, H the Hessian of D in z there (Σ's
    diagonal is not positive where H is not positive definite: a parameter at its
    bound). The properties are host (numpy) computations from it."""

    covariance: Float[Array, "m m"]

    def _diag(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        cov = np.asarray(self.covariance, float)
        diag = np.diagonal(cov)
        ok = np.isfinite(diag) & (diag > 0)
        return cov, np.where(ok, diag, 1.0), ok

    @property
    def se(self) -> np.ndarray:
        """(m,) ``sqrt(Σ_ww)``: the step in z per unit of ζ (NaN where Σ_ww ≤ 0)."""
        _, diag, ok = self._diag()
        return np.where(ok, np.sqrt(diag), np.nan)

    def slopes(self, n_x: int) -> np.ndarray:
        """(m, n_x) ``Σ[w, :n_x] / Σ_ww``: how the re-optimised variance parameters
        move per unit of parameter w (the implicit function theorem's ``dx*/dψ_w`` of
        the quadratic); 0 where Σ_ww ≤ 0."""
        cov, diag, ok = self._diag()
        return np.nan_to_num(np.where(ok[:, None], cov[:, :n_x] / diag[:, None], 0.0), nan=0.0)

    def factors(self, n_x: int) -> np.ndarray:
        """(m, n_x, n_x) per parameter w, a lower-triangular P with ``PPᵀ`` the inverse
        Hessian in x of the deviance with ψ_w held (β profiled): ``(Σ_xx − Σ_xw Σ_wx /
        Σ_ww)/2``, and 1 on a held variance parameter's diagonal. The profile points
        minimise in y, x = x_start + P y, where the Hessian is near the identity.
        The identity where that matrix is not positive definite."""
        cov, diag, ok = self._diag()
        m = len(diag)
        out = np.tile(np.eye(n_x), (m, 1, 1))
        unknown = ~ok[:n_x]  # no curvature known there: that coordinate unscaled
        for w in np.flatnonzero(ok):
            cond = 0.5 * (cov[:n_x, :n_x] - np.outer(cov[:n_x, w], cov[w, :n_x]) / diag[w])
            for k in ([w] if w < n_x else []) + list(np.flatnonzero(unknown)):
                cond[k, :] = cond[:, k] = 0.0
                cond[k, k] = 1.0
            try:
                out[w] = np.linalg.cholesky(0.5 * (cond + cond.T))
            except np.linalg.LinAlgError:
                pass
        return out


def quadratic_approximation(
    stats: ModelStatistics, layout: ProfileLayout, x: Float[Array, " n_x"], beta: Float[Array, " p"]
) -> QuadraticApproximation:
    """:class:`QuadraticApproximation` at x (n_x,) and β (p,), user units."""
    z = jnp.concatenate([x, beta])
    # Reverse over reverse: the pair sums of the dense block are a custom VJP (no jvp).
    raw = jnp.asarray(jax.jacrev(jax.grad(lambda v: _joint_deviance(v, stats, layout)))(z))
    hess = 0.5 * (raw + raw.T)
    # A correlation of a term whose sd is 0 enters D only through sd·cor: its second
    # derivative is 0 though its mixed one with that sd is not (found by a test). Such a
    # parameter is unknown there: inverted on the others, its own entries NaN. (The
    # test is relative to H's largest entry, so it depends on β's units; a unit-free
    # one must not flag the sd coupled to that correlation: not yet found.)
    scale = jnp.max(jnp.abs(hess))
    flat = jnp.abs(jnp.diagonal(hess)) <= 1e-12 * scale
    both = flat[:, None] | flat[None, :]
    cov = 2.0 * jnp.linalg.inv(jnp.where(both, 0.0, hess) + jnp.diag(flat.astype(hess.dtype)))
    return QuadraticApproximation(covariance=jnp.asarray(jnp.where(both, jnp.nan, cov)))


def sd_units(stats: ModelStatistics, layout: ProfileLayout) -> Float[np.ndarray, " n_x"]:
    """(n_x,) per sd the scale z_k of its column of Z (``Λ = S Λ̃``): an sd of σ·z_k is
    1 in the fit's standardised units; 1 for the other parameters."""
    units = np.ones(layout.n_x)
    for (f, a, b), (k, q) in zip(layout.terms, layout._term_offsets(), strict=True):
        units[k : k + q] = np.asarray(stats.design.scaling.z_scale[f], float)[a:b]
    return units


def start_point(
    psi_hat: Float[np.ndarray, "*K m"], layout: ProfileLayout, units: Float[np.ndarray, " n_x"] | None = None
) -> Float[np.ndarray, "*K n_x"]:
    """x₀ (n_x,): ψ̂'s variance parameters moved off their bounds (see START_SD; ``units``
    from :func:`sd_units`, default 1); rows of a (K, m) ``psi_hat`` each."""
    kinds = layout.kinds[: layout.n_x]
    units = np.ones(layout.n_x) if units is None else units
    v = np.asarray(psi_hat, float)[..., : layout.n_x]
    sigma = v[..., -1:]
    v = np.where(kinds == SD, np.maximum(v, START_SD * sigma * units), v)
    v = np.where(kinds == COR, np.clip(v, -1 + START_COR, 1 - START_COR), v)
    return np.asarray(to_solver(v, kinds), float)


def optimum_x(psi_hat: Float[np.ndarray, " m"], layout: ProfileLayout) -> Float[np.ndarray, " n_x"]:
    """ψ̂'s variance parameters in the solver's coordinates, an sd of 0 kept at 0 (where
    D is smooth: the quadratic approximation's point)."""
    return np.asarray(to_solver(np.asarray(psi_hat, float)[: layout.n_x], layout.kinds[: layout.n_x]), float)


# --------------------------------------------------------------------------------------
# Host: choosing the grid
# --------------------------------------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class ProfileTrace:
    """Every point profiled, on the host: ``which`` (K,) parameter index,
    ``zeta`` (K,), ``params`` (K, m) all parameters there, ``converged`` (K,);
    ``estimate`` (m,) ψ̂ and ``deviance`` D̂ at the ML optimum; ``cutoff``."""

    which: Int[np.ndarray, " K"]
    zeta: Float[np.ndarray, " K"]
    params: Float[np.ndarray, "K m"]
    converged: Bool[np.ndarray, " K"]
    estimate: Float[np.ndarray, " m"]
    deviance: float
    cutoff: float


Evaluate = Callable[[np.ndarray, np.ndarray, np.ndarray, np.ndarray], ProfilePoints]


def _bounds(kinds: np.ndarray, sigma: float) -> tuple[np.ndarray, np.ndarray]:
    """Per parameter, the range (x-coordinates) the grid stays in."""
    lo = np.full(kinds.shape, -np.inf)
    hi = np.full(kinds.shape, np.inf)
    pos = (kinds == SD) | (kinds == SIGMA)
    lo[pos] = np.log(SD_FLOOR * sigma)
    edge = np.arctanh(1 - COR_MARGIN)
    lo[kinds == COR], hi[kinds == COR] = -edge, edge
    return lo, hi


def _next_values(u_hat, u, zeta, side, targets, lo, hi):
    """x-coordinates aimed at ζ = side·targets from the points (u, ζ) of one side.

    Inside the ζ reached: linear interpolation of u in ζ; beyond it: the secant
    of the last two points, its step at most 10 times their gap (lme4's
    ``maxmult``); clipped to [lo, hi].
    """
    keep = np.isfinite(zeta) & (side * zeta > 0)
    z = np.concatenate([[0.0], side * zeta[keep]]) if np.isfinite(u_hat) else side * zeta[keep]
    x = np.concatenate([[u_hat], u[keep]]) if np.isfinite(u_hat) else u[keep]
    order = np.argsort(z)
    z, x = z[order], x[order]
    inside = np.interp(targets, z, x) if len(z) else np.zeros_like(targets)
    if len(z) >= 2:
        slope = (x[-1] - x[-2]) / max(z[-1] - z[-2], 1e-12)
        step = np.clip(slope * (targets - z[-1]), -10 * abs(x[-1] - x[-2]), 10 * abs(x[-1] - x[-2]))
        beyond = x[-1] + step
    else:
        beyond = inside
    out = np.where(targets <= (z[-1] if len(z) else -np.inf), inside, beyond)
    return np.clip(out, lo, hi)


@dataclasses.dataclass(frozen=True)
class _Found:
    """The points so far: ``which`` (K,), ``params`` (K, m), ``u`` (K, m) their
    x-coordinates, ``zeta`` (K,), ``converged`` (K,)."""

    which: np.ndarray
    params: np.ndarray
    u: np.ndarray
    zeta: np.ndarray
    converged: np.ndarray


def _found(rows: list[ProfilePoints], which: np.ndarray, psi_hat: np.ndarray, base: float, kinds) -> _Found:
    which_all = np.tile(which, len(rows))
    params = np.concatenate([np.asarray(p.params) for p in rows])
    dev = np.concatenate([np.asarray(p.deviance) for p in rows])
    held = params[np.arange(len(which_all)), which_all]
    zeta = np.sign(held - psi_hat[which_all]) * np.sqrt(np.maximum(dev - base, 0.0))
    u = np.asarray(internal(params, kinds[None, :]), float)
    converged = np.concatenate([np.asarray(p.converged) for p in rows])
    return _Found(which_all, params, u, zeta, converged)


class _Grid(NamedTuple):
    """One parameter's grid settings: ``u_hat`` its optimum, ``se`` its step per
    unit of ζ, ``lo``/``hi`` its range (x-coordinates), ``at_lo``: ψ̂ on its lower bound."""

    u_hat: float
    se: float
    lo: float
    hi: float
    at_lo: bool


def _side_values(g: _Grid, side: float, targets, found: _Found | None, w: int, sigma: float) -> np.ndarray:
    """The x-coordinates of one side's next points, aimed at ζ = side·targets."""
    if side < 0 and g.at_lo:  # nothing below 0 (lme4 skips the side): points at the floor
        return np.full_like(targets, g.lo)
    if found is None and g.at_lo:  # from 0: σ̂/1000 to 3σ̂ on a log scale
        return np.log(sigma) + np.linspace(np.log(1e-3), np.log(3.0), len(targets))
    if found is None:
        return np.clip(g.u_hat + side * g.se * targets, g.lo, g.hi)
    mine = (found.which == w) & np.isfinite(found.zeta)
    return _next_values(g.u_hat, found.u[mine, w], found.zeta[mine], side, targets, g.lo, g.hi)


def _off_bounds(x: Float[np.ndarray, "K n_x"], layout: ProfileLayout, units: np.ndarray) -> np.ndarray:
    """Starts (K, n_x) moved off the bounds as :func:`start_point` moves ψ̂: |sd| at
    least START_SD·σ·z_k (its sign kept), |cor| at most 1 − START_COR."""
    kinds = layout.kinds[: layout.n_x]
    floor = START_SD * np.exp(x[:, -1:]) * units
    sd = np.where(x < 0, -1.0, 1.0) * np.maximum(np.abs(x), floor)
    edge = np.arcsin(1 - START_COR)
    x = np.where(kinds == SD, sd, x)
    return np.where(kinds == COR, np.clip(x, -edge, edge), x)


def _smallest_eigenvalue(r: np.ndarray, q: int) -> float:
    """The smallest eigenvalue of the q × q correlation matrix whose entries below the
    diagonal are ``r`` in x's order (column by column: (1, 0), (2, 0), ..., (2, 1), ...)."""
    corr = np.eye(q)
    k = 0
    for j in range(q):
        for i in range(j + 1, q):
            corr[i, j] = corr[j, i] = r[k]
            k += 1
    return float(np.linalg.eigvalsh(corr)[0])


def _positive_definite(x: Float[np.ndarray, "K n_x"], which: np.ndarray, layout: ProfileLayout) -> np.ndarray:
    """Starts whose correlations (q ≥ 3) make a matrix that is not positive definite
    (interpolated or extrapolated correlations need not) with the free correlations
    of that term halved until it is (at 0 it is: a held |cor| < 1)."""
    x = x.copy()
    for k, q in layout._term_offsets():
        if q < 3:  # a 2 × 2 correlation matrix is positive definite for any |cor| < 1
            continue
        cols = np.arange(k + q, k + q + q * (q - 1) // 2)
        for lane in range(len(x)):
            r = np.sin(x[lane, cols])
            if _smallest_eigenvalue(r, q) > 1e-6:
                continue
            free = cols != which[lane]
            for _ in range(30):
                r = np.where(free, 0.5 * r, r)
                if _smallest_eigenvalue(r, q) > 1e-6:
                    break
            x[lane, cols] = np.arcsin(r)
    return x


def _along(t_known: np.ndarray, x_known: np.ndarray, t: np.ndarray, slope: np.ndarray) -> np.ndarray:
    """x (K, n_x) at held values t (K,) from solutions x_known (J, n_x) at t_known (J,):
    linear interpolation between the two that bracket t; beyond them, the nearest
    moved by ``slope`` (n_x,) per unit of t."""
    order = np.argsort(t_known)
    t_known, x_known = t_known[order], x_known[order]
    inside = np.stack([np.interp(t, t_known, x_known[:, i]) for i in range(x_known.shape[1])], axis=1)
    below, above = t < t_known[0], t > t_known[-1]
    nearest = np.where(below, 0, len(t_known) - 1)
    beyond = x_known[nearest] + (t - t_known[nearest])[:, None] * slope[None, :]
    return np.where((below | above)[:, None], beyond, inside)


def _solver_z(params: Float[np.ndarray, "*K m"], kinds: np.ndarray, n_x: int) -> np.ndarray:
    """z-coordinates (the solver's x, then β) of user-unit parameters."""
    var = to_solver(params[..., :n_x], kinds[:n_x])
    return np.concatenate([np.asarray(var, float), params[..., n_x:]], axis=-1)


def _warm_starts(
    found: _Found | None,
    which: np.ndarray,
    held: np.ndarray,
    anchor: tuple[np.ndarray, np.ndarray],
    slopes: np.ndarray,
    layout: ProfileLayout,
    units: np.ndarray,
) -> np.ndarray:
    """(K, n_x) starts near each point's solution (fewer L-BFGS steps: the slowest
    point sets the vmapped loop's length); ``held`` (K,) each point's held value, user units.

    Per parameter, x is interpolated in the held value (solver coordinates)
    between the solutions found so far and the ``anchor`` (z₀ (m,), x₀ (n_x,)):
    the start x₀ at the optimum and its coordinates z₀; beyond them, x is
    extrapolated along the quadratic approximation's ``slopes`` (m, n_x) (in the
    first round, from x₀ alone). Moved off the bounds as x₀ is.
    """
    n_x, kinds = layout.n_x, layout.kinds
    z0, x0 = anchor
    var = which < n_x
    t = np.where(var, to_solver(held, kinds[which]), held)
    starts = np.tile(x0, (len(which), 1))
    found_z = None if found is None else _solver_z(found.params, kinds, n_x)
    for w in np.unique(which):
        lanes = np.flatnonzero(which == w)
        t_known, x_known = np.array([z0[w]]), x0[None, :]
        if found is not None and found_z is not None:
            ok = (found.which == w) & np.isfinite(found.zeta) & found.converged
            ok &= np.all(np.isfinite(found_z), axis=1)
            t_known = np.concatenate([t_known, found_z[ok, w]])
            x_known = np.concatenate([x_known, found_z[ok, :n_x]])
        starts[lanes] = _along(t_known, x_known, t[lanes], slopes[w])
    starts = _off_bounds(starts, layout, units)
    var_lanes = np.flatnonzero(var)  # the held coordinate at its value, where the solver holds it
    starts[var_lanes, which[var_lanes]] = t[var_lanes]
    return _positive_definite(starts, which, layout)


def _side_done(g: _Grid, side: float, found: _Found, w: int, cutoff: float) -> bool:
    """Whether a side's ζ passed the cutoff or its points reached the bound."""
    if side < 0 and g.at_lo:
        return True
    mine = found.which == w
    if np.nanmax(side * found.zeta[mine], initial=0.0) >= cutoff:
        return True
    return bool(np.any(found.u[mine, w] <= g.lo) if side < 0 else np.any(found.u[mine, w] >= g.hi))


def _to_user(u: np.ndarray, kinds: np.ndarray) -> np.ndarray:
    """User-unit values of x-coordinates (the inverse of :func:`internal`)."""
    pos = (kinds == SD) | (kinds == SIGMA)
    out = np.where(kinds == COR, np.tanh(u), u)
    return np.where(pos, np.exp(np.where(pos, u, 0.0)), out)  # exp only where taken: β may be large


def profile_grid(
    evaluate: Evaluate,
    psi_hat: Float[np.ndarray, " m"],
    quadratic: QuadraticApproximation,
    base: float,
    layout: ProfileLayout,
    *,
    cutoff: float,
    n_points: int = 8,
    max_rounds: int = 4,
    units: Float[np.ndarray, " n_x"] | None = None,
) -> ProfileTrace:
    """Rounds of :func:`profile_points` until every side passes ``cutoff`` or its bound.

    ``evaluate(which, values)``: the vmapped re-optimisation (K pairs, always
    the same K, so that it compiles once). ``quadratic``: the deviance's
    quadratic approximation at ψ̂ (host arrays; NaN rows for a parameter at its
    bound). Round 1 aims at ζ = ±cutoff·k/n_points in that approximation,
    each later round at the half-way targets (then the whole ones), by
    interpolating the points found so far; at least two rounds. Each point
    starts from :func:`_warm_starts`.
    """
    kinds = layout.kinds
    m = len(kinds)
    sigma = float(psi_hat[layout.n_x - 1])
    lo, hi = _bounds(kinds, sigma)
    u_hat = np.asarray(internal(np.asarray(psi_hat, float), kinds), float)
    # The quadratic's step per unit of ζ, from its z-coordinates to the grid's: d log sd =
    # d sd / sd, and d atanh r = d asin r / sqrt(1 − r²).
    per_unit = np.where(kinds == SD, np.abs(psi_hat), 1.0)
    per_unit = np.where(kinds == COR, np.sqrt(np.clip(1.0 - np.asarray(psi_hat, float) ** 2, 0.0, 1.0)), per_unit)
    with np.errstate(divide="ignore", invalid="ignore"):  # an sd of 0 or |cor| 1: at a bound, se unused
        se = quadratic.se / per_unit
    se = np.where(np.isfinite(se) & (se > 0), se, 1.0)
    slopes, factors = quadratic.slopes(layout.n_x), quadratic.factors(layout.n_x)
    grids = [_Grid(u_hat[w], se[w], lo[w], hi[w], not u_hat[w] > lo[w]) for w in range(m)]
    streams = [(w, s) for w in range(m) for s in (-1.0, 1.0)]
    # The last target overshoots the cutoff by 30%: secant extrapolation of a flattening
    # profile undershoots, and a side short of the cutoff costs a whole further round.
    fractions = np.append(np.arange(1, n_points + 1) / n_points, 1.3)
    which = np.repeat([w for w, _ in streams], len(fractions))
    rows: list[ProfilePoints] = []
    found = None
    units = np.ones(layout.n_x) if units is None else np.asarray(units, float)
    x0 = np.asarray(start_point(psi_hat, layout, units), float)
    anchor = (np.concatenate([x0, np.asarray(psi_hat, float)[layout.n_x :]]), x0)
    for r in range(max_rounds):
        targets = cutoff * (fractions - (0.5 if r % 2 else 0.0))
        u = np.concatenate([_side_values(grids[w], s, targets, found, w, sigma) for w, s in streams])
        held = _to_user(u, kinds[which])
        starts = _warm_starts(found, which, held, anchor, slopes, layout, units)
        rows.append(jax.tree.map(np.asarray, evaluate(which, held, starts, factors[which])))
        found = _found(rows, which, psi_hat, base, kinds)
        if r >= 1 and all(_side_done(grids[w], s, found, w, cutoff) for w, s in streams):
            break
    assert found is not None
    # The optimum itself, ζ = 0, once per parameter.
    return ProfileTrace(
        which=np.concatenate([np.arange(m), found.which]),
        zeta=np.concatenate([np.zeros(m), found.zeta]),
        params=np.concatenate([np.tile(psi_hat, (m, 1)), found.params]),
        converged=np.concatenate([np.ones(m, bool), found.converged]),
        estimate=np.asarray(psi_hat, float),
        deviance=float(base),
        cutoff=float(cutoff),
    )


# --------------------------------------------------------------------------------------
# Host: the limits
# --------------------------------------------------------------------------------------

# ζ may dip by this much between neighbouring points (round-off of the re-optimisation)
# and still count as monotone.
MONOTONE_TOL = 1e-3
# Points closer in ζ than this count as one in the interpolation.
MIN_ZETA_GAP = 1e-3


def _pchip(x: np.ndarray, y: np.ndarray, x0: float) -> float:
    """Monotone cubic (Fritsch–Carlson) interpolation of y(x) at x0; x increasing."""
    h = np.diff(x)
    d = np.diff(y) / h
    slopes = np.concatenate([[d[0]], np.zeros(len(x) - 2), [d[-1]]])
    for k in range(1, len(x) - 1):
        if d[k - 1] * d[k] > 0:  # weighted harmonic mean; 0 at a local extremum
            w1, w2 = 2 * h[k] + h[k - 1], h[k] + 2 * h[k - 1]
            slopes[k] = (w1 + w2) / (w1 / d[k - 1] + w2 / d[k])
    i = int(np.clip(np.searchsorted(x, x0) - 1, 0, len(x) - 2))
    t = (x0 - x[i]) / h[i]
    h00, h10 = (1 + 2 * t) * (1 - t) ** 2, t * (1 - t) ** 2
    h01, h11 = t * t * (3 - 2 * t), t * t * (t - 1)
    return float(h00 * y[i] + h10 * h[i] * slopes[i] + h01 * y[i + 1] + h11 * h[i] * slopes[i + 1])


_LOWER = {SD: 0.0, COR: -1.0, SIGMA: 0.0, FIXED: np.nan}
_UPPER = {SD: np.inf, COR: 1.0, SIGMA: np.inf, FIXED: np.nan}


def _side_limit(u: np.ndarray, zeta: np.ndarray, target: float) -> tuple[float | None, bool]:
    """Where one side's ζ reaches ``target`` (its sign the side's): (u there, or None if
    it does not; whether ζ turned back before it did).

    ``u``, ``zeta``: the side's points ordered outward from the optimum, which
    comes first (ζ = 0) unless it is at a bound. Only the monotone stretch from the optimum counts: the
    points up to the first that falls back by more than MONOTONE_TOL (a
    re-optimisation that found another branch of the profile further out does
    not move a limit read before it).
    """
    if not len(u):
        return None, False
    a = np.sign(target) * zeta
    dips = np.flatnonzero(a < np.maximum.accumulate(a) - MONOTONE_TOL)
    stop = dips[0] if len(dips) else len(a)
    u, a = u[:stop], a[:stop]
    keep = [0]  # each point at least MIN_ZETA_GAP above the last kept: near-duplicates
    for k in range(1, len(a)):  # (the same ζ up to round-off) would distort the slopes
        if a[k] >= a[keep[-1]] + MIN_ZETA_GAP:
            keep.append(k)
        elif k == len(a) - 1 and a[k] > a[keep[-1]] and len(keep) > 1:
            keep[-1] = k  # the outermost point stands for its near-duplicate: the side's reach
    u, a = u[keep], a[keep]
    if len(a) >= 2 and a[-1] >= abs(target):
        return _pchip(a, u, abs(target)), False
    return None, bool(len(dips))


def parameter_limits(
    trace: ProfileTrace, kinds: np.ndarray, z: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each parameter's ζ crosses −z and +z: (lower (m,), upper (m,), monotone (m,)).

    ``u(ζ)`` (x-coordinates) is interpolated by a monotone cubic through the
    points of each side of the parameter's trace, as lme4 inverts its
    interpolating spline (``backSpline``), over the side's monotone stretch
    from the optimum (:func:`_side_limit`). A side whose ζ does not reach ±z
    gives the parameter's bound (lme4's ``confint.thpr``: 0 for an sd or σ, ±1
    for a correlation, Inf for an upper limit) or NaN for a fixed effect; one
    whose ζ turns back before ±z gives NaN and ``monotone`` False.
    """
    m = len(kinds)
    lower, upper, monotone = np.full(m, np.nan), np.full(m, np.nan), np.ones(m, bool)
    for w in range(m):
        # Points whose re-optimisation did not converge are left out (their ζ is too high).
        mine = (trace.which == w) & np.isfinite(trace.zeta) & np.asarray(trace.converged, bool)
        u = np.asarray(internal(trace.params[mine, w], np.full(int(mine.sum()), kinds[w])), float)
        zeta = trace.zeta[mine]
        ok = np.isfinite(u)
        order = np.argsort(u[ok], kind="stable")
        u, zeta = u[ok][order], zeta[ok][order]
        ends = []
        # Each side outward from the optimum (ζ = 0 on both; absent at a bound, u = −inf).
        below, above = np.flatnonzero(zeta <= 0)[::-1], np.flatnonzero(zeta >= 0)
        for target, bound, part in ((-z, _LOWER[int(kinds[w])], below), (z, _UPPER[int(kinds[w])], above)):
            at, turned = _side_limit(u[part], zeta[part], target)
            monotone[w] &= not turned
            ends.append(
                float(_from_internal(at, kinds[w])) if at is not None else (np.nan if turned else bound)
            )
        lower[w], upper[w] = ends
    return lower, upper, monotone


def _from_internal(u: float, kind: int) -> float:
    if kind == COR:
        return float(np.tanh(u))
    return float(np.exp(u)) if kind in (SD, SIGMA) else u
