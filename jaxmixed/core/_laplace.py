"""The Laplace approximation to a GLMM's deviance at given (θ, β), by PIRLS.

Model (lme4's glmer): ``η = offset + Xβ + ZΛu``, ``u ~ N(0, I)``, and yᵢ
given u from the :class:`~jaxmixed.core._family.Family` with mean
``g⁻¹(ηᵢ)`` and prior weights aᵢ. θ holds the entries of each factor's Λ in
lme4's order (no σ: the families here have no dispersion).

For fixed (θ, β) the conditional mode ũ maximises the penalised
log-likelihood ``Σ log f(yᵢ | u) − ‖u‖²/2``. Penalised iteratively reweighted
least squares finds it: at the current η, with working weights wᵢ and working
response zᵢ (``Family.working``), the step solves the weighted penalised least
squares problem

    min_u ‖W^½(z − offset − Xβ − ZΛu)‖² + ‖u‖²,   A = ΛᵀZᵀWZΛ + I = LLᵀ,

in the same blocked factorisation as the linear model (``_objective``: the
statistics of the rows with weights W, ``factorize_lambdas``,
``conditional_modes`` at a fixed β), halving the step while the penalised
deviance ``Σ dᵢ + ‖u‖²`` (dᵢ the deviance residuals) rises. At the mode

    −2 log L(θ, β) ≈ −2 Σ log f(yᵢ | ũ) + ‖ũ‖² + log|A|,

every constant of the conditional density included: lme4's
``ldL2 + sqrL + aic`` for nAGQ = 1. A and W are taken at the mode, with
the working (Fisher) weights, as lme4 does (for non-canonical links they
differ from the observed information).
"""

from __future__ import annotations

from typing import cast

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._family import Family
from ._objective import conditional_covariances, conditional_modes, factorize_lambdas
from ._precision import highest_precision
from ._statistics import ModelData, model_statistics

__all__ = [
    "LaplaceDeviance",
    "factor_levels",
    "laplace_deviance",
    "level_covariances",
    "mode_covariances",
    "user_lambdas",
    "zero_modes",
]

# PIRLS stops when no mode changes by more than this, relative to the largest (the
# change of the penalised deviance would bound the modes' error only to its square root).
PIRLS_TOL = 1e-10
# ...and this when Newton steps follow: each squares the error (quadratic convergence at
# the mode), so one leaves about 1e-12, and PIRLS saves its last confirming step.
PIRLS_TOL_BEFORE_NEWTON = 1e-6
PIRLS_MAX_STEPS = 100
MAX_HALVINGS = 20
HALVING_SLACK = 1e-15  # a step may raise the penalised deviance by this much, relative (round-off)


class LaplaceDeviance(eqx.Module):
    """The Laplace approximation at (θ, β) and the conditional modes it used.

    ``deviance``: −2 log L, every constant included; ``u`` per factor (J_f, q_f)
    the spherical modes ũ; ``eta`` (n,) the linear predictor at them;
    ``log_det``: log|A|; ``n_iter``: PIRLS steps; ``converged``: the modes settled
    within their tolerance (``laplace_deviance``) before ``PIRLS_MAX_STEPS``, without a
    step that no halving could make descend.
    """

    deviance: Float[Array, ""]
    u: tuple[Float[Array, "J q"], ...]
    eta: Float[Array, " n"]
    log_det: Float[Array, ""]
    n_iter: Int[Array, ""]
    converged: Bool[Array, ""]


def user_lambdas(theta: Float[Array, " n_params"], data: ModelData) -> tuple[Float[Array, "q q"], ...]:
    """Each factor's Λ (q_f, q_f) from θ (lme4's order, factor by factor)."""
    out, start = [], 0
    for st in data.structures:
        lam = jnp.zeros((st.q, st.q), theta.dtype).at[st.rows, st.cols].set(theta[start : start + st.n_params])
        out.append(lam)
        start += st.n_params
    return tuple(out)


