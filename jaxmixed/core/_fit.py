"""The pure fit: statistics and options in, a typed result out.

``fit(stats, options)`` is one jittable, vmappable, differentiable function:

1. **Optimise** the standardised criterion (``_objective.standard_criterion``)
   over φ, the log-Cholesky parameters of Λ̃, from Λ̃ = I (or
   ``options.start``) with the fit's solver (``_solvers``; L-BFGS by default).
2. **Boundaries.** In log-Cholesky coordinates a variance at 0 sits at
   φ = −∞ and the gradient with respect to φ vanishes as θ → 0 (for a scalar
   term the criterion is even in θ: ``d(θ) ≈ d(0) + ½hθ²``, so
   ``∂d/∂φ = hθ²``), so a gradient test can stop at a small positive θ. After
   the main optimisation each diagonal entry of θ is tried at exactly 0 in
   turn, the rest re-optimised from the current point, and the zero is kept
   when the criterion is not above the current one beyond round-off
   (``BoundaryTrials.tol``). An entry is tried only when setting it alone
   to 0 raises the criterion by less than ``BoundaryTrials.screen``: this
   secant increase is ``½hθ²``, the criterion's curvature at the boundary
   times the squared distance to it, so the threshold adapts to the
   curvature rather than to θ's size alone. All trials run in one
   ``lax.scan`` over one compiled L-BFGS loop (the objective and its
   gradient are compiled once; the screen adds a forward-only evaluation;
   under ``jax.vmap`` every fit runs the same program).
3. **Solve** at the optimum: β̂, σ̂, b̂ and their covariances, mapped back from
   the standardised units (``_statistics``) to the user's.

Gradients through the optimum (implicit function theorem). At φ̂ the
gradient of the criterion with respect to the free entries vanishes:
``∇_φ d(φ̂(s), s) = 0`` for statistics ``s``, so ``dφ̂/ds = −H⁻¹ ∂²d/∂φ∂s`` with
H the Hessian in the free φ (entries at the boundary held at 0). The fit is
a ``filter_custom_vjp`` whose backward pass solves ``H w = v̄`` (H formed
exactly: φ has few entries) and returns ``−∂/∂s [∇_φ d(φ̂, s)·w]``. Everything
after φ̂ is explicit and differentiated by JAX directly, so ``jax.grad`` or
``jax.jacrev`` of any function of the result reaches the response, X, prior
weights or anything upstream of the statistics. Reverse mode only
(``jax.jacfwd`` is not supported through the custom VJP).
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, Int

from ._compile import compiled
from ._covariance import diagonal_mask
from ._objective import lambdas, scale_correction, solve, standard_criterion
from ._options import FitOptions
from ._precision import highest_precision
from ._solvers import LBFGS, batched_like
from ._statistics import ModelData, ModelStatistics, design_statistics, model_statistics
from ._status import RESULTS, LoopStatus, is_converged, loop_status, to_results
from ._tolerances import CONSTANT_SPREAD_EPS, START_FLOOR, resolve
from ._typing import HostOrDevice

_SUCCESSFUL = loop_status("successful")
_CONSTANT = loop_status("constant_response")

__all__ = ["FitResult", "fit", "fit_at", "fit_data"]


class FitResult(eqx.Module):
    """A fitted model, in the user's units (computation order: factor by factor).

    Attributes:
        theta: (n_params,) θ: the entries of each factor's Λ (σ-relative
            Cholesky factor of the random-effects covariance); exactly 0 at
            a boundary.
        phi: (n_params,) the optimiser's log-Cholesky parameters of the
            standardised Λ̃ (−inf at a boundary).
        at_boundary: (n_params,) bool: diagonal entries fixed at 0.
        lambdas: per factor, Λ (q_f, q_f) in the user's units.
        beta: (p,) fixed effects; vcov_beta: (p, p) their covariance
            ``σ̂²(XᵀV⁻¹X)⁻¹``; sigma: residual standard deviation.
        b, b_cov: per factor, the conditional modes (J_f, q_f) and their
            conditional covariances (J_f, q_f, q_f).
        objective: REML criterion or deviance on lme4's scale.
        result: a ``RESULTS`` item (why the optimiser stopped).
        n_iter: iterations over all optimisations (main and boundary trials).
        grad_norm: largest |∂d/∂φ| over the free entries, standardised criterion.
    """

    # "*batch": none for one fit; (K,) for K fits made as one vmapped computation.
    theta: Float[Array, "*batch n_params"]
    phi: Float[Array, "*batch n_params"]
    at_boundary: Bool[Array, "*batch n_params"]
    lambdas: tuple[Float[Array, "*batch q q"], ...]
    beta: Float[Array, "*batch p"]
    vcov_beta: Float[Array, "*batch p p"]
    sigma: Float[Array, "*batch"]
    b: tuple[Float[Array, "*batch J q"], ...]
    b_cov: tuple[Float[Array, "*batch J q q"], ...]
    objective: Float[Array, "*batch"]
    result: RESULTS
    n_iter: Int[Array, "*batch"]
    grad_norm: Float[Array, "*batch"]

    @property
    def converged(self) -> Bool[HostOrDevice, "*batch"]:
        """Whether the optimiser met its convergence criteria."""
        return is_converged(self.result)

    @property
    def singular(self) -> jax.Array:
        """A variance at the boundary (reported as exactly 0)."""
        return jnp.any(self.at_boundary, axis=-1)


class _Optimum(eqx.Module):
    phi: jax.Array
    zero: jax.Array
    value: jax.Array
    grad: jax.Array
    n_iter: jax.Array
    status: LoopStatus
    revisit: jax.Array | bool = False  # a release was kept: sweep the zeros again


def _diagonal_positions(stats: ModelStatistics) -> np.ndarray:
    return np.flatnonzero(diagonal_mask(stats.structures))


def _start(stats: ModelStatistics, options: FitOptions, dtype) -> jax.Array:
    """φ₀: zeros (Λ̃ = I), or ``options.start`` (user-unit θ) standardised."""
    if options.start is None:
        return jnp.zeros(stats.n_params, dtype)
    theta = jnp.asarray(options.start, dtype)
    scale = _row_scale(stats)
    diag = jnp.asarray(diagonal_mask(stats.structures))
    scaled = theta / scale
    return jnp.where(diag, jnp.log(jnp.where(diag, jnp.maximum(scaled, START_FLOOR), 1.0)), scaled)


def _row_scale(stats: ModelStatistics) -> jax.Array:
    """Per θ entry, the scale of its row of Λ: θ = s_row · θ̃."""
    scales = stats.design.scaling.z_scale
    pieces = [s[np.asarray(st.rows)] for s, st in zip(scales, stats.structures, strict=True)]
    return jnp.concatenate(pieces)


# Kinds of trial in the scan.
_MAIN, _ZERO, _RELEASE, _ZERO_AGAIN = 0, 1, 2, 3


def _trials(stats: ModelStatistics, boundary: bool) -> tuple[np.ndarray, np.ndarray]:
    """The scan's trials: (entry masks (T, n_params), kinds (T,)).

    Trial 0 holds nothing (the main optimisation); then each diagonal entry
    held at 0 in turn; then one release of every held entry together (a fit
    that wandered to θ ≈ 0, where the log-coordinate gradient vanishes,
    restarts those entries from θ̃ = 1 and keeps the result when it is
    better); then, only if that release was kept, each entry held at 0 again.
    """
    n = stats.n_params
    if not boundary:
        return np.zeros((1, n), bool), np.asarray([_MAIN])
    diag = _diagonal_positions(stats)
    k = len(diag)
    one_each = np.zeros((k, n), bool)
    one_each[np.arange(k), diag] = True
    masks = np.concatenate([np.zeros((1, n), bool), one_each, one_each.any(axis=0, keepdims=True), one_each])
    kinds = np.asarray([_MAIN] + [_ZERO] * k + [_RELEASE] + [_ZERO_AGAIN] * k)
    return masks, kinds


def _trial(stats: ModelStatistics, options: FitOptions, cur: _Optimum, entry: jax.Array, kind):
    """One trial of the scan: optimise with ``entry`` held at 0 (or released).

    A zero trial first evaluates the criterion (forward only) with the entry
    set to 0 and the rest unchanged, and optimises only when that is less than
    ``BoundaryTrials.screen`` above the current value (the curvature screen).
    The main optimisation (trial 0) runs here too when the solver is L-BFGS.
    """
    trials = options.boundary
    solver = options.solver if trials is None else trials.trial_solver(options.solver)
    screen_at = jnp.inf if trials is None else trials.screen
    btol = resolve(None if trials is None else trials.tol, "boundary_tol", cur.phi.dtype)
    main, release = kind == _MAIN, kind == _RELEASE
    held = jnp.any(cur.zero & entry)
    zero = jnp.where(release, cur.zero & ~entry, cur.zero | entry)
    x0 = jnp.where(release & entry & cur.zero, 0.0, cur.phi)
    finite = jnp.isfinite(cur.value)
    screen_needed = ((kind == _ZERO) | ((kind == _ZERO_AGAIN) & cur.revisit)) & ~held & finite
    screen = jax.lax.cond(
        screen_needed,
        lambda: standard_criterion(cur.phi, stats, options.reml, zero),
        lambda: jnp.asarray(jnp.inf, cur.value.dtype),
    )
    res = solver.minimise(
        lambda x: standard_criterion(x, stats, options.reml, zero),
        x0,
        run=main | (release & held & finite) | (screen < cur.value + screen_at),
    )
    margin = btol * (1.0 + jnp.abs(cur.value))
    better = jnp.where(release, res.value < cur.value - margin, res.value <= cur.value + margin)
    keep = main | (~res.skipped & jnp.isfinite(res.value) & better)
    ran = jnp.where(res.skipped, 0, res.n_iter)
    new = _Optimum(res.params, zero, res.value, res.grad, cur.n_iter, res.status, cur.revisit | release)
    out = jax.tree.map(lambda a, b: jnp.where(keep, a, b), new, cur)
    return eqx.tree_at(lambda o: o.n_iter, out, cur.n_iter + ran)


def _optimize(stats: ModelStatistics, options: FitOptions) -> _Optimum:
    """The main optimisation, then the boundary trials (see the module docstring).

    With an L-BFGS solver, the main optimisation is trial 0 of the same
    ``lax.scan``, so that the objective and its gradient are compiled once.
    """
    dtype = stats.response.yty.dtype
    phi0 = _start(stats, options, dtype)
    nothing = jnp.zeros(phi0.shape, bool)
    masks, kinds = _trials(stats, options.boundary is not None)
    int0 = jnp.zeros((), jnp.int32)
    inf = jnp.asarray(jnp.inf, dtype)
    start = _Optimum(phi0, nothing, inf, jnp.zeros_like(phi0), int0, _SUCCESSFUL, jnp.zeros((), bool))
    start = batched_like(start, stats.response.yty)  # one batching pass of the scan (see there)
    if not isinstance(options.solver, LBFGS):
        main = options.solver.minimise(lambda x: standard_criterion(x, stats, options.reml, nothing), phi0)
        start = _Optimum(main.params, nothing, main.value, main.grad, main.n_iter, main.status, start.revisit)
        masks, kinds = masks[1:], kinds[1:]
    if len(masks) == 0:
        return start

    def step(cur, trial):
        return _trial(stats, options, cur, *trial), None

    final, _ = jax.lax.scan(step, start, (jnp.asarray(masks), jnp.asarray(kinds)))
    return final


@eqx.filter_custom_vjp
def _optimum(stats: ModelStatistics, options: FitOptions) -> _Optimum:
    return _optimize(stats, options)


@_optimum.def_fwd
def _optimum_fwd(perturbed, stats, options):
    del perturbed
    out = _optimize(stats, options)
    return out, out


def _free_hessian(phi, zero, stats, reml):
    """Hessian of the criterion in the free φ; held entries get an identity row."""
    hess = jax.jacrev(jax.grad(lambda x: standard_criterion(x, stats, reml, zero)))(phi)
    held = zero[:, None] | zero[None, :]
    return jnp.where(held, jnp.eye(phi.shape[0], dtype=phi.dtype), hess)


@_optimum.def_bwd
@highest_precision  # traced in the backward pass, after the decorated caller returned
def _optimum_bwd(residuals, grad_obj, perturbed, stats, options):
    del perturbed
    opt: _Optimum = residuals
    v = grad_obj.phi
    if v is None:
        return jax.tree.map(lambda _: None, stats)
    v = jnp.where(opt.zero, 0.0, v)
    w = jnp.linalg.solve(_free_hessian(opt.phi, opt.zero, stats, options.reml), v)

    def stationarity(s):
        return jax.grad(lambda x: standard_criterion(x, s, options.reml, opt.zero))(opt.phi)

    diff, static = eqx.partition(stats, eqx.is_inexact_array)
    _, vjp = jax.vjp(lambda d: stationarity(eqx.combine(d, static)), diff)
    (cot,) = vjp(-w)
    return cot


def _map_back(stats: ModelStatistics, opt: _Optimum, options: FitOptions) -> FitResult:
    """Solves at φ̂ and maps every quantity to the user's units."""
    design, response = stats.design, stats.response
    sol = solve(opt.phi, stats, options.reml, opt.zero)
    scale = response.y_scale
    r_factor = design.scaling.r_factor
    beta_q = scale * (sol.beta + response.beta_shift)
    beta = jax.scipy.linalg.solve_triangular(r_factor, beta_q, lower=False)
    r_inv = jax.scipy.linalg.solve_triangular(r_factor, jnp.eye(r_factor.shape[0], dtype=scale.dtype))
    vcov = scale**2 * (r_inv @ sol.vcov_beta @ r_inv.T)
    z_scale = design.scaling.z_scale
    b = tuple(scale * bf * s for bf, s in zip(sol.b, z_scale, strict=True))
    b_cov = tuple(scale**2 * c * (s[:, None] * s[None, :]) for c, s in zip(sol.b_cov, z_scale, strict=True))
    lams = tuple(s[:, None] * lam for lam, s in zip(lambdas(opt.phi, stats, opt.zero), z_scale, strict=True))
    theta = jnp.concatenate(
        [
            lam[np.asarray(st.rows), np.asarray(st.cols)]
            for lam, st in zip(lams, stats.structures, strict=True)
        ]
    )
    # A response the fixed effects fit exactly has nothing to fit: flagged, and its
    # estimates are NaN so that batched code downstream cannot use them by mistake.
    constant = response.spread <= CONSTANT_SPREAD_EPS * jnp.finfo(scale.dtype).eps
    status = LoopStatus.where(constant, _CONSTANT, opt.status)
    free_grad = jnp.where(opt.zero, 0.0, opt.grad)
    result = FitResult(
        theta=theta,
        phi=jnp.where(opt.zero, -jnp.inf, opt.phi),
        at_boundary=opt.zero & ~constant,  # the optimiser ran on round-off: nothing to report
        lambdas=lams,
        beta=beta,
        vcov_beta=vcov,
        sigma=scale * sol.sigma,
        b=b,
        b_cov=b_cov,
        objective=sol.criterion + scale_correction(stats, options.reml),
        result=to_results(status),
        n_iter=jnp.where(constant, 0, opt.n_iter),
        grad_norm=jnp.max(jnp.abs(free_grad), initial=0.0),
    )
    return _nan_where(constant, result)


