"""Profile likelihood of every parameter (lme4's ``profile`` and ``confint.thpr``).

The parameters ψ are lme4's ``confint(oldNames = FALSE)`` ones, in user units:
per term (lme4's order) the standard deviations ``sd_k = σ·sqrt((ΛΛᵀ)_kk)`` and
the correlations, then σ, then β. For each parameter ψ_w and value v,

    ζ(v) = sign(v − ψ̂_w) · sqrt(D(v) − D̂),   D(v) = min_{ψ: ψ_w = v} D(ψ),

with D the ML deviance (−2 log-likelihood). As lme4's ``devfun2`` does
(it calls ``refitML``), a REML fit is profiled on the ML deviance around the
ML estimates, fixed effects included.

The re-optimisation runs over x, the variance parameters in unconstrained
coordinates (``log sd``, ``atanh cor``, ``log σ``), with β profiled out in
closed form: at fixed (Λ, σ)

    D = log|A| + (r² + e)/σ̃² + n log(2π σ̃²),

with ``log|A|`` and ``r²`` from ``_objective._factorize`` (standardised
units: σ̃ = σ / y_scale), and e the increase of the penalised residual sum of
squares when one coefficient is held: β_j = v is the linear constraint
``aᵀβ̃ = c`` on the coefficients β̃ of Q (a = row j of R⁻¹, c = v/y_scale −
aᵀ·shift), and minimising ``(β̃ − β̂̃)ᵀ L_X L_Xᵀ (β̃ − β̂̃)`` on it gives
``e = (c − aᵀβ̂̃)² / |L_X⁻¹a|²`` (e = 0 for a variance parameter). This is
lme4's fit of ``y − x_j v`` on X without column j, by ML.

Every grid point of every parameter is one element of a ``jax.vmap`` of one
L-BFGS minimisation (:func:`profile_points`), warm-started from the ML
optimum in the first round and from the nearest point found so far in later
ones (:func:`_warm_starts`). The grid is chosen in a few such rounds (:func:`profile_grid`):
first at the quadratic approximation's ζ targets, then re-placed at the
targets by interpolating the points found, until |ζ| passes ``cutoff`` on
each side or the parameter reaches its bound.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._fit import FitResult
from ._objective import _factorize, scale_correction
from ._solvers import LBFGS, AbstractSolver
from ._statistics import ModelStatistics
from ._status import is_converged, to_results

__all__ = [
    "ProfileLayout",
    "ProfilePoints",
    "ProfileTrace",
    "optimum",
    "profile_grid",
    "profile_points",
]

SD, COR, SIGMA, FIXED = 0, 1, 2, 3

# Re-optimisation: tighter than a fit's default (ζ² is a difference of deviances).
PROFILE_SOLVER = LBFGS(max_steps=1000, gtol=1e-10)
# Starts and grid values are kept inside the bounds: an sd at least this fraction of σ̂
# (the deviance there differs from its value at 0 by O(fraction²)), a correlation at
# most this far from ±1 (atanh is finite).
SD_FLOOR = 1e-6
COR_MARGIN = 1e-10
# A start at the boundary moves off it by this much (the gradient vanishes at the
# boundary in log coordinates): sd = START_SD·σ̂, |cor| <= 1 − START_COR.
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

    @property
    def n_x(self) -> int:
        """The number of variance parameters (σ included): x's length."""
        return int(np.sum(self.kinds != FIXED))


def _term_factor(x_sd: jax.Array, x_cor: jax.Array, q: int) -> jax.Array:
    """``diag(sd)·chol(C)`` (q, q): the Cholesky factor of one term's covariance."""
    corr = jnp.eye(q, dtype=x_sd.dtype)
    k = 0
    for j in range(q):
        for i in range(j + 1, q):
            r = jnp.tanh(x_cor[k])
            corr = corr.at[i, j].set(r).at[j, i].set(r)
            k += 1
    return jnp.exp(x_sd)[:, None] * jnp.linalg.cholesky(corr)


def _phi(x: Float[Array, " n_x"], stats: ModelStatistics, layout: ProfileLayout) -> jax.Array:
    """φ (n_params,) of the standardised Λ̃ = S⁻¹ chol(Σ)/σ from x."""
    structures = stats.structures
    lams = [jnp.zeros((s.q, s.q), x.dtype) for s in structures]
    k = 0
    for f, a, b in layout.terms:
        q = b - a
        n_cor = q * (q - 1) // 2
        block = _term_factor(x[k : k + q], x[k + q : k + q + n_cor], q) / jnp.exp(x[-1])
        lams[f] = lams[f].at[a:b, a:b].set(block)
        k += q + n_cor
    pieces = []
    for lam, s, z in zip(lams, structures, stats.design.scaling.z_scale, strict=True):
        vals = (lam / z[:, None])[np.asarray(s.rows), np.asarray(s.cols)]
        diag = np.asarray(s.is_diagonal_entry)
        pieces.append(jnp.where(diag, jnp.log(jnp.where(diag, vals, 1.0)), vals))
    return jnp.concatenate(pieces)


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
    fac = _factorize(_phi(x, stats, layout), stats, None)
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