def _random_part(u: tuple[jax.Array, ...], lams: tuple[jax.Array, ...], data: ModelData) -> jax.Array:
    """ZΛu (n,): factor 1 through its codes, the others through the dense columns."""
    b = [uf @ lam.T for uf, lam in zip(u, lams, strict=True)]
    index = data.index
    total = jnp.einsum("nq,nq->n", jnp.asarray(data.Z[0]), b[0][index.codes])
    if index.dense is not None:
        flat = jnp.concatenate([bf.reshape(-1) for bf in b[1:]])
        vals = jnp.concatenate([jnp.asarray(z) for z in data.Z[1:]], axis=1)
        total = total + jnp.sum(vals * flat[index.dense.dense_cols], axis=1)
    return total


class _Step(eqx.Module):
    """One PLS solve at η: the full-step modes and log|A| there."""

    u: tuple[jax.Array, ...]
    log_det: jax.Array


def _pls_step(eta, fixed, y, lams, data: ModelData, family: Family, n_obs, newton: bool = False) -> _Step:
    """The modes of the weighted penalised least squares problem at η (see the module
    docstring), in the user's units, and log|A| at η's working weights; with ``newton``
    the observed information's weights: a Newton step on the penalised deviance."""
    fac, stats = _factor_at(eta, fixed, y, lams, data, family, n_obs, newton)
    # β of the residual problem is 0 in the user's units: −shift in the standardised ones.
    modes = conditional_modes(fac, stats, -stats.response.beta_shift)
    u = _spherical(modes.u, stats.response.y_scale)
    return _Step(u, fac.log_det_a)


def _factor_at(eta, fixed, y, lams, data: ModelData, family: Family, n_obs, newton: bool = False):
    """(the blocked factor of A, the statistics) of the PLS problem at η."""
    real = data.weights > 0
    w, z = (family.newton_working if newton else family.working)(y, eta, data.weights)
    # Rows of prior weight 0 (padding) get working weight 1 and response 0: their X and Z
    # are 0, so they add nothing, and √w stays differentiable.
    w = jnp.where(real, w, 1.0)
    resid = jnp.asarray(jnp.where(real, z - fixed, 0.0))
    # β is fixed here: the statistics of Z and the residual alone (X with no columns),
    # without the QR of X or the Schur complement of [X y] the profiled LMM needs.
    rows = eqx.tree_at(lambda d: (d.weights, d.X), data, (w, jnp.zeros((w.shape[0], 0), w.dtype)))
    stats = model_statistics(rows, resid, None, n_obs)
    scales = stats.design.scaling.z_scale
    standard = tuple(lam / s[:, None] for lam, s in zip(lams, scales, strict=True))
    return factorize_lambdas(standard, stats), stats


@highest_precision
def mode_covariances(
    theta: Float[Array, " n_params"],
    eta: Float[Array, " n"],
    data: ModelData,
    y: Float[Array, " n"],
    family: Family,
    *,
    n_obs: jax.Array | int | None = None,
) -> tuple[Float[Array, "J q q"], ...]:
    """lme4's conditional variances for glmer: ``Λ (A⁻¹)_jj Λᵀ`` per level of each factor
    (J_f, q_f, q_f), A = ΛᵀZᵀWZΛ + I with the working weights at η (the modes'
    :attr:`LaplaceDeviance.eta`): the covariance of b given y in the Laplace
    approximation's Gaussian."""
    lams = user_lambdas(theta, data)
    fac, stats = _factor_at(eta, jnp.zeros_like(eta), y, lams, data, family, n_obs)
    return level_covariances(fac, stats)


def level_covariances(fac, stats) -> tuple[Float[Array, "J q q"], ...]:
    """``Λ (A⁻¹)_jj Λᵀ`` per level of each factor (J_f, q_f, q_f) in the user's units,
    from a blocked factor of A and its statistics (any β: the modes are not used)."""
    chol_schur = conditional_modes(fac, stats, -stats.response.beta_shift).chol_schur
    covs = conditional_covariances(fac, stats, chol_schur)
    # A is the same in both units (Z̃Λ̃ = ZΛ); b = diag(z_scale) b̃ per factor
    return tuple(z[:, None] * c * z[None, :] for c, z in zip(covs, stats.design.scaling.z_scale, strict=True))


def _spherical(u_standard: tuple[jax.Array, ...], y_scale: jax.Array) -> tuple[jax.Array, ...]:
    """ũ in the user's units: the standardised problem is the user's divided by y_scale."""
    return tuple(y_scale * uf for uf in u_standard)