def _nan_where(flag: jax.Array, result: FitResult) -> FitResult:
    """Every floating estimate of ``result`` set to NaN where ``flag``."""
    estimates = eqx.filter(result, eqx.is_inexact_array)
    estimates = jax.tree.map(lambda a: jnp.where(flag, jnp.nan, a), estimates)
    return eqx.combine(estimates, result)


@highest_precision
def fit(stats: ModelStatistics, options: FitOptions | None = None) -> FitResult:
    """Fits the model given its statistics: the pure core of jaxmixed.

    Args:
        stats: design and response statistics (``jaxmixed.core.model_statistics``).
        options: a :class:`FitOptions` (default ``FitOptions()``: REML).

    Returns:
        A :class:`FitResult`. Jittable (``eqx.filter_jit(fit)``), vmappable
        over stacked response statistics, differentiable (reverse mode) with
        respect to every floating array in ``stats`` (see the module docstring).

    Examples:
        How σ̂ moves with each observation, by differentiating the whole fit:

        >>> import jax
        >>> import jaxmixed as jm
        >>> from jaxmixed import core
        >>> design, arrays = jm.design.build_design("Reaction ~ Days + (Days | Subject)", jm.load_dataset("sleepstudy"))
        >>> with jax.enable_x64(True):
        ...     data = jm.design.prepare(design, arrays)
        ...     sigma = jax.jit(lambda y: core.fit_data(data, y).sigma)   # compiled: op by op is slow
        ...     print(round(float(sigma(arrays.y)), 4), jax.jit(jax.grad(sigma))(arrays.y).shape)
        25.5918 (180,)
    """
    options = FitOptions() if options is None else options
    return _map_back(stats, _optimum(stats, options), options)