def _user_params(x: jax.Array, beta_tilde: jax.Array, stats: ModelStatistics, layout: ProfileLayout) -> jax.Array:
    """ψ (n_x + p,) in user units from x and β̃."""
    kinds = jnp.asarray(layout.kinds[: layout.n_x])
    var = jnp.where(kinds == COR, jnp.tanh(x), jnp.exp(jnp.where(kinds == COR, 0.0, x)))
    resp = stats.response
    beta = jax.scipy.linalg.solve_triangular(
        stats.design.scaling.r_factor, resp.y_scale * (beta_tilde + resp.beta_shift), lower=False
    )
    return jnp.concatenate([var, beta])


def internal(values, kinds):
    """x-coordinates (log sd, atanh cor, log σ; β unchanged) of user-unit values."""
    xp = jnp if isinstance(values, jax.Array) else np
    safe_cor = xp.where(kinds == COR, values, 0.0)
    safe_pos = xp.where((kinds == SD) | (kinds == SIGMA), values, 1.0)
    with np.errstate(divide="ignore"):  # an sd of 0 (at the boundary) is at −inf
        out = xp.where(kinds == COR, xp.arctanh(safe_cor), values)
        return xp.where((kinds == SD) | (kinds == SIGMA), xp.log(safe_pos), out)


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
    solver: AbstractSolver = PROFILE_SOLVER,
) -> ProfilePoints:
    """One point: ψ_which held at ``value`` (user units), the rest re-optimised
    from ``x_start``. Fields of :class:`ProfilePoints` without the K axis."""
    n_x = layout.n_x
    kinds = jnp.asarray(layout.kinds)
    is_var = which < n_x
    held = jnp.arange(n_x, dtype=which.dtype) == jnp.where(is_var, which, -1)
    fixed_x = internal(value, kinds[which])
    j = jnp.clip(which - n_x, 0, max(layout.n_fixed - 1, 0))
    con = _constraint(stats, j, value, ~is_var)

    def fun(x):
        return _deviance_and_beta(jnp.where(held, fixed_x, x), stats, layout, con)[0]

    res = solver.minimise(fun, jnp.where(held, fixed_x, x_start))
    x = jnp.where(held, fixed_x, res.params)
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
    solver: AbstractSolver = PROFILE_SOLVER,
) -> ProfilePoints:
    """:func:`profile_point` at K (parameter, value) pairs as one vmapped computation,
    point k re-optimised from ``x_start[k]``."""
    return jax.vmap(lambda x, w, v: profile_point(stats, layout, x, w, v, solver))(x_start, which, values)


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


def quadratic_se(stats: ModelStatistics, layout: ProfileLayout, x: Float[Array, " n_x"]) -> jax.Array:
    """(n_x,) ``sqrt(2 (H⁻¹)_ww)``: the step in x per unit of ζ in the quadratic
    approximation (H the Hessian of D in x at ``x``); NaN where H is not
    positive definite."""
    none = _Constraint(jnp.zeros(layout.n_fixed, x.dtype), jnp.zeros((), x.dtype), jnp.zeros((), bool))
    # Reverse over reverse: the pair sums of the dense block are a custom VJP (no jvp).
    hess = jax.jacrev(jax.grad(lambda v: _deviance_and_beta(v, stats, layout, none)[0]))(x)
    diag = jnp.diagonal(jnp.linalg.inv(0.5 * (hess + hess.T)))
    return jnp.where(diag > 0, jnp.sqrt(2.0 * jnp.abs(diag)), jnp.nan)


def start_point(psi_hat: Float[np.ndarray, "*K m"], layout: ProfileLayout) -> Float[np.ndarray, "*K n_x"]:
    """x₀ (n_x,): ψ̂'s variance parameters moved off their bounds (see START_SD); rows
    of a (K, m) ``psi_hat`` each."""
    kinds = layout.kinds[: layout.n_x]
    v = np.asarray(psi_hat, float)[..., : layout.n_x]
    sigma = v[..., -1:]
    v = np.where(kinds == SD, np.maximum(v, START_SD * sigma), v)
    v = np.where(kinds == COR, np.clip(v, -1 + START_COR, 1 - START_COR), v)
    return np.asarray(internal(v, kinds), float)


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


Evaluate = Callable[[np.ndarray, np.ndarray, np.ndarray], ProfilePoints]


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