def _penalised(u, lams, fixed, y, data: ModelData, family: Family) -> tuple[jax.Array, jax.Array]:
    """(the penalised deviance at u up to a constant, −2 Σ ℓᵢ + ‖u‖² without the terms
    free of μ (the family's ``log_kernel``: half the logarithms of Σ dᵢ); η there)."""
    eta = fixed + _random_part(u, lams, data)
    mu = family.link.inverse(eta)
    kernel = jnp.sum(jnp.where(data.weights > 0, family.log_kernel(y, mu, data.weights), 0.0))
    return -2.0 * kernel + sum(jnp.sum(uf * uf) for uf in u), eta


@highest_precision
def laplace_deviance(
    theta: Float[Array, " n_params"],
    beta: Float[Array, " p"],
    data: ModelData,
    y: Float[Array, " n"],
    family: Family,
    *,
    offset: Float[Array, " n"] | None = None,
    n_obs: jax.Array | int | None = None,
    newton_steps: int = 2,
    u_start: tuple[Float[Array, "J q"], ...] | None = None,
) -> LaplaceDeviance:
    """−2 log L of the GLMM at (θ, β) by the Laplace approximation (module docstring).

    ``data.weights`` are the prior weights (binomial trials; 0 on padded rows),
    ``y`` (n,) the response in the family's convention (binomial: proportions).
    PIRLS starts from u = 0, or from ``u_start`` (per factor (J_f, q_f): a warm start,
    such as the modes of a nearby (θ, β)) where its penalised deviance is finite, and
    stops when no full step changes a mode by more than ``PIRLS_TOL`` relative
    (``PIRLS_TOL_BEFORE_NEWTON`` when ``newton_steps`` > 0: the steps then square the
    error). Pure JAX: jittable and vmappable.

    Derivatives. PIRLS (a ``while_loop``) runs on the inputs with their gradients
    stopped; from its modes ũ, ``newton_steps`` (default 2) Newton steps with the
    observed information (:meth:`Family.newton_working`) are taken, differentiably.
    At the mode a Newton step's derivative in (θ, β, y, ...) is the implicit one,
    dũ = −H⁻¹ ∂(∇ᵤ)/∂(·), and k steps agree with ũ to order 2ᵏ − 1: one step gives
    the exact gradient, two the exact Hessian. The steps' factorisations define
    reverse-mode derivatives, so differentiate with ``jax.grad`` (or ``jax.hessian``,
    forward over reverse); ``newton_steps=0`` leaves ũ without derivatives.
    """
    th0, b0, data0, y0, off0, start = _stopped((theta, beta, data, y, offset, u_start))
    tol = PIRLS_TOL if newton_steps == 0 else PIRLS_TOL_BEFORE_NEWTON
    u, n_iter, done = _pirls(th0, b0, data0, y0, off0, family, n_obs, start, tol=tol)
    fixed = jnp.asarray(data.X) @ beta + (0.0 if offset is None else offset)
    lams = user_lambdas(theta, data)
    for _ in range(newton_steps):
        eta = fixed + _random_part(u, lams, data)
        u = _pls_step(eta, fixed, y, lams, data, family, n_obs, newton=True).u
    eta = fixed + _random_part(u, lams, data)
    log_det = _factor_at(eta, fixed, y, lams, data, family, n_obs)[0].log_det_a  # no modes needed
    mu = family.link.inverse(eta)
    loglik = jnp.sum(jnp.where(data.weights > 0, family.log_likelihood(y, mu, data.weights), 0.0))
    u_sq = sum(jnp.sum(uf * uf) for uf in u)
    return LaplaceDeviance(-2.0 * loglik + u_sq + log_det, u, eta, log_det, n_iter, done)


def _stopped(tree):
    """``tree`` with every JAX array's derivatives stopped (host arrays stay as they are)."""
    return jax.tree.map(lambda a: jax.lax.stop_gradient(a) if isinstance(a, jax.Array) else a, tree)