@highest_precision
def fit_at(stats: ModelStatistics, phi: Float[Array, " n_params"], options: FitOptions | None = None) -> FitResult:
    """The :class:`FitResult` at a given φ (no optimisation, nothing held at 0).

    β̂, σ̂, b̂ and their covariances are the profiled solution at ``phi``;
    ``result`` is ``successful`` with ``n_iter = 0`` and ``grad_norm`` the
    gradient there. Used to read a model off parameters trained elsewhere
    (``jaxmixed.fit_mixed_nn``'s joint training).
    """
    options = FitOptions() if options is None else options
    zero = jnp.zeros(phi.shape, bool)
    value, grad = jax.value_and_grad(standard_criterion)(phi, stats, options.reml, zero)
    int0 = jnp.zeros((), jnp.int32)
    return _map_back(stats, _Optimum(phi, zero, value, grad, int0, _SUCCESSFUL), options)


@highest_precision
def fit_data(
    data: ModelData,
    y: Float[Array, " n"],
    options: FitOptions | None = None,
    *,
    offset: Float[Array, " n"] | None = None,
    n_obs: jax.Array | int | None = None,
) -> FitResult:
    """``fit(model_statistics(data, y, offset, n_obs), options)``: rows to result in one call.

    ``n_obs``: the number of real rows of data padded with zero rows (see
    ``design_statistics``); the padding's ``offset`` must be 0 too.
    """
    return fit(model_statistics(data, y, offset, n_obs), options)