def _warm_starts(
    found: _Found | None, which: np.ndarray, u: np.ndarray, x0: np.ndarray, layout: ProfileLayout
) -> np.ndarray:
    """(K, n_x) starts: x₀ in the first round, then for each point the solution of the
    point found so far of the same parameter nearest in x (fewer L-BFGS steps: the
    slowest point sets the vmapped loop's length), moved off the bounds as x₀ is."""
    starts = np.tile(x0, (len(which), 1))
    if found is None:
        return starts
    ok = np.isfinite(found.zeta) & found.converged
    best = np.full(len(which), -1)
    for w in np.unique(which):  # per parameter, every point's nearest at once
        lanes, mine = np.flatnonzero(which == w), np.flatnonzero(ok & (found.which == w))
        if len(mine):
            gaps = np.abs(found.u[mine, w][None, :] - u[lanes][:, None])
            best[lanes] = mine[np.argmin(gaps, axis=1)]
    has = best >= 0
    starts[has] = start_point(found.params[best[has]], layout)
    return starts


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
    se: Float[np.ndarray, " m"],
    base: float,
    layout: ProfileLayout,
    *,
    cutoff: float,
    n_points: int = 8,
    max_rounds: int = 4,
) -> ProfileTrace:
    """Rounds of :func:`profile_points` until every side passes ``cutoff`` or its bound.

    ``evaluate(which, values)``: the vmapped re-optimisation (K pairs, always
    the same K, so that it compiles once). ``se`` (m,): the quadratic
    approximation's step in x per unit of ζ (NaN where unknown: a parameter at
    its bound). Round 1 aims at ζ = ±cutoff·k/n_points in that approximation,
    each later round at the half-way targets (then the whole ones), by
    interpolating the points found so far; at least two rounds.
    """
    kinds = layout.kinds
    m = len(kinds)
    sigma = float(psi_hat[layout.n_x - 1])
    lo, hi = _bounds(kinds, sigma)
    u_hat = np.asarray(internal(np.asarray(psi_hat, float), kinds), float)
    se = np.where(np.isfinite(se) & (se > 0), se, 1.0)
    grids = [_Grid(u_hat[w], se[w], lo[w], hi[w], not u_hat[w] > lo[w]) for w in range(m)]
    streams = [(w, s) for w in range(m) for s in (-1.0, 1.0)]
    # The last target overshoots the cutoff by 30%: secant extrapolation of a flattening
    # profile undershoots, and a side short of the cutoff costs a whole further round.
    fractions = np.append(np.arange(1, n_points + 1) / n_points, 1.3)
    which = np.repeat([w for w, _ in streams], len(fractions))
    rows: list[ProfilePoints] = []
    found = None
    x0 = np.asarray(start_point(psi_hat, layout), float)
    for r in range(max_rounds):
        targets = cutoff * (fractions - (0.5 if r % 2 else 0.0))
        u = np.concatenate([_side_values(grids[w], s, targets, found, w, sigma) for w, s in streams])
        starts = _warm_starts(found, which, u, x0, layout)
        rows.append(jax.tree.map(np.asarray, evaluate(which, _to_user(u, kinds[which]), starts)))
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


def parameter_limits(trace: ProfileTrace, kinds: np.ndarray, z: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Where each parameter's ζ crosses −z and +z: (lower (m,), upper (m,), monotone (m,)).

    ``u(ζ)`` (x-coordinates) is interpolated by a monotone cubic through the
    points of the parameter's trace, as lme4 inverts its interpolating spline
    (``backSpline``). A side whose ζ does not reach ±z gives the parameter's
    bound (lme4's ``confint.thpr``: 0 for an sd or σ, ±1 for a correlation, Inf
    for an upper limit) or NaN for a fixed effect; a non-monotone profile gives NaN.
    """
    m = len(kinds)
    lower, upper, monotone = np.full(m, np.nan), np.full(m, np.nan), np.ones(m, bool)
    for w in range(m):
        mine = (trace.which == w) & np.isfinite(trace.zeta)
        u = np.asarray(internal(trace.params[mine, w], np.full(int(mine.sum()), kinds[w])), float)
        zeta = trace.zeta[mine]
        ok = np.isfinite(u)
        order = np.argsort(u[ok], kind="stable")
        u, zeta = u[ok][order], zeta[ok][order]
        if np.any(np.diff(zeta) < -MONOTONE_TOL):
            monotone[w] = False
            continue
        strict = np.concatenate([[True], zeta[1:] > np.maximum.accumulate(zeta)[:-1]])
        u, zeta = u[strict], zeta[strict]
        ends = []
        for target, bound in ((-z, _LOWER[int(kinds[w])]), (z, _UPPER[int(kinds[w])])):
            if len(zeta) >= 2 and zeta[0] <= target <= zeta[-1]:
                ends.append(float(_from_internal(_pchip(zeta, u, target), kinds[w])))
            else:
                ends.append(bound)
        lower[w], upper[w] = ends
    return lower, upper, monotone


def _from_internal(u: float, kind: int) -> float:
    if kind == COR:
        return float(np.tanh(u))
    return float(np.exp(u)) if kind in (SD, SIGMA) else u