def _pirls(theta, beta, data: ModelData, y, offset, family: Family, n_obs, u_start=None, *, tol=PIRLS_TOL):
    """(ũ per factor, PIRLS steps, whether the modes settled: no full step larger than
    ``tol`` relative) from ``u_start`` where its penalised deviance is finite, else from
    u = 0 (the penalised deviance is convex in u: any start converges, a near one sooner)."""
    dtype = jnp.asarray(data.X).dtype
    fixed = jnp.asarray(data.X) @ beta + (0.0 if offset is None else offset)
    lams = user_lambdas(theta, data)
    zero = zero_modes(data, dtype)
    if u_start is None:
        u0, pdev0 = zero, _penalised(zero, lams, fixed, y, data, family)[0]
    else:
        pdev_start, _ = _penalised(u_start, lams, fixed, y, data, family)
        usable = jnp.isfinite(pdev_start)  # an overflowing start (a wild trial step) is not taken
        u0 = tuple(cast(jax.Array, jnp.where(usable, a, b)) for a, b in zip(u_start, zero, strict=True))
        # the zero start's value only where it is needed (under vmap both branches run)
        pdev0 = jax.lax.cond(
            usable, lambda: pdev_start, lambda: _penalised(zero, lams, fixed, y, data, family)[0]
        )

    def step(carry):
        u, pdev, it, _, _ = carry
        eta = fixed + _random_part(u, lams, data)
        target = _pls_step(eta, fixed, y, lams, data, family, n_obs).u
        u_new, pdev_new, stalled = _halve(u, target, pdev, lams, fixed, y, data, family)
        # judged on the full step: a heavily halved step is small without being settled
        done = (_largest(target, u) <= tol * (1.0 + _largest(target))) | stalled
        return u_new, pdev_new, it + 1, done, stalled

    def running(carry):
        return ~carry[3] & (carry[2] < PIRLS_MAX_STEPS)

    start = (u0, pdev0, jnp.zeros((), jnp.int32), jnp.zeros((), bool), jnp.zeros((), bool))
    u, _, n_iter, done, stalled = jax.lax.while_loop(running, step, start)
    return u, n_iter, done & ~stalled


def zero_modes(data: ModelData, dtype) -> tuple[jax.Array, ...]:
    """u = 0 per factor (J_f, q_f)."""
    return tuple(jnp.zeros((j, st.q), dtype) for j, st in zip(factor_levels(data), data.structures, strict=True))


def factor_levels(data: ModelData) -> list[int]:
    """J_f of every factor: factor 1's from the index, the others' from the dense layout."""
    return [data.index.n_levels] + [j for _, j, _ in data.index.layout.blocks]


def _halve(u, target, pdev, lams, fixed, y, data: ModelData, family: Family):
    """The step from u towards ``target``, halved (at most ``MAX_HALVINGS`` times) while
    the penalised deviance rises above ``pdev`` or is NaN; returns (new u, its penalised
    deviance, whether every halving failed)."""

    def step_to(t):
        return tuple(a + t * (b - a) for a, b in zip(u, target, strict=True))

    def at(t):
        return _penalised(step_to(t), lams, fixed, y, data, family)[0]

    def descends(value):
        # not "value > pdev": a NaN (an overflowing step) must be halved too
        return value <= pdev + HALVING_SLACK * jnp.abs(pdev)

    def cond(c):
        t, value, k = c
        return ~descends(value) & (k < MAX_HALVINGS)

    def body(c):
        t, _, k = c
        t = 0.5 * t
        return t, at(t), k + 1

    one = jnp.ones((), pdev.dtype)
    # the loop carries the last value: the accepted step is not evaluated again
    t, value, _ = jax.lax.while_loop(cond, body, (one, at(one), jnp.zeros((), jnp.int32)))
    stalled = ~descends(value)  # no halving descended: stay at u (reported not converged)
    kept = tuple(cast(jax.Array, jnp.where(stalled, a, b)) for a, b in zip(u, step_to(t), strict=True))
    return kept, jnp.where(stalled, pdev, value), stalled


def _largest(u: tuple[jax.Array, ...], v: tuple[jax.Array, ...] | None = None) -> jax.Array:
    """max |u| over every factor's modes, or max |u − v|."""
    diffs = u if v is None else tuple(a - b for a, b in zip(u, v, strict=True))
    return jnp.max(jnp.stack([jnp.max(jnp.abs(d)) for d in diffs]))