# Small models: LLVM's optimisations cost more than they save. Measured on the 2-core
# CPU (fresh compilations, the same results to the last digit): sleepstudy compiled in
# 2.1 s instead of 3.7 s and ran in 0.65 ms instead of 0.55 ms; InstEval (73,421 rows,
# a 1,156-column dense block) would compile in 3.2 s instead of 4.7 s but run in 3.7 s
# instead of 2.3 s, so large models keep XLA's default. Rows alone misjudge a model with
# large per-level blocks: the mixedML model (4,728 rows, 200 clusters of 11 correlated
# effects, 14 fixed effects) ran in 151 ms unoptimised and 82 ms optimised (compiling
# 0.65 s longer), so the work of one iteration on the first factor's blocks,
# J·(q³ + q²(p + 1)), counts too: 1,280 for sleepstudy, 704,704 for mixedML.
SMALL_MODEL_ROWS = 16_384  # padded rows
SMALL_MODEL_DENSE = 128  # columns of the dense block of the later factors
SMALL_MODEL_BLOCK_WORK = 2**17  # J·(q³ + q²(p + 1)) of the first factor


def block_work(data: ModelData) -> int:
    """``J·(q³ + q²(p + 1))``: the first factor's per-iteration work (its J blocks of
    q × q factorised, and their p + 1 right-hand sides), padded sizes."""
    q = data.Z[0].shape[1]
    return int(data.index.n_levels) * (q**3 + q * q * (data.X.shape[1] + 1))


def small_model_options(data: ModelData, *args, **kwargs) -> dict:
    """XLA's backend optimisation off (level 0) for a small model on a CPU, else nothing."""
    del args, kwargs
    small = (
        data.X.shape[0] <= SMALL_MODEL_ROWS
        and data.index.layout.size <= SMALL_MODEL_DENSE
        and block_work(data) <= SMALL_MODEL_BLOCK_WORK
    )
    return {"xla_backend_optimization_level": 0} if small and jax.default_backend() == "cpu" else {}


# One compiled fit per structure shared by every caller in the package (fit_reml, the
# network fits), in the bounded registry of ``_compile``.
jit_fit_data = compiled(fit_data, compiler_options=small_model_options)
# Likewise the design statistics alone (many responses and the bootstrap share them).
jit_design_statistics = compiled(design_statistics)
