"""``fit_reml``: the user-facing fit of a linear mixed model."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pandas as pd

from ._covariance import lambda_from_theta, split_params, theta_from_phi
from ._design import Design, ModelArrays, build_design, design_from_arrays
from ._fit import STATUS_MESSAGES, default_tolerances, fit_statistics
from ._objective import ModelStatistics, compute_statistics, objective, solve_mixed_model
from ._results import MixedModelResults, build_results

__all__ = ["ConvergenceWarning", "fit_reml", "model_statistics"]

# lme4's isSingular tolerance on the diagonal of θ (relative to σ already).
SINGULAR_TOL = 1e-4


class ConvergenceWarning(UserWarning):
    """The optimiser stopped before meeting its convergence criteria."""


_solve = eqx.filter_jit(solve_mixed_model)
_objective = eqx.filter_jit(objective)


def model_statistics(
    design: Design, arrays: ModelArrays, dtype=jnp.float64, memory_limit: int | None = None
) -> ModelStatistics:
    """The sufficient statistics of a validated design (see ``compute_statistics``)."""
    return compute_statistics(
        arrays.y,
        arrays.X,
        arrays.codes,
        arrays.Z,
        design.structures,
        [f.n_levels for f in design.factors],
        dtype=dtype,
        memory_limit=memory_limit,
    )


def _snap_to_boundary(phi: np.ndarray, value: float, stats: ModelStatistics, reml: bool):
    """Sets diagonal θ entries below ``SINGULAR_TOL`` to exactly 0 (φ = −inf).

    Accepted when the objective at the boundary is not worse than at the
    optimiser's point beyond round-off; returns (φ, objective, singular,
    snapped).
    """
    theta = theta_from_phi(phi, stats.structures)
    diag = np.concatenate([s.is_diagonal_entry for s in stats.structures])
    small = diag & (theta < SINGULAR_TOL)
    if not small.any():
        return phi, value, False, False
    snapped = np.where(small, -np.inf, phi)
    new_value = float(_objective(jnp.asarray(snapped, stats.XyXy.dtype), stats, reml))
    if np.isfinite(new_value) and new_value <= value + 1e-9 * (1 + abs(value)):
        return snapped, new_value, True, True
    return phi, value, True, False


def fit_reml(
    formula: str | None = None,
    data: pd.DataFrame | None = None,
    *,
    reml: bool = True,
    y: Any = None,
    X: Any = None,
    Z: Any = None,
    groups: Any = None,
    optimizer=None,
    max_iter: int = 500,
    dtype=jnp.float64,
    missing: str = "raise",
    memory_limit: int | None = None,
) -> MixedModelResults:
    """Fits a linear mixed model by REML (default) or maximum likelihood.

    Model (lme4's): ``y = Xβ + Zb + ε`` with ``b ~ N(0, σ²ΛΛᵀ)`` per level of
    each grouping factor and ``ε ~ N(0, σ²I)``. β and σ² are profiled out; the
    criterion is minimised over the log-Cholesky parameters of Λ.

    Args:
        formula: lme4-style, e.g. ``"Reaction ~ Days + (Days | Subject)"``.
            Random-effects terms ``(expr | g)``, ``(expr || g)`` (uncorrelated),
            ``(1 | a/b)`` (nested), ``(1 | a:b)``; several factors may be
            crossed or nested. The rest is read by formulaic (``C(x)``,
            ``np.log(x)``, ``I(x**2)``, ``a*b``, ``0 +`` …).
        data: a DataFrame with the columns the formula uses.
        reml: True for REML, False for maximum likelihood.
        y, X, Z, groups: array input instead of formula and data: ``y`` (n,),
            ``X`` (n, p) (default: an intercept), ``Z`` (n, q) (default: a
            random intercept), ``groups`` (n,) level labels.
        optimizer: an optax ``GradientTransformation``; default (None): L-BFGS
            (optax's ``scale_by_lbfgs``) with a weak-Wolfe line search.
        max_iter: iteration limit of the optimiser (default 500).
        dtype: ``jnp.float64`` (default; JAX's global setting is left alone)
            or ``jnp.float32`` (faster on accelerators; on lme4's example
            datasets objectives agree with float64 to 1e-6 relative, θ to 1e-3).
        missing: ``"raise"`` (default) or ``"drop"`` rows with missing values.
        memory_limit: bytes allowed for the dense block of the grouping
            factors after the first; default half the machine's memory.

    Returns:
        A ``MixedModelResults``. A fit that did not converge has
        ``converged=False`` and emits a ``ConvergenceWarning``.
    """
    if formula is not None:
        if y is not None or X is not None or Z is not None or groups is not None:
            raise ValueError("pass either a formula with data, or arrays (y, X, Z, groups), not both")
        if data is None:
            raise ValueError("a formula needs data: fit_reml(formula, data=df)")
        design, arrays = build_design(formula, data, missing=missing)
    else:
        if y is None:
            raise ValueError("pass a formula and data, or arrays: fit_reml(y=..., X=..., groups=...)")
        design, arrays = design_from_arrays(y, X, Z, groups, missing=missing)

    dtype = jnp.dtype(dtype)
    if dtype not in (jnp.dtype(jnp.float64), jnp.dtype(jnp.float32)):
        raise ValueError(f"dtype must be float64 or float32, got {dtype}")
    # The model is equivariant in y → y − Xβ₀: fitting the OLS residuals gives the
    # same θ, σ, b and criterion, and β̂ + β₀. It removes the cancellation in
    # yᵀy − ‖c‖² that would otherwise cost float32 (and float64) digits.
    beta0 = np.linalg.lstsq(arrays.X, arrays.y, rcond=None)[0]
    centred = dataclasses.replace(arrays, y=arrays.y - arrays.X @ beta0)
    with jax.enable_x64(True):
        stats = model_statistics(design, centred, dtype=dtype, memory_limit=memory_limit)
        gtol, ftol = default_tolerances(dtype)
        phi0 = jnp.zeros(stats.n_params, dtype)  # Λ = I, lme4's start
        opt, solution = jax.tree_util.tree_map(
            np.asarray, fit_statistics(stats, phi0, reml, optimizer, max_iter, gtol, ftol, solve=True)
        )
        phi = opt.params.astype(float)
        status = int(opt.status)
        phi, value, singular, snapped = _snap_to_boundary(phi, float(opt.value), stats, reml)
        if snapped:  # moved to the boundary: solve there
            solution = jax.tree_util.tree_map(np.asarray, _solve(jnp.asarray(phi, dtype), stats, reml))
        theta = theta_from_phi(phi, stats.structures)
        lams = [
            lambda_from_theta(t, s)
            for t, s in zip(split_params(theta, stats.structures), stats.structures, strict=True)
        ]
        solution["beta"] = solution["beta"] + beta0
        grad_norm = float(opt.grad_norm)
        n_iter = int(opt.n_iter)
    converged = status in (0, 1)
    if not converged:
        warnings.warn(
            f"the fit did not converge: {STATUS_MESSAGES[status]} after {n_iter} "
            "iterations; the estimates may be unreliable",
            ConvergenceWarning,
            stacklevel=2,
        )
    return build_results(
        design,
        arrays,
        solution,
        lams,
        theta,
        phi,
        reml,
        status,
        converged,
        n_iter,
        grad_norm,
        singular,
    )
